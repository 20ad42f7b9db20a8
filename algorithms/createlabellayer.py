"""difflc:createlabellayer — an empty, styled GeoPackage point layer ready for drawing sparse labels.

The class names and colours travel inside the GeoPackage as its default style (``layer_styles`` table),
so the layer shows coloured categories wherever it is opened and the training algorithms can read the
class names back from its renderer. The file is built under a temporary name beside the output and moved
into place at the end, so a failed run never destroys an existing label layer.
"""
from __future__ import annotations

import os
import re
from typing import List, Tuple

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType
from qgis.PyQt.QtGui import QColor

from ..engine.files import commit, forget, temp_beside
from .base import DiffLcAlgorithm
from .qtcompat import field_type

# ColorBrewer "Paired" followed by "Set3": distinct, print-friendly defaults for classes without a colour
PALETTE = ["#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a",
           "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7", "#bebada", "#80b1d3", "#fccde5"]
CLASS_ID_FIELD = "class_id"
CLASS_NAME_FIELD = "class_name"
STYLE_DESCRIPTION = "Class colours (Diffusion Land Cover)"
EXAMPLE = "1=Water #1f78b4; 2=Forest; 3=Urban"

_ENTRY = re.compile(r"(?P<id>[+-]?\d+)\s*[=:]\s*(?P<name>.*?)\s*(?P<color>#[0-9a-fA-F]{6})?")


def parse_classes(text: str) -> List[Tuple[int, str, str]]:
    """``'1=Water #1f78b4; 2=Forest'`` (entries separated by ';' or new lines) → ``[(id, name, '#rrggbb')]``.

    Classes without a colour get the next unused palette colour. Id 0 is refused because the classified
    rasters use 0 as nodata.
    """
    items = [s.strip() for s in re.split(r"[;\n]", text or "") if s.strip()]
    if not items:
        raise QgsProcessingException(f"CLASSES is empty: list the classes as '{EXAMPLE}'.")
    parsed, seen_ids, seen_names = [], set(), set()
    for item in items:
        m = _ENTRY.fullmatch(item)
        if not m:
            raise QgsProcessingException(
                f"Cannot read the class entry '{item}' in CLASSES: write each class as 'id=name' or "
                f"'id=name #rrggbb', separated by ';', e.g. '{EXAMPLE}'.")
        value, name, color = int(m.group("id")), m.group("name"), m.group("color")
        if not name:
            raise QgsProcessingException(f"The class entry '{item}' in CLASSES has no name: write it as "
                                         f"'{value}=Water'.")
        if "#" in name:
            raise QgsProcessingException(
                f"The colour in the class entry '{item}' is not a '#rrggbb' hex colour (e.g. '#1f78b4').")
        if value <= 0:
            raise QgsProcessingException(
                f"Class id {value} in '{item}' is not allowed: 0 is reserved for nodata in the classified "
                "raster; use ids from 1 up.")
        if value > 65535:
            raise QgsProcessingException(f"Class id {value} in '{item}' is too large: use ids from 1 to 65535.")
        if value in seen_ids:
            raise QgsProcessingException(f"Class id {value} is listed twice in CLASSES: give every class its "
                                         "own id.")
        if name.lower() in seen_names:
            raise QgsProcessingException(f"Class name '{name}' is listed twice in CLASSES: give every class "
                                         "its own name.")
        seen_ids.add(value)
        seen_names.add(name.lower())
        parsed.append((value, name, color.lower() if color else None))
    used = {c for _, _, c in parsed if c}
    spare = iter([c for c in PALETTE if c not in used] + PALETTE * len(parsed))
    return [(value, name, color or next(spare)) for value, name, color in parsed]


def categorized_renderer(classes) -> QgsCategorizedSymbolRenderer:
    """One point category per class on ``class_id``, labelled with the class name."""
    categories = []
    for value, name, color in classes:
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PointGeometry)
        symbol.setColor(QColor(color))
        categories.append(QgsRendererCategory(value, symbol, name))
    return QgsCategorizedSymbolRenderer(CLASS_ID_FIELD, categories)


_JOURNALS = ("-wal", "-shm", "-journal")


def _remove_gpkg(path: str, journals_only: bool = False) -> None:
    """Remove a GeoPackage and its SQLite journal files (stale journals must never meet another file)."""
    names = [path + suffix for suffix in _JOURNALS] + ([] if journals_only else [path])
    for name in names:
        if os.path.exists(name):
            os.remove(name)


def write_label_layer(path: str, classes, crs: QgsCoordinateReferenceSystem, transform_context) -> str:
    """Write the empty point layer with its default style to ``path`` (replaced only when all went well).

    Returns the layer name inside the GeoPackage (the file's base name, as QGIS itself would call it).
    """
    layer_name = os.path.splitext(os.path.basename(path))[0] or "labels"
    fields = QgsFields()
    fields.append(QgsField(CLASS_ID_FIELD, field_type(QMetaType.Type.Int)))
    fields.append(QgsField(CLASS_NAME_FIELD, field_type(QMetaType.Type.QString)))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_beside(path, ".gpkg")  # the plugin's one temporary rule: removed on failure, cancel or SIGTERM
    try:
        writer = QgsVectorFileWriter.create(tmp, fields, QgsWkbTypes.Point, crs, transform_context, options)
        if writer.hasError() != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"Cannot create the GeoPackage {path}: {writer.errorMessage()}")
        del writer  # flush and close before the style is added

        layer = QgsVectorLayer(f"{tmp}|layername={layer_name}", layer_name, "ogr")
        if not layer.isValid():
            raise QgsProcessingException(f"The new GeoPackage {path} could not be reopened to store its style.")
        layer.setRenderer(categorized_renderer(classes))
        error = layer.saveStyleToDatabase(layer_name, STYLE_DESCRIPTION, True, "")
        del layer  # releases the OGR connection before the file is moved
        if error:
            raise QgsProcessingException(f"The class style could not be stored in {path}: {error}")
        try:
            _remove_gpkg(path, journals_only=True)
        except OSError as exc:
            raise QgsProcessingException(
                f"Cannot replace {path}: {exc}. Close the layer in QGIS (or choose another file) and run "
                "again.") from exc
        commit(tmp, path)
    finally:
        _remove_gpkg(tmp)
        forget(tmp)
    return layer_name


class CreateLabelLayer(DiffLcAlgorithm):
    NAME = "createlabellayer"
    DISPLAY_NAME = "Create label layer"
    HELP = f"""<p>Creates an empty GeoPackage point layer with the fields <b>{CLASS_ID_FIELD}</b> (integer)
and <b>{CLASS_NAME_FIELD}</b> (text) and a categorized style (one colour per class) stored in the
GeoPackage as its default style, so the layer shows its classes in colour wherever it is opened. Digitise a
few points per class into it (set <i>{CLASS_ID_FIELD}</i> for each) and use it as the labels of the
training algorithms, which also take the class names and colours from this style.</p>
<p><b>Classes</b>: 'id=name' entries separated by ';' or new lines, each optionally followed by a colour:
<code>{EXAMPLE}</code>. Ids are integers from 1 up (0 is nodata in the classified raster); classes
without a colour get one from a qualitative palette.</p>
<p><b>CRS</b>: the layer's coordinate reference system. When it is not set, the CRS of the reference
raster is used, else the project's. Digitising in the raster's CRS avoids any reprojection.</p>
<p><b>Output</b>: always a GeoPackage (another extension is replaced by <code>.gpkg</code>). An existing
file is replaced only once the new one has been written completely.</p>"""

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterString(
            "CLASSES", "Classes (id=name [#rrggbb]; …)", defaultValue="1=Class 1; 2=Class 2", multiLine=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "RASTER", "Reference raster (its CRS is used when no CRS is set)", optional=True))
        self.addParameter(QgsProcessingParameterCrs("CRS", "CRS", optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Label layer", type=QgsProcessing.TypeVectorPoint))

    def _crs(self, parameters, context) -> QgsCoordinateReferenceSystem:
        crs = self.parameterAsCrs(parameters, "CRS", context)
        if crs.isValid():
            return crs
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        if raster is not None:
            if raster.crs().isValid():
                return raster.crs()
            raise QgsProcessingException(f"The reference raster '{raster.name()}' has no valid CRS: set the "
                                         "CRS parameter.")
        project = context.project()
        if project is not None and project.crs().isValid():
            return project.crs()
        raise QgsProcessingException("No CRS for the label layer: set the CRS parameter (e.g. EPSG:32633) or give "
                                     "a reference raster.")

    def output_path(self, name, parameters, context) -> str:
        """The GeoPackage really written (another extension becomes .gpkg), for the shared output check."""
        original = super().output_path(name, parameters, context)
        if not original or original.startswith(("memory:", "postgres:", "postgis:", "ogr:", "spatialite:")):
            return original
        return os.path.splitext(original)[0] + ".gpkg"

    def _gpkg_path(self, parameters, context) -> str:
        original = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if not original or original.startswith(("memory:", "postgres:", "postgis:", "ogr:", "spatialite:")):
            raise QgsProcessingException(
                f"The label layer must be a GeoPackage file (got '{original}'): give a path ending in .gpkg.")
        base, ext = os.path.splitext(original)
        if ext.lower() == ".gpkg":
            return original
        path = base + ".gpkg"
        if context.willLoadLayerOnCompletion(original):  # load the file really written, not the asked one
            layers = context.layersToLoadOnCompletion()
            layers[path] = layers.pop(original)
            context.setLayersToLoadOnCompletion(layers)
        return path

    def process(self, parameters, context, feedback):
        classes = parse_classes(self.parameterAsString(parameters, "CLASSES", context))
        crs = self._crs(parameters, context)
        path = self._gpkg_path(parameters, context)
        write_label_layer(path, classes, crs, context.transformContext())
        for value, name, color in classes:
            feedback.pushInfo(f"  {value} = {name} ({color})")
        feedback.pushInfo(f"Label layer with {len(classes)} classes in {crs.authid() or crs.description()}: "
                          f"{path}")
        return {"OUTPUT": path}

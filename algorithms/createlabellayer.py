"""difflc:createlabellayer — an empty, styled GeoPackage point layer ready for drawing sparse labels."""
from __future__ import annotations

import os
import re
from typing import List, Tuple

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsProcessing,
    QgsCoordinateReferenceSystem,
    QgsField,
    QgsFields,
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
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from .base import DiffLcAlgorithm

PALETTE = ["#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a",
           "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7", "#bebada", "#80b1d3", "#fccde5"]


def parse_classes(text: str) -> List[Tuple[int, str, str]]:
    """'1=Water; 2=Forest #228b22' (also one per line or comma separated) → [(id, name, colour)]."""
    items = [s.strip() for s in re.split(r"[;\n,]", text or "") if s.strip()]
    if not items:
        raise QgsProcessingException("CLASSES is empty: list the classes as '1=Water; 2=Forest; 3=Urban'.")
    out, seen = [], set()
    for i, item in enumerate(items):
        m = re.fullmatch(r"(\d+)\s*[=:]\s*(.*?)\s*(#[0-9a-fA-F]{6})?", item)
        if not m or not m.group(2):
            raise QgsProcessingException(
                f"Cannot read the class entry '{item}': write it as 'id=name' or 'id=name #rrggbb', "
                "e.g. '1=Water #1f78b4'.")
        value = int(m.group(1))
        if value == 0 or value in seen:
            raise QgsProcessingException(
                f"Class id {value} in '{item}' is {'reserved for nodata' if value == 0 else 'listed twice'}: "
                "use distinct ids from 1 up.")
        seen.add(value)
        out.append((value, m.group(2), m.group(3) or PALETTE[i % len(PALETTE)]))
    return out


def categorized_renderer(classes) -> QgsCategorizedSymbolRenderer:
    categories = []
    for value, name, color in classes:
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PointGeometry)
        symbol.setColor(QColor(color))
        categories.append(QgsRendererCategory(value, symbol, name))
    return QgsCategorizedSymbolRenderer("class_id", categories)


class CreateLabelLayer(DiffLcAlgorithm):
    NAME = "createlabellayer"
    DISPLAY_NAME = "Create label layer"
    HELP = """<p>Creates an empty GeoPackage point layer with the fields <b>class_id</b> (integer) and
<b>class_name</b> (text) and a categorized style (one colour per class), ready for digitising sparse
training points. The training algorithms take class names and colours from this style.</p>
<p><b>Classes</b>: 'id=name' entries separated by ';', ',' or new lines, optionally with a colour:
<code>1=Water #1f78b4; 2=Forest; 3=Urban</code>. Id 0 is reserved for nodata.</p>
<p><b>CRS</b>: the layer CRS; when a reference raster is given and no CRS, the raster's CRS is used.</p>"""

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterString(
            "CLASSES", "Classes (id=name [#colour]; …)", defaultValue="1=Class 1; 2=Class 2", multiLine=True))
        self.addParameter(QgsProcessingParameterRasterLayer("RASTER", "Reference raster (for the CRS)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterCrs("CRS", "CRS", optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Label layer", type=QgsProcessing.TypeVectorPoint, fileFilter="GeoPackage (*.gpkg)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        classes = parse_classes(self.parameterAsString(parameters, "CLASSES", context))
        crs = self.parameterAsCrs(parameters, "CRS", context)
        if not crs.isValid():
            raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
            crs = raster.crs() if raster is not None else QgsCoordinateReferenceSystem("EPSG:4326")
        path = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if not path.lower().endswith(".gpkg"):
            path = os.path.splitext(path)[0] + ".gpkg"
        fields = QgsFields()
        fields.append(QgsField("class_id", QVariant.Int))
        fields.append(QgsField("class_name", QVariant.String))
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = "labels"
        tmp = path + ".tmp.gpkg"
        if os.path.exists(tmp):
            os.remove(tmp)
        writer = QgsVectorFileWriter.create(tmp, fields, QgsWkbTypes.Point, crs, context.transformContext(),
                                            options)
        if writer.hasError() != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"Cannot create {path}: {writer.errorMessage()}")
        del writer  # flush and close
        layer = QgsVectorLayer(f"{tmp}|layername=labels", "labels", "ogr")
        layer.setRenderer(categorized_renderer(classes))
        error = layer.saveStyleToDatabase("labels", "class colours (Diffusion Land Cover)", True, "")
        del layer
        if error:
            feedback.pushWarning(f"The style could not be stored in the GeoPackage: {error}")
        os.replace(tmp, path)
        feedback.pushInfo(f"Label layer with {len(classes)} classes: {path}")
        return {"OUTPUT": path}


"""Parameters of the objects algorithms (issue 21), declared once: names as constants, help per parameter, and
their translation into engine requests (segmentobjects, trainobjectclassifier, classifyobjects,
trainandclassifyobjects)."""
from __future__ import annotations

import os
from typing import Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsWkbTypes,
)

POLYGONS = "POLYGONS"
CLASS_FIELD = "CLASS_FIELD"
LABEL_POINTS = "LABEL_POINTS"
POINTS_FIELD = "POINTS_FIELD"
OBJECT_SIZE = "OBJECT_SIZE"
SIZE_UNIT = "SIZE_UNIT"
COMPACTNESS = "COMPACTNESS"
OUTPUT = "OUTPUT"
MODEL = "MODEL"
REPORT = "REPORT"

SIZE_UNITS = ["ha", "m²", "pixels"]
OBJECT_MODEL_FILTER = "Diffusion Land Cover object model (*.difflc)"

HELP = {
    POLYGONS: "Polygons to classify: your parcels, footprints or stands, or the output of Segment objects; any CRS "
              "(transformed to the raster's)",
    CLASS_FIELD: "Training classes as a field of the polygons: filled on some polygons, NULL or empty on the others "
                 "(leave empty to use label points instead)",
    LABEL_POINTS: "Label points instead of a class field: the majority class of the points inside a polygon labels "
                  "it (ties are left unlabelled and reported)",
    POINTS_FIELD: "Class field of the label points",
    OBJECT_SIZE: "Target object size (the area SLIC aims for, in SIZE_UNIT)",
    SIZE_UNIT: "Unit of OBJECT_SIZE: hectares, square metres (converted with the raster's pixel area) or pixels",
    COMPACTNESS: "SLIC compactness: larger = more regular, compact objects; smaller = objects follow the image more "
                 "closely (1 balances one object spacing against a colour distance of 1 on images in [-1, 1])",
    OUTPUT: "Output GeoPackage (.gpkg)",
    MODEL: "Object model file (.difflc)",
    REPORT: "Training report (HTML or JSON): out-of-bag accuracy on the labelled objects",
}


def _help(param):
    """The parameter's help; a number's starts with its range, as every numeric parameter's does (base.number_range)."""
    if param.type() == "number":
        from .base import number_range

        param.setHelp(f"{param.name()}: {number_range(param)}. {HELP[param.name()]}.")
    else:
        param.setHelp(HELP[param.name()])
    return param


def add_polygons(alg, labels: bool) -> None:
    alg.addParameter(_help(QgsProcessingParameterVectorLayer(POLYGONS, "Polygons (objects)",
                                                             [QgsProcessing.TypeVectorPolygon])))
    if labels:
        alg.addParameter(_help(QgsProcessingParameterField(CLASS_FIELD, "Class field of the polygons (optional)",
                                                           parentLayerParameterName=POLYGONS, optional=True)))
        alg.addParameter(_help(QgsProcessingParameterVectorLayer(LABEL_POINTS, "Label points (instead of a class "
                                                                 "field; optional)", [QgsProcessing.TypeVectorPoint],
                                                                 optional=True)))
        alg.addParameter(_help(QgsProcessingParameterField(POINTS_FIELD, "Class field of the label points",
                                                           parentLayerParameterName=LABEL_POINTS, optional=True)))


def add_segment_parameters(alg) -> None:
    alg.addParameter(_help(QgsProcessingParameterNumber(OBJECT_SIZE, "Target object size",
                                                        QgsProcessingParameterNumber.Double, 0.5, minValue=1e-6)))
    alg.addParameter(_help(QgsProcessingParameterEnum(SIZE_UNIT, "Object size unit", SIZE_UNITS, defaultValue=0)))
    alg.addParameter(_help(QgsProcessingParameterNumber(COMPACTNESS, "Compactness",
                                                        QgsProcessingParameterNumber.Double, 1.0, minValue=0.001,
                                                        maxValue=100.0)))


def add_output(alg, description: str) -> None:
    alg.addParameter(_help(QgsProcessingParameterVectorDestination(OUTPUT, description,
                                                                   type=QgsProcessing.TypeVectorPolygon)))


def add_model_output(alg, optional: bool) -> None:
    alg.addParameter(_help(QgsProcessingParameterFileDestination(MODEL, "Object model file",
                                                                 fileFilter=OBJECT_MODEL_FILTER, optional=optional,
                                                                 createByDefault=not optional)))
    alg.addParameter(_help(QgsProcessingParameterFileDestination(REPORT, "Training report",
                                                                 fileFilter="HTML (*.html *.htm);;JSON (*.json)",
                                                                 optional=True, createByDefault=False)))


def gpkg_output_path(alg, parameters, context) -> str:
    """The GeoPackage OUTPUT really written: a temporary output becomes a .gpkg of that name; another format is
    refused (the style is stored inside the GeoPackage)."""
    path = alg.parameterAsOutputLayer(parameters, OUTPUT, context)
    if not path or path.startswith(("memory:", "postgres:", "postgis:", "ogr:", "spatialite:")):
        raise QgsProcessingException(f"{OUTPUT}: give a GeoPackage file (.gpkg), got '{path}'.")
    base, ext = os.path.splitext(path)
    if ext.lower() != ".gpkg":
        if str(parameters.get(OUTPUT)) != QgsProcessing.TEMPORARY_OUTPUT:
            raise QgsProcessingException(f"{OUTPUT}: {path} — the objects are written as a GeoPackage: give a name "
                                         "ending in .gpkg.")
        new = base + ".gpkg"
        if context.willLoadLayerOnCompletion(path):
            layers = context.layersToLoadOnCompletion()
            layers[new] = layers.pop(path)
            context.setLayersToLoadOnCompletion(layers)
        path = new
    return path


def _kind(layer) -> str:
    kind = QgsWkbTypes.geometryType(layer.wkbType())
    return {QgsWkbTypes.PointGeometry: "points", QgsWkbTypes.LineGeometry: "lines",
            QgsWkbTypes.PolygonGeometry: "polygons"}.get(kind, "no geometry")


def _file_source(layer, name: str) -> str:
    if layer.providerType() != "ogr":
        raise QgsProcessingException(f"{name}: the layer '{layer.name()}' is not file-based ({layer.providerType()}): "
                                     "save it as a GeoPackage first (right-click > Export > Save Features As).")
    return layer.source()


def check_layers(alg, parameters, context, labels: bool) -> None:
    """Points given where polygons are needed (and the reverse), and the labels' source: refused by name before
    any work."""
    layer = alg.parameterAsVectorLayer(parameters, POLYGONS, context)
    if layer is not None and layer.isValid() and _kind(layer) != "polygons":
        raise QgsProcessingException(f"{POLYGONS}: the layer '{layer.name()}' holds {_kind(layer)}; objects are "
                                     "polygons: give a polygon layer (parcels, or the output of Segment objects).")
    if not labels:
        return
    field = alg.parameterAsString(parameters, CLASS_FIELD, context)
    points = alg.parameterAsVectorLayer(parameters, LABEL_POINTS, context)
    if bool(field) == (points is not None):
        raise QgsProcessingException(f"Give the training classes one way: {CLASS_FIELD} (a field of the polygons) or "
                                     f"{LABEL_POINTS} with {POINTS_FIELD}.")
    if points is not None:
        if _kind(points) != "points":
            raise QgsProcessingException(f"{LABEL_POINTS}: the layer '{points.name()}' holds {_kind(points)}; give "
                                         f"points (or the classes as {CLASS_FIELD} of the polygons).")
        if not alg.parameterAsString(parameters, POINTS_FIELD, context):
            raise QgsProcessingException(f"{POINTS_FIELD}: give the class field of the label points "
                                         f"'{points.name()}'.")


def polygon_input(alg, parameters, context, with_field: bool = True):
    from ..engine.jobs.objects import PolygonInput
    from .layers import reference_styles

    layer = alg.parameterAsVectorLayer(parameters, POLYGONS, context)
    if layer is None:
        raise QgsProcessingException(f"{POLYGONS}: no polygon layer given.")
    field = alg.parameterAsString(parameters, CLASS_FIELD, context) if with_field else None
    return PolygonInput(_file_source(layer, POLYGONS), layer.name(), field or None,
                        reference_styles(layer, field) if field else {})


def point_labels(alg, parameters, context):
    from ..engine.jobs.objects import PointLabels
    from .layers import reference_styles

    layer = alg.parameterAsVectorLayer(parameters, LABEL_POINTS, context)
    if layer is None:
        return None
    field = alg.parameterAsString(parameters, POINTS_FIELD, context)
    return PointLabels(_file_source(layer, LABEL_POINTS), layer.name(), field, reference_styles(layer, field))


def object_train_request(alg, parameters, context, model_path: Optional[str], report: Optional[str]):
    from ..engine.jobs.objects import ObjectTrainRequest
    from .params import raster_path, settings_from_parameters

    return ObjectTrainRequest(raster_path(alg, parameters, "HSI", context),
                              raster_path(alg, parameters, "SAR", context, optional=True),
                              polygon_input(alg, parameters, context), settings_from_parameters(alg, parameters, context),
                              points=point_labels(alg, parameters, context), model_path=model_path, report_path=report)


OBJECT_HELP = """<p><b>Per-object features</b>: every pixel whose centre lies inside a polygon (burnt into an id raster
on the raster grid) contributes its head inputs &mdash; the diffusion features of its home 64&times;64 window (as
pixel classification sees it) and its standardised bands &mdash; to the polygon's mean and standard deviation,
accumulated window by window (memory grows with the number of polygons, never with the scene). A polygon smaller
than a pixel (no pixel centre inside) uses the pixel under its centroid and is flagged
(<code>obj_note = subpixel</code>). Polygons outside the raster, empty, or only on nodata are kept with a NULL class
and counted in the log. Where polygons overlap, a pixel counts for the later one. Invalid geometries are repaired
(MakeValid) and counted.</p>
<p>The head is the pixel route's (<b>HEAD</b>, default a Random Forest with its out-of-bag diffusion-feature check,
which here compares against a forest on the pooled bands alone &mdash; zonal statistics).</p>"""

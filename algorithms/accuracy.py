"""difflc:accuracy — a classified raster against reference data: confusion matrix and metrics report."""
from __future__ import annotations


from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from .base import DiffLcAlgorithm
from .layers import read_label_features, reference_styles
from .params import parse_ints, raster_path

OBJECTS = "OBJECTS"
OBJECTS_MAP_FIELD = "OBJECTS_MAP_FIELD"
OBJECTS_REFERENCE_FIELD = "OBJECTS_REFERENCE_FIELD"
OBJECTS_HELP = {
    OBJECTS: "A classified polygon layer (e.g. the output of Classify objects) holding a reference class field: "
             "accuracy counted by object and weighted by area",
    OBJECTS_MAP_FIELD: "Field of OBJECTS holding the map class values (Classify objects writes 'class')",
    OBJECTS_REFERENCE_FIELD: "Field of OBJECTS holding the reference class values (the same values as the map; "
                             "NULL = no reference)",
}

HELP = """<p>Compares a classified raster with reference data and reports the confusion matrix (rows =
reference, columns = map), overall accuracy (OA), average accuracy (AA = mean per-class recall), Cohen's
kappa, per-class precision / recall / F1 / IoU, mean F1 and mean IoU, as a self-contained HTML page (table +
heat-map plot) and/or JSON.</p>
<p>Reference: a raster (resampled by nearest neighbour onto the map grid when needed) or a point/polygon layer
with a class field holding the map's class values. <b>EXCLUDE</b>: features whose pixels are left out, e.g. the
training points, so the map is judged on independent pixels only. <b>IGNORE</b>: reference values that mean
"no reference" (e.g. <code>-1</code> or <code>0</code>). Classes are matched by value; names come from the
map's category names; a value named differently in the map and in the reference (its category names, or a categorized style on the
reference field) stops the run.</p>
<p><b>Objects</b>: instead of a raster, <b>OBJECTS</b>, a classified polygon layer (the output of <i>Classify
objects</i>), with its map field (<b>OBJECTS_MAP_FIELD</b>, default <code>class</code>) and a reference field
(<b>OBJECTS_REFERENCE_FIELD</b>, NULL where there is no reference): the report counts polygons (the confusion
matrix, OA, kappa, per-class F1 by object) and weights each polygon by its area (area-weighted OA, kappa and
per-class F1, in hectares; in a geographic CRS areas are computed in an equal-area projection). The area estimates
below are for rasters.</p>
<p><b>AREA_ESTIMATES</b> (on by default): area-adjusted accuracy and area estimation following Olofsson et al.
2014 ("Good practices for estimating area and assessing accuracy of land change", Remote Sensing of Environment
148: 42&ndash;57). The map's class areas, counted block by block from the classified raster, are the strata
weights W<sub>i</sub>; the report adds the error matrix in estimated area proportions
(p<sub>ij</sub> = W<sub>i</sub> n<sub>ij</sub> / n<sub>i&middot;</sub>), user's, producer's and overall accuracy
with 95 % confidence intervals, and the estimated area of each class &plusmn; its 95 % CI, in hectares and km&sup2;
for a projected CRS; in a geographic CRS each row's pixel area is computed on the ellipsoid; without a CRS areas
are in pixels. These estimators assume the reference is a <b>stratified random sample by map class</b> (or a
simple random sample), drawn <b>independently of the training data</b> (leave the training points out with
EXCLUDE). The run stops, naming the class, when a reference class does not occur in the map or a mapped class
has fewer than 2 reference samples: add samples there or turn AREA_ESTIMATES off.</p>
<p><b>Good practice</b>: draw the reference points as a stratified random sample of the map's classes (at least
50&ndash;100 per class), label them from better data than the map (field visits, very-high-resolution imagery),
never reuse training points, and report the estimated areas with their confidence intervals rather than the map's
pixel counts.</p>"""


class Accuracy(DiffLcAlgorithm):
    NAME = "accuracy"
    DISPLAY_NAME = "Accuracy assessment"
    HELP = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("CLASSIFIED", "Classified raster (or OBJECTS)",
                                                            optional=True))
        param = QgsProcessingParameterVectorLayer(OBJECTS, "Classified polygons with a reference field (instead of "
                                                  "a raster)", [QgsProcessing.TypeVectorPolygon], optional=True)
        param.setHelp(OBJECTS_HELP[OBJECTS])
        self.addParameter(param)
        for name, text, default in ((OBJECTS_MAP_FIELD, "Map class field of OBJECTS", "class"),
                                    (OBJECTS_REFERENCE_FIELD, "Reference class field of OBJECTS", None)):
            param = QgsProcessingParameterField(name, text, defaultValue=default, parentLayerParameterName=OBJECTS,
                                                optional=True)
            param.setHelp(OBJECTS_HELP[name])
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference raster", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            "REFERENCE_LABELS", "Reference points/polygons (instead of a raster)",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "REFERENCE_FIELD", "Reference class field", parentLayerParameterName="REFERENCE_LABELS", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            "EXCLUDE", "Leave out pixels under these features (e.g. training points)",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterString(
            "IGNORE", "Reference values meaning 'no reference' (comma separated)", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "AREA_ESTIMATES", "Area-adjusted accuracy and area estimates (Olofsson et al. 2014; needs a reference "
            "sample stratified by map class)", defaultValue=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "HTML", "Report (HTML)", fileFilter="HTML (*.html *.htm)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "JSON", "Report (JSON)", fileFilter="JSON (*.json)", optional=True, createByDefault=False))
        for name, text in (("OA", "Overall accuracy"), ("KAPPA", "Kappa"), ("MIOU", "Mean IoU"),
                           ("MF1", "Mean F1"), ("AA", "Average accuracy")):
            self.addOutput(QgsProcessingOutputNumber(name, text))
        self.addOutput(QgsProcessingOutputNumber("ADJUSTED_OA", "Area-adjusted overall accuracy (Olofsson et al. 2014)"))
        self.addOutput(QgsProcessingOutputNumber("ADJUSTED_OA_CI", "Area-adjusted overall accuracy: 95 % CI half-width"))
        self.addOutput(QgsProcessingOutputNumber("AREA_OA", "Objects: area-weighted overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber("AREA_KAPPA", "Objects: area-weighted kappa"))

    def _objects(self, parameters, context, feedback):
        """OBJECTS: counts by object and by area from the layer's own map and reference fields."""
        from ..engine.jobs.objects import assess_objects
        from .layers import reference_styles
        from .objectparams import _file_source

        layer = self.parameterAsVectorLayer(parameters, OBJECTS, context)
        map_field = self.parameterAsString(parameters, OBJECTS_MAP_FIELD, context) or "class"
        ref_field = self.parameterAsString(parameters, OBJECTS_REFERENCE_FIELD, context)
        if not ref_field:
            raise QgsProcessingException(f"{OBJECTS_REFERENCE_FIELD}: give the reference class field of the layer "
                                         f"'{layer.name()}'.")
        names = {}
        for key, (name, _colour) in reference_styles(layer, map_field).items():
            try:
                names[int(float(key))] = name
            except ValueError:
                continue
        html = self.parameterAsFileOutput(parameters, "HTML", context) or None
        json_path = self.parameterAsFileOutput(parameters, "JSON", context) or None
        m = assess_objects(_file_source(layer, OBJECTS), layer.name(), map_field, ref_field, names, html, json_path,
                           self.progress_for(feedback))
        area = m["by_area"]
        feedback.pushInfo(f"By object: OA {100 * m['overall_accuracy']:.2f} %  kappa {m['kappa']:.4f}  "
                          f"mF1 {100 * m['mean_f1']:.2f} %  ({m['n_samples']} polygons)")
        feedback.pushInfo(f"By area: OA {100 * area['overall_accuracy']:.2f} %  kappa {area['kappa']:.4f}  "
                          f"mF1 {100 * area['mean_f1']:.2f} %  ({area['total_area']:,.2f} {area['unit']})")
        return {"HTML": html, "JSON": json_path, "OA": m["overall_accuracy"], "KAPPA": m["kappa"],
                "MIOU": m["mean_iou"], "MF1": m["mean_f1"], "AA": m["average_accuracy"],
                "AREA_OA": area["overall_accuracy"], "AREA_KAPPA": area["kappa"]}

    def process(self, parameters, context, feedback):
        from ..engine import jobs

        has_objects = parameters.get(OBJECTS) not in (None, "")
        if has_objects == (parameters.get("CLASSIFIED") not in (None, "")):
            raise QgsProcessingException("Give exactly one map: CLASSIFIED (a raster) or OBJECTS (classified polygons "
                                         "with a reference field).")
        if has_objects:
            return self._objects(parameters, context, feedback)
        classified = raster_path(self, parameters, "CLASSIFIED", context)
        crs = self.parameterAsRasterLayer(parameters, "CLASSIFIED", context).crs()
        reference = raster_path(self, parameters, "REFERENCE", context, optional=True)
        ref_layer = self.parameterAsVectorLayer(parameters, "REFERENCE_LABELS", context)
        if (reference is None) == (ref_layer is None):
            raise QgsProcessingException("Give exactly one reference: REFERENCE (raster) or REFERENCE_LABELS (layer).")
        ref_labels = None
        if ref_layer is not None:
            field = self.parameterAsString(parameters, "REFERENCE_FIELD", context)
            ref_labels = read_label_features(ref_layer, field, crs, feedback, layer_name=ref_layer.name())
            ref_labels.styles = reference_styles(ref_layer, field)  # the names checked against the map's
        exclude_layer = self.parameterAsVectorLayer(parameters, "EXCLUDE", context)
        exclude = None
        if exclude_layer is not None:
            exclude = read_label_features(exclude_layer, None, crs, feedback, layer_name=exclude_layer.name())
        ignore = list(parse_ints(self.parameterAsString(parameters, "IGNORE", context), "IGNORE") or ())
        html = self.parameterAsFileOutput(parameters, "HTML", context) or None
        json_path = self.parameterAsFileOutput(parameters, "JSON", context) or None
        area_estimation = self.parameterAsBool(parameters, "AREA_ESTIMATES", context)
        m = jobs.assess(classified, reference, ref_labels, exclude, ignore, html, json_path,
                        self.progress_for(feedback), area_estimation=area_estimation)
        feedback.pushInfo(f"OA {100 * m['overall_accuracy']:.2f} %  kappa {m['kappa']:.4f}  "
                          f"mIoU {100 * m['mean_iou']:.2f} %  mF1 {100 * m['mean_f1']:.2f} %  "
                          f"AA {100 * m['average_accuracy']:.2f} %  ({m['n_samples']} pixels)")
        area = m.get("area_estimation") or {}
        for c in area.get("classes", []):
            feedback.pushInfo(f"{c['name']}: estimated area {c['estimated_area']:,.2f} ± {c['estimated_area_ci95']:,.2f} "
                              f"{area['unit']} (map {c['map_area']:,.2f})")
        if area:
            feedback.pushInfo(f"Area-adjusted OA {area['overall_accuracy']:.4f} ± {area['overall_accuracy_ci95']:.4f} "
                              "(95 % CI, Olofsson et al. 2014)")
        return {"HTML": html, "JSON": json_path, "OA": m["overall_accuracy"], "KAPPA": m["kappa"],
                "MIOU": m["mean_iou"], "MF1": m["mean_f1"], "AA": m["average_accuracy"],
                "ADJUSTED_OA": area.get("overall_accuracy"), "ADJUSTED_OA_CI": area.get("overall_accuracy_ci95")}

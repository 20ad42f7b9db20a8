"""difflc:detectchanges — two dates of the same area → styled change map, change score (+ model, report).

Thin: parameters declared once (names below), checked before any work, then one engine call
(``engine.jobs.detect_changes``; the method is ``engine.tasks.changedetect``)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from .base import DiffLcAlgorithm
from ..engine.settings import TileSettings
from .params import (BACKBONE_SOURCE_LABELS, BACKBONE_SOURCES, CHANGE_MASK_HELP, DEVICES, _advanced, add_mask_parameter,
                     mask_from_parameters, raster_path)

BEFORE, AFTER, LABELS, FIELD, MASK = "BEFORE", "AFTER", "LABELS", "FIELD", "MASK"
FEATURES, THRESHOLD, SAR, BACKBONE_SOURCE, DEVICE, SEED, TREES, STRIDE = (
    "FEATURES", "THRESHOLD", "SAR", "BACKBONE_SOURCE", "DEVICE", "SEED", "TREES", "STRIDE")
OUTPUT, SCORE, MODEL, REPORT = "OUTPUT", "SCORE", "MODEL", "REPORT"
CHANGE_MODEL_FILTER = "Diffusion Land Cover change model (*.difflc)"

# engine names, in the order of the enum labels (engine.tasks.changedetect.FEATURE_SOURCES / THRESHOLD_METHODS)
FEATURE_CHOICES = ["diffusion+bands", "bands", "diffusion"]
FEATURE_LABELS = ["Diffusion features + bands (default: highest AUC measured on all 7 real pairs)",
                  "Bands only (classic change vector analysis, no network)",
                  "Diffusion features only"]
THRESHOLD_CHOICES = ["otsu", "kittler-illingworth"]
THRESHOLD_LABELS = ["Otsu (1979)", "Kittler-Illingworth minimum error (1986)"]

HELP = """<p>Maps change between two dates of the same area (<b>BEFORE</b>, <b>AFTER</b>: the same sensor and
bands, any band count, optical or SAR). Both dates go through exactly the land-cover transform: one set of
representation statistics fitted on both dates pooled, the same diffusion network (by default the seeded,
untrained compact ADM), the same noise, timestep and decoder blocks.</p>
<p><b>Without labels</b> (unsupervised): deep change vector analysis (Saha, Bovolo &amp; Bruzzone 2019, IEEE TGRS
57(6)): each feature channel is standardised with statistics pooled over both dates and the score is the distance
between the dates' vectors (diffusion features and bands weighted as two equal groups). An automatic threshold
(<b>THRESHOLD</b>: Otsu 1979 or Kittler &amp; Illingworth 1986) makes the map. Good for a first look at
<i>where anything changed</i>; it flags every radiometric change (season, moisture, clouds), not only the kind
you care about.</p>
<p><b>With labels</b> (supervised): points or polygons with a change field (<b>FIELD</b>: 1 / 0, or text
<i>change</i> / <i>no change</i>) train the land-cover Random Forest on [features t1, features t2, their
difference, bands of both dates]; the score is P(change), the map P &ge; 0.5. Use it when only one kind of
change matters (e.g. new buildings): a few dozen labels teach the forest to ignore the rest. Validation is
out-of-bag on the training labels only.</p>
<p><b>FEATURES</b>: diffusion + bands (default, highest AUC on all real pairs measured), bands only (classic CVA,
no network, seconds), diffusion only. <b>SAR</b>: amplitudes are compared as ln(x + 1) (the bands-only score is
then the classic |log-ratio|).</p>
<p><b>AFTER</b> on another grid or CRS is resampled onto the BEFORE grid (bilinear, logged). A pair that does not
overlap, with different band counts, or with a date that is all nodata is refused before any work.</p>
<p><b>Outputs</b>: <b>OUTPUT</b> change map (Byte: 0 no change, 1 change, 255 nodata; category names, colours,
<code>.qml</code>), <b>SCORE</b> (Float32 deep-CVA distance, or P(change) with labels; NaN nodata), optional
<b>MODEL</b> (JSON + safetensors, nothing pickled; with labels, <i>Apply change model</i> scores other pairs with it) and <b>REPORT</b> (HTML or JSON: mode, method, threshold,
counts, changed area). Every output is written to a temporary file and moved into place only when complete.</p>
""" + CHANGE_MASK_HELP


def add_date_parameters(alg) -> None:
    """BEFORE and AFTER, shared with applychangemodel."""
    alg.addParameter(QgsProcessingParameterRasterLayer(BEFORE, "Before (date 1) raster"))
    alg.addParameter(QgsProcessingParameterRasterLayer(AFTER, "After (date 2) raster, same bands"))


def add_change_outputs(alg, score_label: str, model: bool) -> None:
    """OUTPUT, SCORE, (MODEL,) REPORT and the CHANGED_PIXELS count, shared with applychangemodel."""
    alg.addParameter(QgsProcessingParameterRasterDestination(OUTPUT, "Change map"))
    alg.addParameter(QgsProcessingParameterRasterDestination(
        SCORE, score_label, optional=True, createByDefault=False))
    if model:
        alg.addParameter(QgsProcessingParameterFileDestination(
            MODEL, "Model file", fileFilter=CHANGE_MODEL_FILTER, optional=True, createByDefault=False))
    alg.addParameter(QgsProcessingParameterFileDestination(
        REPORT, "Report", fileFilter="HTML (*.html *.htm);;JSON (*.json)", optional=True, createByDefault=False))
    alg.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", "Changed pixels"))


def pair_problem(alg, parameters, context) -> str:
    """Why BEFORE and AFTER cannot be compared ('' when they can): band counts that differ, no overlap."""
    before = alg.parameterAsRasterLayer(parameters, BEFORE, context)
    after = alg.parameterAsRasterLayer(parameters, AFTER, context)
    if before is None or after is None:
        return ""
    if before.bandCount() != after.bandCount():
        return (f"BEFORE '{before.name()}' has {before.bandCount()} band(s) and AFTER '{after.name()}' "
                f"{after.bandCount()}: give two rasters of the same sensor and band set.")
    if before.crs().isValid() and after.crs().isValid():
        from qgis.core import QgsCoordinateTransform

        try:
            extent = QgsCoordinateTransform(after.crs(), before.crs(), context.transformContext()) \
                .transformBoundingBox(after.extent())
        except Exception:  # noqa: BLE001 - leave it to the engine, which says it precisely
            extent = None
        if extent is not None and not extent.intersects(before.extent()):
            return (f"AFTER '{after.name()}' does not overlap BEFORE '{before.name()}': choose two rasters of the "
                    "same area.")
    return ""


class DetectChanges(DiffLcAlgorithm):
    NAME = "detectchanges"
    DISPLAY_NAME = "Detect changes (two dates)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_date_parameters(self)
        self.addParameter(QgsProcessingParameterVectorLayer(
            LABELS, "Change labels: points or polygons (optional; none = unsupervised)",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            FIELD, "Change field (1 / 0, or 'change' / 'no change')", parentLayerParameterName=LABELS, optional=True))
        add_mask_parameter(self, "detect changes only inside")
        self.addParameter(QgsProcessingParameterEnum(FEATURES, "Features compared", FEATURE_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(THRESHOLD, "Automatic threshold (unsupervised)",
                                                     THRESHOLD_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(SAR, "The rasters are SAR amplitudes (compare in log scale)",
                                                        defaultValue=False))
        _advanced(self, QgsProcessingParameterEnum(BACKBONE_SOURCE, "Diffusion network", BACKBONE_SOURCE_LABELS,
                                                   defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(SEED, "Random seed", QgsProcessingParameterNumber.Integer,
                                                       defaultValue=0, minValue=0))
        _advanced(self, QgsProcessingParameterNumber(TREES, "Trees of the forest (with labels)",
                                                     QgsProcessingParameterNumber.Integer, defaultValue=500,
                                                     minValue=10, maxValue=5000))
        _advanced(self, QgsProcessingParameterNumber(STRIDE, "Window stride in pixels (64-pixel windows)",
                                                     QgsProcessingParameterNumber.Integer,
                                                     defaultValue=TileSettings().stride, minValue=8, maxValue=64))
        add_change_outputs(self, "Change score (Float32)", model=True)
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_VALUE", "Threshold applied to the score"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        problem = pair_problem(self, parameters, context)
        if problem:
            return False, problem
        if self.parameterAsVectorLayer(parameters, LABELS, context) is not None and \
                not self.parameterAsString(parameters, FIELD, context):
            return False, "LABELS given without FIELD: choose the field that says change (1) / no change (0)."
        return True, ""

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs
        from ..engine.tasks.changedetect import ChangeSettings
        from ..engine.settings import PipelineSettings
        from .layers import read_labels

        before = raster_path(self, parameters, BEFORE, context)
        after = raster_path(self, parameters, AFTER, context)
        ps = PipelineSettings()
        ps.backbone.source = BACKBONE_SOURCES[self.parameterAsEnum(parameters, BACKBONE_SOURCE, context)]
        ps.device = DEVICES[self.parameterAsEnum(parameters, DEVICE, context)]
        ps.seed = self.parameterAsInt(parameters, SEED, context)
        ps.tiles.stride = self.parameterAsInt(parameters, STRIDE, context)
        settings = ChangeSettings(
            pipeline=ps, features=FEATURE_CHOICES[self.parameterAsEnum(parameters, FEATURES, context)],
            threshold=THRESHOLD_CHOICES[self.parameterAsEnum(parameters, THRESHOLD, context)],
            sar=self.parameterAsBool(parameters, SAR, context), trees=self.parameterAsInt(parameters, TREES, context))
        labels = None
        if self.parameterAsVectorLayer(parameters, LABELS, context) is not None:
            labels = read_labels(self, parameters, context, feedback, before, LABELS, FIELD)
        request = jobs.ChangeRequest(
            before, after, self.parameterAsOutputLayer(parameters, OUTPUT, context), settings,
            score=self.parameterAsOutputLayer(parameters, SCORE, context) or None,
            model_path=self.parameterAsFileOutput(parameters, MODEL, context) or None,
            report_path=self.parameterAsFileOutput(parameters, REPORT, context) or None,
            labels=labels, mask=mask_from_parameters(self, parameters, context, feedback, before))
        out = jobs.detect_changes(request, self.progress_for(feedback))
        return {OUTPUT: out.output, SCORE: out.score, MODEL: request.model_path, REPORT: request.report_path,
                "CHANGED_PIXELS": out.result.changed_pixels, "THRESHOLD_VALUE": out.result.threshold}

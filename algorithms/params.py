"""Parameters shared by the training algorithms, and their translation into one PipelineSettings.

Defined once so that `adaptbackbone`, `trainclassifier` and `trainandclassify` offer the same names,
defaults (the method's) and help, and build the settings the same way.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessing,
)

from ..engine.settings import DIFFUSION_STEPS, FUSIONS, HEAD_KINDS, PRESET_LR, PipelineSettings

DEVICES = ["auto", "cpu", "cuda"]
FUSIONS = list(FUSIONS)
HEADS = list(HEAD_KINDS)
HEAD_LABELS = ["Random Forest on diffusion features + bands (most accurate measured)",
               "MLP with feature fusion (UniDiff head)"]
SAR_DB = ["auto", "dB", "linear"]
PRESETS = list(PRESET_LR)


MODEL_FILTER = "Diffusion Land Cover model (*.difflc)"


def add_model_input(alg) -> None:
    """The trained model file an algorithm reads (classify, classifymany)."""
    alg.addParameter(QgsProcessingParameterFile("MODEL", "Model file", fileFilter=MODEL_FILTER))


def add_input_parameters(alg, labels: bool = True, mask: bool = False) -> None:
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "HSI", "Hyperspectral / multispectral raster (3 bands or more)"))
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "SAR", "SAR raster (VV/VH dual-pol, HH/HV/VV quad-pol or single-pol; optional)", optional=True))
    if labels:
        alg.addParameter(QgsProcessingParameterVectorLayer(
            "LABELS", "Label points or polygons",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        alg.addParameter(QgsProcessingParameterField("CLASS_FIELD", "Class field", parentLayerParameterName="LABELS"))
    if mask:
        add_mask_parameter(alg, "train and classify only inside")


def add_mask_parameter(alg, inside: str) -> None:
    """MASK: a raster (nonzero = inside) or polygons; ``inside`` says what the algorithm does only there."""
    alg.addParameter(QgsProcessingParameterMapLayer(
        "MASK", f"Mask: raster (nonzero = inside) or polygons; {inside} (optional)",
        optional=True, types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]))


CHANGE_MASK_HELP = """<p><b>MASK</b> (optional): a raster (nonzero = inside; resampled by nearest neighbour onto the
BEFORE grid) or a polygon layer (pixel centres inside a polygon, any CRS). Outside it both dates are nodata: the map
and the score are nodata there. When a model is fitted, its statistics, automatic threshold and labels use inside
pixels only (labels outside are skipped and counted in the report).</p>"""

MASK_HELP = """<p><b>MASK</b> (optional): a raster (nonzero = inside; resampled by nearest neighbour onto the HSI
grid) or a polygon layer (pixel centres inside a polygon, any CRS). Outside it the HSI is treated as nodata: labels
there are skipped and counted in the label report, representation statistics are sampled inside only, and the map,
confidence and probabilities are nodata outside. Windows at the mask edge see outside pixels as nodata.</p>"""


def mask_from_parameters(alg, parameters, context, feedback, raster_file: str):
    """The MASK parameter as an engine MaskSpec (polygons in the CRS of ``raster_file``), or None."""
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    from ..engine.jobs import MaskSpec
    from .layers import read_label_features

    if alg.parameterDefinition("MASK") is None:
        return None
    layer = alg.parameterAsLayer(parameters, "MASK", context)
    if layer is None:
        return None
    if isinstance(layer, QgsRasterLayer):
        return MaskSpec(layer.name(), raster=raster_path(alg, parameters, "MASK", context))
    if not isinstance(layer, QgsVectorLayer):
        raise QgsProcessingException("MASK: give a raster or a polygon layer.")
    mask_geometry_problem(layer)
    crs = QgsRasterLayer(raster_file, "hsi", "gdal").crs()
    geoms = read_label_features(layer, None, crs, feedback, layer_name=layer.name())
    if not geoms.polygons_wkb:
        raise QgsProcessingException(f"MASK: the layer '{layer.name()}' holds no polygon: give polygons or a raster.")
    return MaskSpec(layer.name(), polygons_wkb=list(geoms.polygons_wkb))


def mask_geometry_problem(layer) -> None:
    """MASK needs areas: a line or point layer is refused by its kind before any feature is read."""
    from qgis.core import QgsWkbTypes

    from .layers import no_geometry_problem

    kind = QgsWkbTypes.geometryType(layer.wkbType())
    if kind in (QgsWkbTypes.LineGeometry, QgsWkbTypes.PointGeometry):
        what = "lines" if kind == QgsWkbTypes.LineGeometry else "points"
        raise QgsProcessingException(
            f"MASK: the layer '{layer.name()}' holds {what}; MASK needs polygons (or a raster, nonzero = inside): "
            f"give a polygon layer, or turn the {what} into polygons first (e.g. Vector > Geoprocessing Tools > "
            "Buffer).")
    no_geometry_problem(layer, layer.name())


BACKBONE_SOURCES = ["auto", "untrained", "prior", "imagenet", "scene"]
BACKBONE_SOURCE_LABELS = [
    "Auto: the ImageNet ADM if installed, else the most accurate measured (see help)",
    "Untrained compact ADM (random, seeded weights; no training)",
    "Shipped remote-sensing prior (compact ADM pretrained offline, FiLM-adapted to the scene)",
    "ImageNet ADM checkpoint (BACKBONE, $DIFFLC_BACKBONE or the download cache)",
    "Compact network trained from scratch on the scene (COMPACT_STEPS)"]


def add_backbone_parameters(alg) -> None:
    alg.addParameter(QgsProcessingParameterFile(
        "BACKBONE", "ImageNet ADM 64x64 checkpoint (64x64_diffusion.pt; empty = found automatically, else the "
        "shipped prior)", optional=True, fileFilter="PyTorch checkpoint (*.pt *.pth *.safetensors)"))
    _advanced(alg, QgsProcessingParameterEnum("BACKBONE_SOURCE", "Pretrained network (Stage A starts from)",
                                              BACKBONE_SOURCE_LABELS, defaultValue=0))
    alg.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
    alg.addParameter(QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer,
                                                  defaultValue=0, minValue=0))


def _advanced(alg, param) -> None:
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    alg.addParameter(param)


def add_method_parameters(alg, adaptation: bool = True, features: bool = True) -> None:
    d = PipelineSettings()
    integer = QgsProcessingParameterNumber.Integer
    _advanced(alg, QgsProcessingParameterString(
        "RGB_BANDS", "Pseudo-RGB bands (1-based 'r,g,b'; empty = nearest 640/550/460 nm)", optional=True))
    _advanced(alg, QgsProcessingParameterEnum("SAR_UNITS", "SAR values are", SAR_DB, defaultValue=0))
    if adaptation:
        _advanced(alg, QgsProcessingParameterNumber(
            "ADAPT_STEPS", "FiLM adaptation steps (-1 = the network's default: 2000 ImageNet, 100 shipped prior; "
            "0 = no adaptation)", integer, -1, minValue=-1))
        _advanced(alg, QgsProcessingParameterEnum("ADAPT_PRESET", "Adaptation preset (paper lr 3e-3, public code "
                                                  "lr 1e-4)", PRESETS, defaultValue=0))
        _advanced(alg, QgsProcessingParameterNumber(
            "ADAPT_BATCH", "Adaptation batch size (0 = the network's default: 32 ImageNet, 8 shipped prior)",
            integer, 0, minValue=0))
        budget = d.adaptation.time_budget_s
        _advanced(alg, QgsProcessingParameterNumber(
            "ADAPT_TIME_BUDGET", "Time budget of auto's FiLM adaptation, minutes (from one timed step: all steps if "
            "they fit, else fewer, else the untrained network; 0 = no limit)", QgsProcessingParameterNumber.Double,
            (budget or 0.0) / 60.0, minValue=0.0))
        _advanced(alg, QgsProcessingParameterNumber(
            "COMPACT_STEPS", "Training steps of the compact backbone (no checkpoint)", integer,
            d.backbone.compact_steps, minValue=1))
    if features:
        _advanced(alg, QgsProcessingParameterString(
            "TIMESTEPS", "Diffusion timesteps for the features (comma separated)",
            ",".join(str(t) for t in d.features.timesteps)))
        _advanced(alg, QgsProcessingParameterString(
            "BLOCKS", "Decoder blocks for the features (comma separated; empty = the backbone's default)",
            optional=True))
        _advanced(alg, QgsProcessingParameterEnum("HEAD", "Pixel classifier head", HEAD_LABELS,
                                                  defaultValue=HEADS.index(d.head.kind)))
        _advanced(alg, QgsProcessingParameterNumber("TREES", "Trees (Random Forest head)", integer, d.head.trees,
                                                    minValue=10, maxValue=5000))
        _advanced(alg, QgsProcessingParameterBoolean(
            "FEATURE_CHECK", "Forest head: drop the diffusion features if the training labels show they hurt "
            "(out-of-bag test)", defaultValue=d.head.feature_check_p > 0))
        _advanced(alg, QgsProcessingParameterEnum("FUSION", "Feature fusion (MLP head)", FUSIONS,
                                                  defaultValue=FUSIONS.index(d.features.fusion)))
        _advanced(alg, QgsProcessingParameterBoolean(
            "SPECTRUM", "Give the head each pixel's own bands too (spectral-spatial fusion)",
            defaultValue=d.head.include_spectrum))
        _advanced(alg, QgsProcessingParameterBoolean(
            "CLASS_WEIGHTS", "Weight classes by inverse frequency (raises rare-class recall, may lower OA)",
            defaultValue=d.head.class_weighting))
        _advanced(alg, QgsProcessingParameterNumber("STRIDE", "Tile stride (pixels; patches are 64x64)", integer,
                                                    d.tiles.stride, minValue=8, maxValue=64))
        _advanced(alg, QgsProcessingParameterEnum(
            "REGULARISER", "Spatial regularisation of the class probabilities (strength chosen on the training labels)",
            REGULARISER_CHOICES, defaultValue=REGULARISER_VALUES.index(d.spatial.method)))
        _advanced(alg, QgsProcessingParameterNumber(
            "SMOOTHING", "Fixed Gaussian sigma in pixels instead (-1 = use REGULARISER; 0 = no regularisation)",
            QgsProcessingParameterNumber.Double, -1.0, minValue=-1.0, maxValue=10.0))
        _advanced(alg, QgsProcessingParameterEnum(
            "SELF_TRAINING", "Self-training on the scene's unlabelled pixels", SELF_TRAINING_CHOICES,
            defaultValue=SELF_TRAINING_VALUES.index(d.selftrain.mode)))


STAGE_A_HELP = """<p><b>Stage A &mdash; the network</b> (<b>BACKBONE_SOURCE</b>, default <i>auto</i>). <i>auto</i>
uses the ImageNet ADM 64&times;64 checkpoint when one is installed (<b>BACKBONE</b>,
<code>$DIFFLC_BACKBONE</code> or the cache filled by <i>Download backbone</i>): the frozen network is adapted to
the scene's modalities through its own FiLM path only (UniDiff: the modality enters as the class label; only
<i>label_emb</i> + the decoder's <i>emb_layers</i> train with the denoising objective on random 64&times;64
patches, pseudo-RGB in every batch; 2000 steps at batch 32 as in the paper &mdash; hours on a CPU, use a GPU).
One step is timed first and the whole run's estimate logged; <i>auto</i> keeps to <b>ADAPT_TIME_BUDGET</b> (30 min):
all steps when they fit, else as many as fit (at least a tenth of them), else the untrained compact network below,
saying why. An explicit <i>imagenet</i>, a <b>BACKBONE</b> file or <b>ADAPT_STEPS</b> runs as asked.
Without it, <i>auto</i> uses an <b>untrained</b>, seeded compact ADM: on the three real test scenes it measured
more accurate on average than the remote-sensing prior that ships with the plugin (Salinas-A +2.9 OA, EnMAP level,
flood chip &minus;0.4) and costs no training. The shipped prior (a compact ADM pretrained offline on real Sentinel-2, Landsat-8, LEVIR-CD
and Sentinel-1/ERS-2 SAR scenes, FiLM-adapted for 100 steps) and a compact network trained from scratch on the
scene (<b>COMPACT_STEPS</b>) are the other choices. The log says which network was used and why.</p>"""

REGULARISER_VALUES = ("guided", "gaussian", "none")
REGULARISER_CHOICES = ["edge-aware (guided filter)", "Gaussian", "off"]
SELF_TRAINING_VALUES = ("auto", "on", "off")
SELF_TRAINING_CHOICES = ["auto (when the training labels show it helps)", "on", "off"]

SMOOTHING_HELP = """<p><b>Choices made on your labels</b>. Whether the diffusion features stay
(<b>FEATURE_CHECK</b>), the spatial regularisation and self-training are decided on the training labels only, by
one rule: the <i>mean per-class recall</i> (every class counts the same, so an option that erases a rare class
loses) of held-out training labels over repeated folds, and an option that is not better by more than one
standard error is not taken (the one-standard-error rule). The log and the training report show every score.</p>
<p><b>Spatial regularisation</b> (<b>REGULARISER</b>, <b>SMOOTHING</b>): the class-probability map is filtered
before the argmax, which removes isolated misclassified pixels. <i>Edge-aware</i> (default) is the guided filter
(He et al., TPAMI 2013) steered by the scene's first three principal components, so a boundary the image shows is
kept while noise inside a field is averaged; its radius (1&ndash;4 px) and edge threshold are chosen on the
training labels, or off. <i>Gaussian</i> chooses a width &sigma; (0.7&ndash;3 px) the same way. Nodata never
votes. A positive <b>SMOOTHING</b> fixes a Gaussian &sigma;; 0 switches regularisation off. The choice is stored in
the model file.</p>
<p><b>Self-training</b> (<b>SELF_TRAINING</b>): the forest labels the pixels of 16 random windows of the scene it is
surest of &mdash; the same number per class, only where the 8 neighbours agree &mdash; and is grown again on your
labels plus those (one or two rounds). <i>auto</i> does this only when it measurably helps on held-out training
labels. A class that no pixel of the map receives is named in the log.</p>"""

CONNECTIVITY = ["4 (edges)", "8 (edges and corners)"]


def add_cleanup_parameters(alg, advanced: bool = True) -> None:
    """SIEVE_PIXELS, SIEVE_AREA, CONNECTIVITY, MAJORITY_RADIUS: the same clean-up in cleanmap, classify and
    trainandclassify (advanced there; 0 = off)."""
    add = (lambda p: _advanced(alg, p)) if advanced else alg.addParameter
    integer, double = QgsProcessingParameterNumber.Integer, QgsProcessingParameterNumber.Double
    add(QgsProcessingParameterNumber(
        "MAJORITY_RADIUS", "Clean-up: majority filter radius in pixels ((2r+1)x(2r+1) window; 0 = off)", integer, 0,
        minValue=0, maxValue=50))
    add(QgsProcessingParameterNumber(
        "SIEVE_PIXELS", "Clean-up: minimum mapping unit in pixels (smaller patches merge into their largest "
        "neighbour; 0 = off)", integer, 0, minValue=0))
    add(QgsProcessingParameterNumber(
        "SIEVE_AREA", "Clean-up: minimum mapping unit as an area in hectares (converted to pixels; 0 = off)", double,
        0.0, minValue=0.0))
    add(QgsProcessingParameterEnum("CONNECTIVITY", "Clean-up: pixels of a patch connect by", CONNECTIVITY,
                                   defaultValue=0))


def cleanup_from_parameters(alg, parameters, context):
    """The clean-up parameters as one engine CleanupSettings."""
    from ..engine.settings import CleanupSettings

    return CleanupSettings(
        sieve_pixels=alg.parameterAsInt(parameters, "SIEVE_PIXELS", context),
        sieve_area_ha=alg.parameterAsDouble(parameters, "SIEVE_AREA", context),
        connectivity=(4, 8)[alg.parameterAsEnum(parameters, "CONNECTIVITY", context)],
        majority_radius=alg.parameterAsInt(parameters, "MAJORITY_RADIUS", context))


CLEANUP_HELP = """<p><b>Clean-up</b> (optional, advanced; the same as <i>Clean up a classified map</i>): a
majority filter (<b>MAJORITY_RADIUS</b>) and then a minimum mapping unit (<b>SIEVE_PIXELS</b> or
<b>SIEVE_AREA</b> in hectares, <b>CONNECTIVITY</b> 4 or 8) run on the complete map before it is moved into place;
nodata never changes. The confidence raster stays the classifier's.</p>"""


def parse_ints(text: str, name: str) -> Optional[Tuple[int, ...]]:
    """The one reader of integer lists typed into a dialog ('200, 400', '3;4', '30 20 10'); None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s;]+", text) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise QgsProcessingException(f"{name} must be whole numbers separated by commas, got '{text}'.")


SETTINGS_PARAMETERS = ("BACKBONE", "RGB_BANDS", "ADAPT_STEPS", "TIMESTEPS")  # one per group below


def declares_settings(alg) -> bool:
    return any(alg.parameterDefinition(name) is not None for name in SETTINGS_PARAMETERS)


def settings_from_parameters(alg, parameters, context) -> PipelineSettings:
    """Build the one settings object from whatever shared parameters ``alg`` declared."""
    s = PipelineSettings()
    has = lambda name: alg.parameterDefinition(name) is not None  # noqa: E731
    if has("BACKBONE"):
        path = alg.parameterAsFile(parameters, "BACKBONE", context)
        s.backbone.checkpoint = path or None
        if has("BACKBONE_SOURCE"):
            s.backbone.source = BACKBONE_SOURCES[alg.parameterAsEnum(parameters, "BACKBONE_SOURCE", context)]
        s.device = DEVICES[alg.parameterAsEnum(parameters, "DEVICE", context)]
        s.seed = alg.parameterAsInt(parameters, "SEED", context)
    if has("RGB_BANDS"):
        rgb = parse_ints(alg.parameterAsString(parameters, "RGB_BANDS", context), "RGB_BANDS")
        if rgb is not None and (len(rgb) != 3 or min(rgb) < 1):
            raise QgsProcessingException(f"RGB_BANDS needs exactly three band numbers from 1 up (red, green, blue), "
                                         f"got {','.join(map(str, rgb))}.")
        s.representation.rgb_bands = rgb
        units = SAR_DB[alg.parameterAsEnum(parameters, "SAR_UNITS", context)]
        s.representation.sar_db = None if units == "auto" else units == "dB"
    if has("ADAPT_STEPS"):
        steps = alg.parameterAsInt(parameters, "ADAPT_STEPS", context)
        s.adaptation.steps = None if steps < 0 else steps
        s.adaptation.preset = PRESETS[alg.parameterAsEnum(parameters, "ADAPT_PRESET", context)]
        s.adaptation.batch_size = alg.parameterAsInt(parameters, "ADAPT_BATCH", context) or None
        if has("ADAPT_TIME_BUDGET"):
            s.adaptation.time_budget_s = alg.parameterAsDouble(parameters, "ADAPT_TIME_BUDGET", context) * 60.0 or None
        s.backbone.compact_steps = alg.parameterAsInt(parameters, "COMPACT_STEPS", context)
    if has("TIMESTEPS"):
        timesteps = parse_ints(alg.parameterAsString(parameters, "TIMESTEPS", context), "TIMESTEPS")
        last = DIFFUSION_STEPS - 1
        if not timesteps or any(t < 0 or t > last for t in timesteps):
            raise QgsProcessingException(f"TIMESTEPS must be one or more integers between 0 and {last}, e.g. '200'.")
        s.features.timesteps = timesteps
        s.features.blocks = parse_ints(alg.parameterAsString(parameters, "BLOCKS", context), "BLOCKS")
        s.head.kind = HEADS[alg.parameterAsEnum(parameters, "HEAD", context)]
        s.head.trees = alg.parameterAsInt(parameters, "TREES", context)
        if not alg.parameterAsBool(parameters, "FEATURE_CHECK", context):
            s.head.feature_check_p = 0.0
        s.features.fusion = FUSIONS[alg.parameterAsEnum(parameters, "FUSION", context)]
        s.head.include_spectrum = alg.parameterAsBool(parameters, "SPECTRUM", context)
        s.head.class_weighting = alg.parameterAsBool(parameters, "CLASS_WEIGHTS", context)
        s.tiles.stride = alg.parameterAsInt(parameters, "STRIDE", context)
        sigma = alg.parameterAsDouble(parameters, "SMOOTHING", context)
        s.spatial.sigma = None if sigma < 0 else sigma
        s.spatial.method = REGULARISER_VALUES[alg.parameterAsEnum(parameters, "REGULARISER", context)]
        s.selftrain.mode = SELF_TRAINING_VALUES[alg.parameterAsEnum(parameters, "SELF_TRAINING", context)]
    return s


def raster_path(alg, parameters, name: str, context, optional: bool = False) -> Optional[str]:
    """The file behind a raster parameter; GDAL needs a file, not an in-memory provider."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if optional:
            return None
        raise QgsProcessingException(f"{name}: no raster layer given.")
    source = layer.source()
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{name}: layer '{layer.name()}' is not a file-based raster ({layer.providerType()}); "
            "save it as a GeoTIFF first.")
    return source


def training_request(alg, parameters, context, feedback, model_path: Optional[str], report: Optional[str],
                     adapted: Optional[str] = None):
    """The settings, rasters and labels of a training algorithm as one engine TrainRequest."""
    from ..engine.jobs import TrainRequest
    from .layers import read_labels

    settings = settings_from_parameters(alg, parameters, context)
    hsi = raster_path(alg, parameters, "HSI", context)
    sar = raster_path(alg, parameters, "SAR", context, optional=True)
    labels = read_labels(alg, parameters, context, feedback, hsi)
    mask = mask_from_parameters(alg, parameters, context, feedback, hsi)
    return TrainRequest(hsi, sar, labels, settings, model_path, report, adapted, mask)

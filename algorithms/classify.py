"""difflc:classify — a trained model file + rasters → styled classified raster (+ confidence)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
)

from .base import DiffLcAlgorithm, sentence
from .params import (CLEANUP_HELP, DEVICES, MASK_HELP, add_cleanup_parameters, add_input_parameters, add_model_input,
                     cleanup_from_parameters, mask_from_parameters, raster_path)

HELP = """<p>Classifies a scene with a model file written by <i>Train classifier</i> or <i>Train and
classify</i>. The stored representation statistics (band choice, PCA basis, percentile stretches), backbone
and head are applied unchanged, so another scene of the same sensor gets exactly the training transform.</p>
<p>The rasters must match the model: the same number of HSI bands (wavelengths within 5 nm when both carry
them) and SAR given exactly when the model was trained with SAR; otherwise the run stops and says what
differs. A model built on the ImageNet checkpoint needs that checkpoint (<b>BACKBONE</b>, verified by its
fingerprint). The scene is streamed in 64&times;64 tiles; memory does not grow with its size.</p>
<p><b>Outputs</b>: the classified map, optionally the confidence (winning class probability, nodata &minus;1) and
<b>PROBABILITIES</b>: one Float32 band per class, named after it, holding the smoothed class probabilities whose
argmax is the map (before any clean-up); nodata &minus;1 where the map is nodata.</p>""" + MASK_HELP + CLEANUP_HELP


class Classify(DiffLcAlgorithm):
    NAME = "classify"
    DISPLAY_NAME = "Classify with a trained model"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_model_input(self)
        add_input_parameters(self, labels=False, mask=True)
        self.addParameter(QgsProcessingParameterFile(
            "BACKBONE", "ImageNet ADM checkpoint (only for models built on it; empty = path stored in the model)",
            optional=True, fileFilter="PyTorch checkpoint (*.pt *.pth *.safetensors)"))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classified raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "CONFIDENCE", "Confidence raster (max class probability)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITIES", "Class probabilities (one Float32 band per class)", optional=True,
            createByDefault=False))
        add_cleanup_parameters(self)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """The model file is read (metadata only) before any work: a folder, a damaged file or a model of another
        kind (a change model) is refused here, naming what it is and where it belongs."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        from ..engine.errors import UserInputError
        from ..engine.jobs.bundle import read_bundle_metadata

        try:
            read_bundle_metadata(self.parameterAsFile(parameters, "MODEL", context))
        except UserInputError as exc:
            return False, f"MODEL: {sentence(str(exc))}"
        return True, ""

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs

        model = self.parameterAsFile(parameters, "MODEL", context)
        hsi = raster_path(self, parameters, "HSI", context)
        sar = raster_path(self, parameters, "SAR", context, optional=True)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        probabilities = self.parameterAsOutputLayer(parameters, "PROBABILITIES", context) or None
        device = DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        checkpoint = self.parameterAsFile(parameters, "BACKBONE", context) or None
        cleanup = cleanup_from_parameters(self, parameters, context)
        mask = mask_from_parameters(self, parameters, context, feedback, hsi)
        result = jobs.classify(model, hsi, sar, output, confidence, self.progress_for(feedback),
                               device=device, checkpoint=checkpoint, cleanup=cleanup, probabilities=probabilities,
                               mask=mask)
        for name, count in result.class_pixels.items():
            feedback.pushInfo(f"{name}: {count} pixels")
        return {"OUTPUT": result.output, "CONFIDENCE": result.confidence, "PROBABILITIES": result.probabilities}

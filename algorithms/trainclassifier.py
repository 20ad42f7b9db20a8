"""difflc:trainclassifier — Stage B: features + pixel head on the labels → model file."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterFileDestination

from .base import DiffLcAlgorithm
from .params import (MASK_HELP, MODEL_FILTER, SMOOTHING_HELP, STAGE_A_HELP, add_backbone_parameters, add_input_parameters,
                     add_method_parameters, training_request)

HELP = """<p>Trains the pixel classifier and writes a self-describing model file (<code>.difflc</code>: a zip
of JSON metadata and safetensors weights, safe to load): classes with names and colours, input bands and
wavelengths, every representation statistic, feature settings, backbone identity, CRS, pixel size, seed and
versions. Use it with <i>Classify</i> on this or another scene of the same sensor.</p>
<p>With <b>ADAPTED</b> (from <i>Adapt backbone</i>) Stage A is not repeated; otherwise the backbone is prepared
here (see Stage A below). The head (<b>HEAD</b>) is a Random Forest on diffusion features + the pixel's bands by default (the most
accurate measured), or the UniDiff MLP. Validation metrics come from the training labels only (out-of-bag for
the forest, a stratified split for the MLP) and are logged (and written to <b>REPORT</b>).</p>
<p>For the forest head the report and log also say what each input is worth, on the training labels: the
out-of-bag OA of the final forest, a spatially blocked cross-validation OA (whole 32&times;32-pixel blocks of labels
held out together; mean &plusmn; sd over folds) and the permutation importance of each input group (diffusion
features per modality, HSI bands, SAR bands: the held-out OA drop when the group is shuffled).</p>""" + MASK_HELP + STAGE_A_HELP + \
    SMOOTHING_HELP


class TrainClassifier(DiffLcAlgorithm):
    NAME = "trainclassifier"
    DISPLAY_NAME = "Train classifier"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, mask=True)
        add_backbone_parameters(self)
        self.addParameter(QgsProcessingParameterFile(
            "ADAPTED", "Adapted backbone (from 'Adapt backbone'; optional)", optional=True,
            fileFilter="Adapted backbone (*.difflcbb)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "MODEL", "Model file", fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", "Training report", fileFilter="HTML (*.html *.htm);;JSON (*.json)", optional=True,
            createByDefault=False))
        add_method_parameters(self)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs

        model_path = self.parameterAsFileOutput(parameters, "MODEL", context)
        report = self.parameterAsFileOutput(parameters, "REPORT", context) or None
        adapted = self.parameterAsFile(parameters, "ADAPTED", context) or None
        request = training_request(self, parameters, context, feedback, model_path, report, adapted)
        trained = jobs.train(request, self.progress_for(feedback))
        return {"MODEL": trained.bundle, "REPORT": report, "VALIDATION_OA": trained.validation_oa}

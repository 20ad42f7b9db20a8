"""difflc:trainandclassify — the one-step run: labels + rasters → styled land-cover map (+ model, report)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
)

from .base import DiffLcAlgorithm
from .params import (CLEANUP_HELP, MASK_HELP, MODEL_FILTER, SMOOTHING_HELP, STAGE_A_HELP, add_backbone_parameters,
                     add_cleanup_parameters, add_input_parameters, add_method_parameters, cleanup_from_parameters,
                     training_request)

HELP = """<p>Trains on sparse labelled points (or polygons) and classifies the whole scene in one step.</p>
<ol>
<li>The HSI raster becomes a pseudo-RGB image (bands nearest 640/550/460 nm) and a PCA image (first three
components); the SAR raster a Pauli-style image (dB converted to linear). Statistics are fitted once and
stored in the model.</li>
<li>Stage A: the diffusion network (<b>BACKBONE_SOURCE</b>): by default the ImageNet ADM when installed, else a
seeded, untrained compact ADM (the most accurate measured here); a pretrained network (the ImageNet ADM or the
shipped remote-sensing prior) is adapted to these modalities through its FiLM path (below).</li>
<li>Per-pixel diffusion features (timestep &times; decoder block, every modality) plus, by default, the pixel's
own bands feed the pixel classifier (<b>HEAD</b>): by default a Random Forest (<b>TREES</b> = 500), validated
out-of-bag on the training labels; or the UniDiff MLP with a feature <b>FUSION</b>, validated on a
stratified split of the <i>training</i> labels.</li>
<li>The scene is classified in 64&times;64 windows (every <b>STRIDE</b> = 64 pixels), each pixel once, from the
window that holds it most centrally &mdash; the window its training features came from; streamed window by
window: memory does not grow with the scene; the probabilities are regularised spatially (below) before the
argmax.</li>
</ol>
<p><b>SAR</b> on another grid or CRS is resampled onto the HSI grid on the fly. Label points in any CRS are
transformed; points outside the raster or on nodata are reported and skipped; each class needs 2 usable
samples. Class names and colours come from the label layer's categorized style (else the class field).</p>
<p><b>Outputs</b>: classified GeoTIFF (Byte, nodata 0, colour table, category names, <code>.qml</code>
style), optional confidence raster (max class probability), optional <b>PROBABILITIES</b> (one Float32 band per
class, named after it: the smoothed probabilities whose argmax is the map; nodata &minus;1 like the confidence),
optional model file (<code>.difflc</code>,
reusable by <i>Classify</i>), optional training report (HTML or JSON: validation accuracy on held-out
training labels, with a spatially blocked cross-validation OA and the permutation importance of each input
group for the forest head). Use <i>Accuracy assessment</i> with independent reference data for map accuracy.</p>""" + \
    MASK_HELP + STAGE_A_HELP + SMOOTHING_HELP + CLEANUP_HELP


class TrainAndClassify(DiffLcAlgorithm):
    NAME = "trainandclassify"
    DISPLAY_NAME = "Train and classify (one step)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, mask=True)
        add_backbone_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classified raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "CONFIDENCE", "Confidence raster (max class probability)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITIES", "Class probabilities (one Float32 band per class)", optional=True,
            createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            "MODEL", "Model file", fileFilter=MODEL_FILTER, optional=True,
            createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", "Training report", fileFilter="HTML (*.html *.htm);;JSON (*.json)", optional=True,
            createByDefault=False))
        add_method_parameters(self)
        add_cleanup_parameters(self)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs

        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        probabilities = self.parameterAsOutputLayer(parameters, "PROBABILITIES", context) or None
        model_path = self.parameterAsFileOutput(parameters, "MODEL", context) or None
        report = self.parameterAsFileOutput(parameters, "REPORT", context) or None
        progress = self.progress_for(feedback)
        request = training_request(self, parameters, context, feedback, model_path, report)
        request.save = False  # no MODEL asked for: nothing to write; the model classifies from memory
        trained = jobs.train(request, progress.sub(0.0, 0.6))
        result = jobs.classify(trained.bundle, request.hsi, request.sar, output, confidence,
                               progress.sub(0.6, 1.0), device=request.settings.device,
                               cleanup=cleanup_from_parameters(self, parameters, context),
                               probabilities=probabilities, mask=request.mask, trained=trained)
        return {"OUTPUT": result.output, "CONFIDENCE": result.confidence, "PROBABILITIES": result.probabilities,
                "MODEL": model_path,
                "REPORT": report, "VALIDATION_OA": trained.validation_oa}

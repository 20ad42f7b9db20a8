"""difflc:applychangemodel — a supervised change model saved by difflc:detectchanges, applied to another pair.

Thin: parameters declared once (names shared with detectchanges), checked before any work, then one engine call
(``engine.jobs.detect_changes`` with ``apply_model``; the model is rebuilt by
``engine.tasks.changedetect.model_from_bundle``)."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterFile

from .base import DiffLcAlgorithm, sentence
from .detectchanges import (AFTER, BEFORE, CHANGE_MODEL_FILTER, DEVICE, MODEL, OUTPUT, REPORT, SCORE,
                            add_change_outputs, add_date_parameters, pair_problem)
from .params import CHANGE_MASK_HELP, DEVICES, add_mask_parameter, mask_from_parameters, raster_path

HELP = """<p>Maps change on a new pair of dates with a change model saved by <i>Detect changes</i> from a run
<b>with labels</b> (<b>MODEL</b>): the fit / predict split of the land-cover algorithms, for change. Everything
that defines the forest's inputs comes from the file: the representations, the diffusion network, the channel
statistics of the pair it was trained on and the forest itself, so no labels are needed here. <b>BEFORE</b> and
<b>AFTER</b> must have the band set the model was trained on (checked before any work); AFTER on another grid or
CRS is resampled onto the BEFORE grid. The score is P(change) and the map P &ge; 0.5, as in training.</p>
<p>A model saved without labels is refused: an unsupervised map is a threshold on its own pair's scores and does
not transfer (run <i>Detect changes</i> on the new pair instead). How well a model transfers depends on how
alike the pairs are (sensor, season, kind of change). Between the cities of the OSCD benchmark it transferred
poorly: F1 0.06&ndash;0.15 against 0.19&ndash;0.54 with the target's own few labels. Use it for pairs like the
training one (the same area or tile and season, a later date), and check it on a few labelled points of the new
pair with <i>Accuracy assessment</i>.</p>
<p><b>Outputs</b>: <b>OUTPUT</b> change map (Byte: 0 no change, 1 change, 255 nodata; category names, colours,
<code>.qml</code>), <b>SCORE</b> (Float32 P(change), NaN nodata) and <b>REPORT</b> (HTML or JSON), each written to a
temporary file and moved into place only when complete.</p>
""" + CHANGE_MASK_HELP


class ApplyChangeModel(DiffLcAlgorithm):
    NAME = "applychangemodel"
    DISPLAY_NAME = "Apply change model (two dates)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(MODEL, "Change model (saved by Detect changes with labels)",
                                                     fileFilter=CHANGE_MODEL_FILTER))
        add_date_parameters(self)
        add_mask_parameter(self, "detect changes only inside")
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", DEVICES, defaultValue=0))
        add_change_outputs(self, "Change probability (Float32)", model=False)

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        problem = pair_problem(self, parameters, context)
        if problem:
            return False, problem
        from ..engine.errors import UserInputError
        from ..engine.jobs.bundle import read_bundle_metadata
        from ..engine.tasks.changedetect import MODEL_FORMAT, require_supervised

        path = self.parameterAsFile(parameters, MODEL, context)
        try:
            metadata = read_bundle_metadata(path, formats=(MODEL_FORMAT,))  # another kind: says which and where
            require_supervised(metadata)
        except UserInputError as exc:  # a damaged or foreign file, or an unsupervised model
            return False, f"MODEL: {sentence(str(exc))}"
        before = self.parameterAsRasterLayer(parameters, BEFORE, context)
        trained = ((metadata.get("inputs") or {}).get("before") or {}).get("band_count")
        if before is not None and trained is not None and before.bandCount() != int(trained):
            return False, (f"BEFORE '{before.name()}' has {before.bandCount()} band(s) and the change model was "
                           f"trained on {trained}: apply it to rasters of the sensor and band set it was trained on.")
        return True, ""

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine import jobs
        from ..engine.tasks.changedetect import ChangeSettings
        from ..engine.settings import PipelineSettings

        before = raster_path(self, parameters, BEFORE, context)
        after = raster_path(self, parameters, AFTER, context)
        settings = ChangeSettings(pipeline=PipelineSettings(
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)]))
        request = jobs.ChangeRequest(
            before, after, self.parameterAsOutputLayer(parameters, OUTPUT, context), settings,
            score=self.parameterAsOutputLayer(parameters, SCORE, context) or None,
            report_path=self.parameterAsFileOutput(parameters, REPORT, context) or None,
            mask=mask_from_parameters(self, parameters, context, feedback, before),
            apply_model=self.parameterAsFile(parameters, MODEL, context))
        out = jobs.detect_changes(request, self.progress_for(feedback))
        return {OUTPUT: out.output, SCORE: out.score, REPORT: request.report_path,
                "CHANGED_PIXELS": out.result.changed_pixels}

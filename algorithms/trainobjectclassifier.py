"""difflc:trainobjectclassifier — labelled polygons + rasters → object model file (.difflc)."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber

from .base import DiffLcAlgorithm
from .objectparams import (MODEL, OBJECT_HELP, REPORT, add_model_output, add_polygons, check_layers,
                           object_train_request)
from .params import STAGE_A_HELP, add_backbone_parameters, add_input_parameters, add_method_parameters

HELP = """<p>Trains a classifier of whole polygons (objects) &mdash; field parcels, building footprints, forest
stands, or the objects of <i>Segment objects</i> &mdash; and writes an object model file (<code>.difflc</code>,
JSON + safetensors, nothing pickled) for <i>Classify objects</i> on this or another layer and scene of the same
sensor (band identity is checked as for pixel models).</p>
<p><b>Labels</b>: a class field of the polygons (<b>CLASS_FIELD</b>, filled on some polygons, NULL or empty
elsewhere) or label points (<b>LABEL_POINTS</b> + <b>POINTS_FIELD</b>: the majority class of the points inside a
polygon; ties are left unlabelled, ties and conflicts are reported). Each class needs 2 labelled polygons with
valid pixels. Class names and colours come from the layer's categorized style on the class field.</p>""" + \
    OBJECT_HELP + STAGE_A_HELP


class TrainObjectClassifier(DiffLcAlgorithm):
    NAME = "trainobjectclassifier"
    DISPLAY_NAME = "Train object classifier"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, labels=False)
        add_polygons(self, labels=True)
        add_backbone_parameters(self)
        add_model_output(self, optional=False)
        add_method_parameters(self)
        self.addOutput(QgsProcessingOutputNumber("VALIDATION_OA", "Out-of-bag OA on the labelled objects"))

    def check_settings(self, parameters, context) -> None:
        super().check_settings(parameters, context)
        check_layers(self, parameters, context, labels=True)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine.jobs.objects import train_objects

        model = self.parameterAsFileOutput(parameters, MODEL, context)
        report = self.parameterAsFileOutput(parameters, REPORT, context) or None
        request = object_train_request(self, parameters, context, model, report)
        trained = train_objects(request, self.progress_for(feedback))
        return {MODEL: trained.bundle, REPORT: report, "VALIDATION_OA": trained.validation_oa}

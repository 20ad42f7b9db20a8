"""difflc:trainandclassifyobjects — the one-step object route: labelled polygons → every polygon classified."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber

from .base import DiffLcAlgorithm
from .objectparams import (MODEL, OBJECT_HELP, OUTPUT, REPORT, add_model_output, add_output, add_polygons,
                           check_layers, gpkg_output_path, object_train_request)
from .params import STAGE_A_HELP, add_backbone_parameters, add_input_parameters, add_method_parameters

HELP = """<p>Trains on the labelled polygons and classifies every polygon of the same layer in one step (the
pixels are pooled once): <i>Train object classifier</i> then <i>Classify objects</i>, without writing the model
unless <b>MODEL</b> is given. Labels: a class field of the polygons (<b>CLASS_FIELD</b>, NULL or empty on the
polygons to classify) or label points (<b>LABEL_POINTS</b>, majority per polygon).</p>
<p>Worked example: your parcels with the crop type filled in on a few of them &rarr; every parcel classified; or
an image &rarr; <i>Segment objects</i> &rarr; a few objects labelled (or label points) &rarr; every object
classified.</p>""" + OBJECT_HELP + STAGE_A_HELP


class TrainAndClassifyObjects(DiffLcAlgorithm):
    NAME = "trainandclassifyobjects"
    DISPLAY_NAME = "Train and classify objects (one step)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_input_parameters(self, labels=False)
        add_polygons(self, labels=True)
        add_backbone_parameters(self)
        add_output(self, "Classified polygons (GeoPackage)")
        add_model_output(self, optional=True)
        add_method_parameters(self)
        self.addOutput(QgsProcessingOutputNumber("VALIDATION_OA", "Out-of-bag OA on the labelled objects"))
        self.addOutput(QgsProcessingOutputNumber("NULL_OBJECTS", "Polygons left without a class"))

    def check_settings(self, parameters, context) -> None:
        super().check_settings(parameters, context)
        check_layers(self, parameters, context, labels=True)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine.jobs.objects import classify_objects, train_objects

        output = gpkg_output_path(self, parameters, context)
        model = self.parameterAsFileOutput(parameters, MODEL, context) or None
        report = self.parameterAsFileOutput(parameters, REPORT, context) or None
        progress = self.progress_for(feedback)
        request = object_train_request(self, parameters, context, model, report)
        request.save = False
        trained = train_objects(request, progress.sub(0.0, 0.5))
        result = classify_objects(None, request.hsi, request.sar, request.polygons, output, progress.sub(0.5, 1.0),
                                  device=request.settings.device, trained=trained)
        for name, count in result.class_objects.items():
            feedback.pushInfo(f"{name}: {count} polygons")
        return {OUTPUT: result.output, MODEL: model, REPORT: report, "VALIDATION_OA": trained.validation_oa,
                "NULL_OBJECTS": result.null_objects}

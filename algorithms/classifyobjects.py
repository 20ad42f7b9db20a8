"""difflc:classifyobjects — an object model + rasters + polygons → a styled copy of the polygons with classes."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterEnum, QgsProcessingParameterFile

from .base import DiffLcAlgorithm, sentence
from .objectparams import (MODEL, OBJECT_HELP, OBJECT_MODEL_FILTER, OUTPUT, add_output, add_polygons, check_layers,
                           gpkg_output_path, polygon_input)
from .params import DEVICES, add_input_parameters, raster_path

HELP = """<p>Classifies every polygon of a layer with an object model from <i>Train object classifier</i> or
<i>Train and classify objects</i>. The stored representations, network and head are applied unchanged; the rasters
must have the model's bands (and SAR exactly when it was trained with SAR).</p>
<p><b>Output</b>: a copy of the polygon layer (its CRS, geometries and fields) in a GeoPackage, with
<code>class</code> (the class value), <code>class_name</code>, <code>confidence</code> (the winning class
probability), one <code>p_&lt;class&gt;</code> field per class, <code>obj_pixels</code> (valid pixels pooled) and
<code>obj_note</code> (<i>subpixel</i>, <i>no data</i>, <i>outside the raster or empty</i>), styled by a
categorized renderer with the training legend's names and colours: stored in the GeoPackage as its default style
and as a <code>.qml</code> beside it. Written to a temporary file and moved into place when complete.</p>""" + \
    OBJECT_HELP


class ClassifyObjects(DiffLcAlgorithm):
    NAME = "classifyobjects"
    DISPLAY_NAME = "Classify objects (polygons) with an object model"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(MODEL, "Object model file", fileFilter=OBJECT_MODEL_FILTER))
        add_input_parameters(self, labels=False)
        add_polygons(self, labels=False)
        self.addParameter(QgsProcessingParameterFile(
            "BACKBONE", "ImageNet ADM checkpoint (only for models built on it; empty = path stored in the model)",
            optional=True, fileFilter="PyTorch checkpoint (*.pt *.pth *.safetensors)"))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        add_output(self, "Classified polygons (GeoPackage)")
        self.addOutput(QgsProcessingOutputNumber("NULL_OBJECTS", "Polygons left without a class"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """The model file's kind is read (metadata only) before any work: a pixel model or a change model is refused
        here, naming what it is and where it belongs."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        from ..engine.errors import UserInputError
        from ..engine.jobs.bundle import read_bundle_metadata
        from ..engine.tasks.objects import OBJECT_FORMAT

        try:
            read_bundle_metadata(self.parameterAsFile(parameters, MODEL, context), formats=(OBJECT_FORMAT,))
        except UserInputError as exc:
            return False, f"{MODEL}: {sentence(str(exc))}"
        return True, ""

    def check_settings(self, parameters, context) -> None:
        super().check_settings(parameters, context)
        check_layers(self, parameters, context, labels=False)

    def process(self, parameters, context, feedback):
        self.require_torch()
        from ..engine.jobs.objects import classify_objects

        output = gpkg_output_path(self, parameters, context)
        result = classify_objects(self.parameterAsFile(parameters, MODEL, context),
                                  raster_path(self, parameters, "HSI", context),
                                  raster_path(self, parameters, "SAR", context, optional=True),
                                  polygon_input(self, parameters, context, with_field=False), output,
                                  self.progress_for(feedback),
                                  device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                                  checkpoint=self.parameterAsFile(parameters, "BACKBONE", context) or None)
        for name, count in result.class_objects.items():
            feedback.pushInfo(f"{name}: {count} polygons")
        return {OUTPUT: result.output, "NULL_OBJECTS": result.null_objects}

"""difflc:classifymany — one model, many scenes, spread over Dask workers (engine.jobs.batch)."""
from __future__ import annotations

import multiprocessing
import os
import sys

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .base import DiffLcAlgorithm, sentence
from .install import PLUGIN_DIR, qgis_python_executable, read_pins
from .params import DEVICES, add_model_input

HELP = """<p>Classifies many scenes with one model file, each exactly as <i>Classify with a trained model</i>
would (the same code; the maps are byte-identical), spread over <a href="https://distributed.dask.org">Dask</a>
workers: by default <b>WORKERS</b> processes on this computer, or the workers of a running Dask cluster whose
scheduler address you give in <b>DASK_SCHEDULER</b> (e.g. <code>tcp://10.0.0.5:8786</code>; WORKERS is then
ignored). Workers of a remote cluster need the same plugin install (the folder that holds
<code>diffusion_landcover</code> on their PYTHONPATH; the scheduler needs none) and must read the inputs and write
the output folder under the same paths; a batch whose workers cannot import the plugin is refused before any
work.</p>
<p><b>Inputs</b>: HSI rasters in <b>INPUTS</b> and/or every file matching <b>PATTERN</b> in <b>INPUT_FOLDER</b>.
The model must not need SAR (one HSI per scene). <b>Outputs</b> in <b>OUTPUT_FOLDER</b>, named after each input:
<code>&lt;name&gt;_classes.tif</code> with its <code>.qml</code> style, and with <b>CONFIDENCE</b>
<code>&lt;name&gt;_confidence.tif</code>. A scene's outputs appear only once it is complete. A scene that fails
is tried once more, then reported with its error; the others go on. Cancel stops the workers and leaves no partial
file.</p>"""


def batch_install_command() -> str:
    pins = read_pins(os.path.join(PLUGIN_DIR, "requirements", "batch.txt")) or {
        "dask": "2026.8.0", "distributed": "2026.8.0"}
    return f"{qgis_python_executable()} -m pip install " + " ".join(f"{k}=={v}" for k, v in pins.items())


def require_batch() -> None:
    """Dask is imported only here, when a batch is asked for (qgis_process loads every provider each call)."""
    try:
        import dask  # noqa: F401, PLC0415
        import distributed  # noqa: F401, PLC0415
    except ImportError as exc:
        raise QgsProcessingException(f"Dask is not installed in the Python that QGIS runs ({exc}). Install it "
                                     f"with:\n    {batch_install_command()}\nthen restart QGIS.") from exc


def _workers_use_python() -> None:
    """Local workers are spawned with ``sys.executable``, which inside QGIS is the QGIS binary: use its python."""
    exe = sys.executable or ""
    if not os.path.basename(exe).lower().startswith("python"):
        multiprocessing.set_executable(qgis_python_executable())


class ClassifyMany(DiffLcAlgorithm):
    NAME = "classifymany"
    DISPLAY_NAME = "Classify many scenes (Dask)"
    HELP = HELP
    NEEDS_TORCH = True

    def initAlgorithm(self, config=None):  # noqa: N802
        add_model_input(self)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "INPUTS", "HSI rasters", QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "INPUT_FOLDER", "Folder of HSI rasters (optional)", behavior=QgsProcessingParameterFile.Folder,
            optional=True))
        self.addParameter(QgsProcessingParameterString("PATTERN", "File pattern in the folder", defaultValue="*.tif"))
        self.addParameter(QgsProcessingParameterNumber(
            "WORKERS", "Local worker processes", QgsProcessingParameterNumber.Integer, defaultValue=2, minValue=1))
        self.addParameter(QgsProcessingParameterString(
            "DASK_SCHEDULER", "Dask scheduler address (empty = local workers)", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            "CONFIDENCE", "Also write a confidence raster per scene", defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.addOutput(QgsProcessingOutputMultipleLayers("OUTPUTS", "Classified maps"))
        self.addOutput(QgsProcessingOutputNumber("DONE", "Scenes classified"))
        self.addOutput(QgsProcessingOutputNumber("FAILED", "Scenes that failed"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            require_batch()
            self._plan(parameters, context)
        except QgsProcessingException as exc:
            return False, str(exc)
        except ValueError as exc:  # the engine's UserInputError family
            return False, sentence(str(exc))
        return True, ""

    def _inputs(self, parameters, context):
        """Raster files from INPUTS (refusing one GDAL cannot open) and the INPUT_FOLDER, if any."""
        from osgeo import gdal

        paths = []
        for value in parameters.get("INPUTS") or []:
            if isinstance(value, str) and os.path.isfile(value):
                paths.append(value)
        for layer in self.parameterAsLayerList(parameters, "INPUTS", context):
            if layer.providerType() != "gdal":
                raise QgsProcessingException(f"INPUTS: layer '{layer.name()}' is not a file-based raster "
                                             f"({layer.providerType()}); save it as a GeoTIFF first.")
            if layer.source() not in paths:
                paths.append(layer.source())
        folder = self.parameterAsFile(parameters, "INPUT_FOLDER", context)
        if folder:
            if not os.path.isdir(folder):
                raise QgsProcessingException(f"INPUT_FOLDER: {folder} is not a folder.")
            paths.append(folder)
        if not paths:
            raise QgsProcessingException("give rasters in INPUTS and/or a folder in INPUT_FOLDER.")
        for path in paths:
            if os.path.isfile(path) and gdal.OpenEx(path, gdal.OF_RASTER) is None:
                raise QgsProcessingException(f"INPUTS: {path} is not a raster GDAL can read: choose the right file.")
        return paths

    def _plan(self, parameters, context):
        from ..engine.jobs import batch

        model = self.parameterAsFile(parameters, "MODEL", context)
        pattern = self.parameterAsString(parameters, "PATTERN", context) or batch.DEFAULT_PATTERN
        folder = self.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)
        device = DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]
        confidence = self.parameterAsBool(parameters, "CONFIDENCE", context)
        return batch.plan_scenes(model, self._inputs(parameters, context), folder, confidence, pattern, device,
                                 create_folder=True)

    def process(self, parameters, context, feedback):
        self.require_torch()
        require_batch()
        from ..engine.jobs import batch

        plan = self._plan(parameters, context)
        scheduler = (self.parameterAsString(parameters, "DASK_SCHEDULER", context) or "").strip() or None
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        if scheduler is None:
            _workers_use_python()
        outcome = batch.run_batch(plan, batch.ClusterSpec(workers, scheduler), self.progress_for(feedback))
        for r in outcome.failed:
            feedback.reportError(f"{r.unit.hsi}: not classified after {r.attempts} attempts: {r.error}")
        feedback.pushInfo(outcome.summary().splitlines()[0])
        if not outcome.done:
            raise QgsProcessingException(f"no scene could be classified; the first error: "
                                         f"{outcome.failed[0].unit.hsi}: {outcome.failed[0].error}")
        return {"OUTPUT_FOLDER": plan.output_folder, "OUTPUTS": [r.unit.output for r in outcome.done],
                "DONE": len(outcome.done), "FAILED": len(outcome.failed)}

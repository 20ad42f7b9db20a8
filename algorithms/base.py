"""Shared base of every ``difflc:*`` algorithm: what every algorithm does the same way around its own work.

Naming and help, the checks before any work (torch present, method parameters, outputs), progress/cancel
mapping, and the one error boundary that turns any engine error into a :class:`QgsProcessingException` (clean
exit 1 in qgis_process, a red message in the dialog instead of a traceback). Installing dependencies is
``install.py``'s business. Never import torch at module level: qgis_process imports this module at every call,
for every algorithm.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import signal
import traceback
from pathlib import Path
from typing import Optional

from qgis.core import (Qgis, QgsMessageLog, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputLayerDefinition)
from qgis.PyQt.QtGui import QIcon

from ..engine.progress import Cancelled, Progress
from ..engine.stopping import Terminated, stop_signals_unwind
from .install import PLUGIN_DIR, require_torch

ICON_PATH = os.path.join(PLUGIN_DIR, "resources", "icon.svg")
# the help every Help button opens: shipped inside the plugin (works offline), one anchor per algorithm id
HELP_PATH = os.path.join(PLUGIN_DIR, "resources", "help", "index.html")
GROUP = "Diffusion Land Cover"
GROUP_ID = "difflc"

CITATIONS = """<p><b>Method and citations</b></p>
<ul>
<li><b>UniDiff</b>: Y. Hu and S. Prasad, "UniDiff: Parameter-Efficient Adaptation of Diffusion Models for Land
Cover Classification with Multi-Modal Remotely Sensed Imagery and Sparse Annotations", WACV 2026
(arXiv:2512.00261). One frozen ImageNet-pretrained diffusion U-Net adapted to hyperspectral + SAR through its
FiLM (conditioning) path. This plugin runs it when the ImageNet ADM checkpoint is installed; by default (no
checkpoint) the network is an untrained, seeded compact ADM.</li>
<li><b>SatDiFuser</b>: Y. Jia, V. Marsocci, Z. Gong, X. Yang, M. Vergauwen and A. Nascetti, "Can Generative
Geospatial Diffusion Models Excel as Discriminative Geospatial Foundation Models?", ICCV 2025
(arXiv:2503.07890). Diffusion features from several timesteps and decoder layers, fused; its per-pixel
features and global fusion are what this plugin extracts and offers.</li>
<li>Backbone: P. Dhariwal and A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021
(ADM, ImageNet 64&times;64 checkpoint).</li>
</ul>"""

class DiffLcAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``NAME``, ``DISPLAY_NAME``, ``HELP`` (HTML or plain text) and ``NEEDS_TORCH``."""

    NAME = ""
    DISPLAY_NAME = ""
    HELP = ""
    NEEDS_TORCH = False

    def createInstance(self):  # noqa: N802
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.DISPLAY_NAME or self.NAME

    def group(self) -> str:
        return GROUP

    def groupId(self) -> str:  # noqa: N802
        return GROUP_ID

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:  # noqa: N802
        return ICON_PATH

    def helpUrl(self) -> str:  # noqa: N802
        return f"{Path(HELP_PATH).as_uri()}#{GROUP_ID}:{self.NAME}"

    def addParameter(self, definition, createOutput=True):  # noqa: N802
        """Every numeric parameter's range in its own help (the dialog's tooltip), from its declared min/max."""
        if definition.type() == "number" and not definition.help():
            definition.setHelp(f"{definition.name()}: {number_range(definition)}.")
        return super().addParameter(definition, createOutput)

    def shortHelpString(self) -> str:  # noqa: N802
        parts = [self.HELP.strip()] if self.HELP else []
        numbers = [d for d in self.parameterDefinitions() if d.type() == "number"]
        if numbers:
            parts.append("<p><b>Numeric parameters</b> (a value outside its range is refused before any work): "
                         + "; ".join(f"<b>{d.name()}</b>: {number_range(d)}" for d in numbers) + ".</p>")
        if self.NEEDS_TORCH:
            parts.append("<p>Needs PyTorch in the Python that QGIS runs; run <i>Check environment</i> "
                         "to see the install command.</p>")
        parts.append(CITATIONS)
        # the Processing dialog turns every newline into a paragraph break: keep the HTML on one line
        return " ".join(line.strip() for line in "\n".join(parts).splitlines() if line.strip())

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Torch first, then the numbers' ranges and the method parameters, QGIS's own checks, the raster inputs,
        then the outputs: all before any work.

        Both the dialog and ``qgis_process`` (3.22) call this; :meth:`prepareAlgorithm` repeats the output
        check for callers that do not.
        """
        if self.NEEDS_TORCH:
            try:
                require_torch()
            except QgsProcessingException as exc:
                return False, str(exc)
        self._load_gdal_names(parameters, context)
        problem = self._number_problem(parameters)  # before QGIS's bare "Incorrect parameter value for X"
        if problem:
            return False, problem
        try:
            self.check_settings(parameters, context)
            self._check_mask_layer(parameters, context)
        except QgsProcessingException as exc:
            return False, str(exc)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, self._unreadable_input(parameters, context) or message
        problem = self._raster_input_problem(parameters, context)
        if problem:
            return False, problem
        try:
            self.check_outputs(parameters, context)
        except QgsProcessingException as exc:
            return False, str(exc)
        return True, ""

    def _load_gdal_names(self, parameters, context) -> None:
        """A raster given by a GDAL name that is no file path (``NETCDF:"f.nc":Band1``, ``/vsizip/...``): QGIS only
        resolves strings that are existing files or loaded layers, so such a raster is loaded into the run's
        temporary layer store here (the same context runs the algorithm); every later lookup finds it by source."""
        from qgis.core import QgsRasterLayer

        from ..engine.data.raster_io import is_gdal_name

        store = context.temporaryLayerStore()
        known = {layer.source() for layer in store.mapLayers().values()}
        for definition in self.parameterDefinitions():
            if definition.type() not in ("raster", "multilayer", "layer"):
                continue
            value = parameters.get(definition.name())
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(item, str) or not is_gdal_name(item) or item in known or os.path.exists(item):
                    continue
                layer = QgsRasterLayer(item, item.rsplit(":", 1)[-1] or item, "gdal")
                if layer.isValid():
                    store.addMapLayer(layer)
                    known.add(item)

    def _check_mask_layer(self, parameters, context) -> None:
        """MASK given as a line/point layer or a table: refused by what it holds, before any feature is read."""
        if self.parameterDefinition("MASK") is None or parameters.get("MASK") in (None, ""):
            return
        from qgis.core import QgsVectorLayer

        from .params import mask_geometry_problem

        try:
            layer = self.parameterAsLayer(parameters, "MASK", context)
        except Exception:  # noqa: BLE001 - QGIS's own check reports an unloadable layer
            return
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            mask_geometry_problem(layer)

    def _number_problem(self, parameters) -> str:
        """A numeric parameter that is not a number, not whole, or outside its declared range: named, with the
        range to give (QGIS itself only says "Incorrect parameter value for X")."""
        for definition in self.parameterDefinitions():
            if definition.type() != "number" or definition.name() not in parameters:
                continue
            name, value = definition.name(), parameters[definition.name()]
            if value is None or (isinstance(value, str) and not value.strip()) or not isinstance(value, (int, float, str)):
                continue  # empty (QGIS's default/optional rules apply), or an expression/property QGIS evaluates
            wanted = number_range(definition)
            try:
                number = float(value)
            except ValueError:
                return f"{name}: '{value}' is not a number: give {wanted}."
            shown = _number_text(number)
            if not math.isfinite(number):
                return f"{name}: {value} is not a number: give {wanted}."
            if _is_integer(definition) and not number.is_integer():
                return f"{name}: {shown} is not a whole number: give {wanted}."
            low, high = _bounds(definition)
            if number < low or number > high:
                return f"{name}: {shown} is out of range: give {wanted}."
        return ""

    def _raster_input_problem(self, parameters, context) -> str:
        """A raster input QGIS loads but the run could not use (a VRT whose source file is gone): said before any
        work, naming the parameter and the file."""
        from ..engine.data.raster_io import raster_problem

        for definition in self.parameterDefinitions():
            if definition.type() != "raster" or parameters.get(definition.name()) in (None, ""):
                continue
            try:
                layer = self.parameterAsRasterLayer(parameters, definition.name(), context)
            except Exception:  # noqa: BLE001 - QGIS's own check reports an unloadable layer
                continue
            if layer is None or layer.providerType() != "gdal":
                continue
            problem = raster_problem(layer.source())
            if problem:
                return f"{definition.name()}: {sentence(problem)}"
        return ""

    def check_settings(self, parameters, context) -> None:
        """The shared method parameters (TIMESTEPS, BLOCKS, RGB_BANDS, ...) translated into engine settings
        before any work, so a typo stops the dialog with the parameter's name instead of a run half-way."""
        from .params import declares_settings, settings_from_parameters

        if declares_settings(self):
            settings_from_parameters(self, parameters, context)

    def _unreadable_input(self, parameters, context) -> str:
        """QGIS says "not found" for a layer file that exists but does not load: say what is really wrong."""
        from ..engine.data.raster_io import is_gdal_name, raster_problem

        for definition in self.parameterDefinitions():
            name, kind = definition.name(), definition.type()
            value = parameters.get(name)
            if kind == "multilayer" and isinstance(value, (list, tuple)):  # a list of files (classifymany)
                from qgis.core import QgsProject, QgsRasterLayer

                for item in value:
                    if not isinstance(item, str) or QgsProject.instance().mapLayer(item) is not None:
                        continue
                    if not os.path.exists(item) and not is_gdal_name(item):
                        return (f"{name}: {item} does not exist: check the path (or remove it from the list); the "
                                f"other {len(value) - 1} input(s) were not the problem.")
                    if not QgsRasterLayer(item, "", "gdal").isValid():
                        return f"{name}: {sentence(raster_problem(item) or f'{item} is not a raster GDAL can read')}"
                continue
            if kind == "raster" and isinstance(value, str) and (os.path.isdir(value) or is_gdal_name(value)):
                problem = raster_problem(value)  # a folder, or a subdataset name GDAL cannot open
                if problem:
                    return f"{name}: {sentence(problem)}"
                continue
            if kind in ("vector", "file", "source") and isinstance(value, str) and os.path.isdir(value) \
                    and not (kind == "file" and definition.behavior() == definition.Folder):
                wanted = re.findall(r"\*(\.[\w.]+)", definition.fileFilter() or "") if kind == "file" else []
                which = f"{' / '.join(dict.fromkeys(wanted))} file" if wanted else "file"
                return f"{name}: {value} is a folder, not a file: choose the {which} inside it."
            if kind not in ("raster", "vector") or not isinstance(value, str) or not os.path.isfile(value):
                continue
            if kind == "raster":
                problem = raster_problem(value)  # subdatasets (netCDF, HDF), or not GDAL's at all
                if problem:
                    return f"{name}: {sentence(problem)}"
            layer = (self.parameterAsRasterLayer if kind == "raster" else self.parameterAsVectorLayer)(
                parameters, name, context)
            if layer is None or not layer.isValid():
                what = "a raster GDAL" if kind == "raster" else "a vector layer OGR"
                return (f"{name}: {value} exists but is not {what} can read: choose the right file, or export it "
                        "again (e.g. as GeoTIFF / GeoPackage).")
        return ""

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.check_outputs(parameters, context)
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """The one error boundary: whatever the engine raises reaches the user as one line."""
        with error_boundary(feedback):
            results = self.process(parameters, context, feedback)
        load_styles_on_completion(context)
        return results

    def process(self, parameters, context, feedback):
        raise NotImplementedError

    # outputs: never an input, never another output, a folder that takes files, an extension that fits
    OUTPUT_FOLDER_CREATED = ()  # output parameters whose folder the algorithm creates itself

    def output_path(self, name: str, parameters, context) -> str:
        """The file a destination parameter will really be written to ('' when none is wanted).

        A temporary output is left out: it lies in QGIS's own fresh folder, and asking for its path here would
        make QGIS generate (and, in the desktop, register for loading) one more temporary name per call.
        """
        definition = self.parameterDefinition(name)
        value = parameters.get(name, definition.defaultValue())
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink.staticValue()
        if value is None or str(value) in ("", QgsProcessing.TEMPORARY_OUTPUT):
            return ""
        if definition.type() == "fileDestination":
            if name not in parameters and not definition.createByDefault():
                return ""
            return self.parameterAsFileOutput(parameters, name, context) or ""
        return self.parameterAsOutputLayer(parameters, name, context) or ""

    def check_outputs(self, parameters, context) -> None:
        """Refuse outputs that would destroy an input or another output, or cannot be written (named)."""
        from ..engine.errors import OutputPathError
        from ..engine.files import InputSpec, OutputSpec, check_outputs

        outputs, inputs, rasters = [], [], []
        for definition in self.parameterDefinitions():
            name, kind = definition.name(), definition.type()
            if definition.isDestination():
                if kind == "folderDestination":  # a folder of outputs: the algorithm checks what goes in it
                    continue
                path = self.output_path(name, parameters, context)
                if not path or _not_a_file(path):
                    continue
                extensions = ()
                if kind == "rasterDestination":
                    extensions = (".tif", ".tiff")
                    rasters.append((name, path))
                elif kind == "fileDestination":
                    extensions = tuple(e.lower() for e in re.findall(r"\*(\.[\w.]+)", definition.fileFilter() or ""))
                outputs.append(OutputSpec(name, path, extensions, name in self.OUTPUT_FOLDER_CREATED))
            elif kind in ("raster", "vector", "file", "source", "mesh", "layer"):
                path = _input_file(self, definition, parameters, context)
                if path:
                    inputs.append(InputSpec(name, path))
        try:
            check_outputs(outputs, inputs)
            if rasters:
                from ..engine.data.raster_io import raster_sidecar_problem

                for name, path in rasters:
                    problem = raster_sidecar_problem(path)
                    if problem:
                        raise OutputPathError(f"{name}: {problem}")
        except OutputPathError as exc:
            raise QgsProcessingException(sentence(str(exc))) from None

    # helpers shared by the subclasses
    def require_torch(self):
        return require_torch()

    def progress_for(self, feedback) -> Progress:
        return progress_for(feedback)


class _SidecarStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies ``<raster>.qml`` to a result layer the desktop loads: Processing loads results without their default
    style, so a classified map would show its colour table's 256 entries instead of the class legend."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        qml = f"{os.path.splitext(layer.source())[0]}.qml"
        if os.path.isfile(qml):
            layer.loadNamedStyle(qml)
            layer.triggerRepaint()


_SIDECAR_STYLE = []  # one stateless instance, kept referenced (the context does not own it)


def load_styles_on_completion(context) -> None:
    """Every result the desktop will load that has a ``.qml`` beside it gets it applied (``_SidecarStyle``)."""
    for path in context.layersToLoadOnCompletion():
        if os.path.isfile(f"{os.path.splitext(path)[0]}.qml"):
            if not _SIDECAR_STYLE:
                _SIDECAR_STYLE.append(_SidecarStyle())
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(_SIDECAR_STYLE[0])


def _is_integer(definition) -> bool:
    from qgis.core import QgsProcessingParameterNumber

    return definition.dataType() == QgsProcessingParameterNumber.Integer


_INT_LIMIT = 2**31 - 1  # what QGIS's parameterAsInt can hold


def _bounds(definition):
    """(low, high) of a numeric parameter; an integer without a declared bound stops at what an int holds."""
    low, high = definition.minimum(), definition.maximum()
    if _is_integer(definition):
        low, high = max(low, -_INT_LIMIT), min(high, _INT_LIMIT)
    return low, high


def _number_text(value: float) -> str:
    return f"{value:.10g}" if not float(value).is_integer() or abs(value) >= 1e15 else str(int(value))


def number_range(definition) -> str:
    """'a whole number from 10 to 5000', 'a number from -1 to 10', 'a whole number of 1 or more': the one text of a
    numeric parameter's range, in its help and in its refusal."""
    kind = "a whole number" if _is_integer(definition) else "a number"
    low, high = _bounds(definition)
    limit = _INT_LIMIT if _is_integer(definition) else 1e300
    has_low, has_high = low > -limit, high < limit
    if has_low and has_high:
        return f"{kind} from {_number_text(low)} to {_number_text(high)}"
    if has_low:
        return f"{kind} of {_number_text(low)} or more"
    if has_high:
        return f"{kind} of {_number_text(high)} or less"
    return kind


def _not_a_file(path: str) -> bool:
    return path.startswith(("memory:", "postgres:", "postgis:", "ogr:", "spatialite:", "/vsi")) or "://" in path


def _input_file(alg, definition, parameters, context) -> str:
    """The file behind an input parameter (a layer's source without '|layername=…'), or ''."""
    name, kind = definition.name(), definition.type()
    if name not in parameters or parameters[name] in (None, ""):
        return ""
    try:
        if kind == "file":
            return alg.parameterAsFile(parameters, name, context) or ""
        if kind == "raster":
            layer = alg.parameterAsRasterLayer(parameters, name, context)
        else:
            layer = alg.parameterAsLayer(parameters, name, context)
    except Exception:  # an unloadable input is QGIS's own check to report
        return ""
    if layer is None:
        return ""
    source = layer.source().split("|", 1)[0]
    return source if os.path.exists(source) else ""


def progress_for(feedback) -> Progress:
    """An engine :class:`Progress` driving a QgsProcessingFeedback (0..1 → 0..100 %, log → pushInfo)."""
    if feedback is None:
        return Progress()
    return Progress(on_progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                    on_message=feedback.pushInfo,
                    is_canceled=feedback.isCanceled)


DEBUG_ENV = "DIFFLC_DEBUG"


def sentence(text: str) -> str:
    """One message, ending with a full stop: how every refusal reads."""
    text = str(text).strip()
    if not text:
        return "unknown error."
    return text if text.endswith((".", "!", "?")) else text + "."


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_message(exc: BaseException) -> str:
    """What the user reads for any exception: the engine's own message, or a plain description."""
    if isinstance(exc, QgsProcessingException):
        return str(exc)
    if isinstance(exc, Cancelled):
        return "Cancelled by the user; no output was written or changed."
    if isinstance(exc, Terminated):
        what = "an interrupt (SIGINT, Ctrl+C)" if exc.signum == signal.SIGINT else "a termination signal (SIGTERM)"
        return f"Stopped by {what}; no output was written or changed."
    if isinstance(exc, KeyboardInterrupt):
        return "Stopped by an interrupt (SIGINT, Ctrl+C); no output was written or changed."
    if isinstance(exc, ValueError):  # the engine's UserInputError family and other bad-input errors
        return sentence(str(exc))
    if isinstance(exc, MemoryError):
        return ("Out of memory: close other programs, use a smaller scene or fewer TIMESTEPS/BLOCKS, "
                "and run again.")
    if isinstance(exc, (OSError, RuntimeError)):
        known = _io_message(exc)
        if known:
            return known
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return sentence(f"cannot access{where}: {exc.strerror or exc}: check the path, its permissions and the "
                        "free disk space")
    return sentence(f"unexpected {type(exc).__name__}: {exc} (a bug in Diffusion Land Cover: run again with "
                    f"{DEBUG_ENV}=1 for the full traceback and report it)")


def _io_message(exc: BaseException) -> str:
    """An operating-system failure the engine did not translate where it happened (GDAL's RuntimeError text, an
    OSError): the disk full, a permission gone, a file gone. Not a bug: say so, with the file when known."""
    from ..engine.errors import NO_PERMISSION, NO_SPACE, io_cause

    cause = io_cause(exc)
    if not cause:
        return ""
    name = getattr(exc, "filename", None)
    where = f" ({name})" if name else ""
    detail = (getattr(exc, "strerror", None) or str(exc)).strip().rstrip(".")
    if cause == NO_SPACE:
        folder = f" of {os.path.dirname(os.path.abspath(name))}" if name else ""
        return sentence(f"no space left on the disk{folder} ({detail}){'' if folder else where}: free some space, or "
                        "choose an output folder on another disk")
    if cause == NO_PERMISSION:
        return sentence(f"permission denied{where} ({detail}): make the file and its folder readable/writable for "
                        "you, or choose another folder")
    return sentence(f"a file the run needs is gone{where} ({detail}): it was moved or deleted during the run; put it "
                    "back and run again")


@contextlib.contextmanager
def error_boundary(feedback=None):
    """The one boundary around a run: whatever happens inside leaves as one QgsProcessingException
    (qgis_process exits 1, the dialog shows it in red), and this run's temporaries still alive are removed —
    only this run's, since others may be writing beside it in the same QGIS.

    In the main thread (qgis_process) SIGTERM and SIGINT stop the run like Cancel (``engine.stopping``): the
    handler asks the feedback to cancel and raises :class:`Terminated` where the code is, so every writer's
    clean-up runs; the steps that must not be split hold it until they end, and so does this clean-up. In the
    desktop the run is in a worker thread, where Python cannot install handlers: nothing changes there. The
    traceback goes to the log only when ``DIFFLC_DEBUG=1``. A raised exception, not a normal return, is what
    makes a cancelled qgis_process run exit non-zero.
    """
    from ..engine.files import run_scope
    from ..engine.stopping import uninterrupted

    def on_stop(signum):
        if feedback is not None:
            feedback.cancel()

    with stop_signals_unwind(on_stop) as received, run_scope() as run:
        try:
            yield
        except BaseException as exc:  # noqa: B902 - everything but a real interpreter exit becomes one line
            if isinstance(exc, SystemExit):
                raise
            original = exc
            if received and not isinstance(exc, Terminated):
                # The handler runs wherever the main thread is: inside a library's bare ``except:`` that swallows
                # Terminated (the cancel it asked for then stops the run as Cancelled), or inside a C extension's
                # import, which turns it into an ImportError (GDAL's gdal_array importing numpy's C API). Whatever
                # exception carries it, the run failed because it was stopped: the user hears the true reason.
                exc = Terminated(received[0])
            text = "".join(traceback.format_exception(type(original), original, original.__traceback__)) \
                if _debug() else ""
            message = str(exc) if isinstance(exc, QgsProcessingException) else error_message(exc)
            try:
                with uninterrupted():
                    _release_frames(original)
                    run.remove_all()
            except Terminated:  # a stop during the clean-up of a run that is failing anyway
                pass
            if run.completed and isinstance(exc, (Cancelled, Terminated, KeyboardInterrupt)):
                message = message.replace("no output was written or changed",
                                          "outputs completed before it: " + ", ".join(run.completed) +
                                          "; nothing else was written or changed")
            if text:
                QgsMessageLog.logMessage(text, GROUP, Qgis.Info)
                if feedback is not None:
                    feedback.pushDebugInfo(text)
            _print_once()
            raise QgsProcessingException(message) from None


def _release_frames(exc: BaseException) -> None:
    """Let go of what the failed run's frames still hold, before its temporaries are removed.

    An open GDAL dataset held by a frame of the traceback would be closed later, and closing writes its data and
    ``.aux.xml`` again beside a temporary already removed. Clearing the finished frames closes it now.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__context__ or exc.__cause__
    gc.collect()


def _print_once() -> None:
    """qgis_process prints a failing run's message three times: its ConsoleFeedback ("ERROR:"), and the
    message log twice (QgsProcessingFeedback.reportError and QgsProcessingAlgorithm.run both log it). A
    qgis_process run is over once the algorithm fails, so its message log is silenced for the rest of the
    process and the one "ERROR:" line remains. The desktop's and processing.run's logs stay untouched."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication

    args = QCoreApplication.arguments()
    if args and os.path.basename(args[0]).startswith("qgis_process"):
        QgsApplication.messageLog().blockSignals(True)

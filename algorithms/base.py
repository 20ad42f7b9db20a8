"""Shared base of every ``difflc:*`` algorithm and the glue between Processing and the engine.

Why here: each algorithm should only read its parameters, build a ``PipelineSettings`` and call the
engine. Naming, help text, the torch check with its exact install command, progress/cancel mapping and
turning engine errors into :class:`QgsProcessingException` (clean exit 1 in qgis_process, a red message
in the dialog instead of a traceback) live once, here. Never import torch at module level: qgis_process
imports this module at every call, for every algorithm.
"""
from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from typing import Any, Callable, Dict, List, Optional

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from ..engine.progress import Cancelled, Progress

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICON_PATH = os.path.join(PLUGIN_DIR, "resources", "icon.svg")
REPOSITORY_URL = "https://github.com/diffusion-landcover/diffusion-landcover"
GROUP = "Diffusion Land Cover"
GROUP_ID = "difflc"

CITATIONS = """<p><b>Method and citations</b></p>
<ul>
<li><b>UniDiff</b>: parameter-efficient adaptation of one frozen ImageNet-pretrained diffusion U-Net to
hyperspectral + SAR land-cover classification from sparse labels, by training only its FiLM
(conditioning) path. Please cite the UniDiff paper when you publish results of this plugin.</li>
<li><b>SatDiFuser</b>: diffusion features from several timesteps and decoder layers fused as a
geospatial foundation model. Please cite the SatDiFuser paper when you use the feature fusion.</li>
<li>Backbone: P. Dhariwal and A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021
(ADM, ImageNet 64&times;64 checkpoint).</li>
</ul>"""

# Used when the requirement files are not shipped beside the plugin (they are, in the ZIP).
DEFAULT_REQUIREMENTS = {"torch": "2.13.0", "scikit-learn": "1.9.1", "safetensors": "0.8.0"}
DEFAULT_PINS = {"numpy": "1.24.2", "scipy": "1.10.1"}
NUMPY_PIN_REASON = ("numpy and scipy are pinned to the versions QGIS already uses: pip would otherwise pull "
                    "numpy 2, which breaks GDAL's Python bindings (osgeo.gdal_array) and with them QGIS's "
                    "raster tools.")


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
        return f"{REPOSITORY_URL}#algorithms"

    def shortHelpString(self) -> str:  # noqa: N802
        parts = [self.HELP.strip()] if self.HELP else []
        if self.NEEDS_TORCH:
            parts.append("<p>Needs PyTorch in the Python that QGIS runs; run <i>Check environment</i> "
                         "to see the install command.</p>")
        parts.append(CITATIONS)
        # the Processing dialog turns every newline into a paragraph break: keep the HTML on one line
        return " ".join(line.strip() for line in "\n".join(parts).splitlines() if line.strip())

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Torch first: the dialog and qgis_process then say how to install it before anything runs."""
        if self.NEEDS_TORCH:
            try:
                require_torch()
            except QgsProcessingException as exc:
                return False, str(exc)
        return super().checkParameterValues(parameters, context)

    # helpers shared by the subclasses
    def require_torch(self):
        return require_torch()

    def progress_for(self, feedback) -> Progress:
        return progress_for(feedback)

    def run_engine(self, function: Callable[..., Any], feedback=None, *args, **kwargs) -> Any:
        return run_engine(function, feedback, *args, **kwargs)


# ----------------------------------------------------------------------------------------------------
# The Python that QGIS runs and how to install packages into it

def qgis_python_executable() -> str:
    """Path of a Python interpreter that shares QGIS's site-packages.

    Inside QGIS ``sys.executable`` is often the QGIS binary itself (``/usr/bin/qgis``, ``qgis-bin.exe``,
    ``qgis_process.bin``), so it is only trusted when it is a python; otherwise the interpreter is looked
    up under ``sys.exec_prefix`` (Debian: ``/usr/bin/python3``; a venv: its own python; OSGeo4W:
    ``apps/Python3x/python.exe``).
    """
    exe = sys.executable or ""
    if exe and os.path.basename(exe).lower().startswith("python") and os.path.isfile(exe):
        return exe
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.name == "nt":
        candidates = [os.path.join(sys.exec_prefix, "python.exe"), os.path.join(sys.exec_prefix, "python3.exe")]
    else:
        exact = os.path.join(sys.exec_prefix, "bin", f"python{version}")
        short = os.path.join(sys.exec_prefix, "bin", "python3")
        # prefer the familiar 'python3' when it is the very same interpreter
        if os.path.isfile(exact) and os.path.isfile(short) and os.path.realpath(exact) == os.path.realpath(short):
            return short
        candidates = [exact, short]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return "python3" if os.name != "nt" else "python"


def _read_pins(path: str) -> Dict[str, str]:
    pins: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.split("#", 1)[0].strip()
                if "==" in line and not line.startswith("-"):
                    name, version = line.split("==", 1)
                    pins[name.strip().lower()] = version.strip()
    except OSError:
        pass
    return pins


def _installed_version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def pip_install_command() -> str:
    """The one line that installs the plugin's Python dependencies into QGIS's Python.

    Versions come from ``requirements/runtime.txt`` when shipped, else :data:`DEFAULT_REQUIREMENTS`;
    numpy/scipy are pinned to what is installed now (the versions QGIS's GDAL was built against), else to
    ``requirements/constraints.txt``.
    """
    req_dir = os.path.join(PLUGIN_DIR, "requirements")
    runtime = _read_pins(os.path.join(req_dir, "runtime.txt")) or dict(DEFAULT_REQUIREMENTS)
    constraints = _read_pins(os.path.join(req_dir, "constraints.txt"))
    pins = {name: _installed_version(name) or constraints.get(name) or default
            for name, default in DEFAULT_PINS.items()}

    python = qgis_python_executable()
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    args: List[str] = [f'"{python}"' if " " in python else python, "-m", "pip", "install"]
    if not in_venv:
        args.append("--user")
        marker = os.path.join(sysconfig.get_paths().get("stdlib", ""), "EXTERNALLY-MANAGED")
        if os.path.isfile(marker):  # Debian 12+/Ubuntu 23.04+ refuse even --user installs without it
            args.append("--break-system-packages")
    args += [f"{name}=={version}" for name, version in runtime.items()]
    args += [f'"{name}=={version}"' for name, version in pins.items()]
    return " ".join(args)


def torch_missing_message(error: Optional[BaseException] = None) -> str:
    detail = f" ({error})" if error is not None else ""
    return (f"PyTorch is not installed in the Python that QGIS runs ({qgis_python_executable()}){detail}. "
            f"Install the plugin's dependencies with:\n    {pip_install_command()}\n"
            f"then restart QGIS. {NUMPY_PIN_REASON}")


def require_torch():
    """Import and return torch, or raise a QgsProcessingException that says exactly how to install it."""
    try:
        import torch  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        raise QgsProcessingException(torch_missing_message(exc)) from exc
    return torch


# ----------------------------------------------------------------------------------------------------
# Progress, cancel and errors between Processing and the engine

def progress_for(feedback) -> Progress:
    """An engine :class:`Progress` driving a QgsProcessingFeedback (0..1 → 0..100 %, log → pushInfo)."""
    if feedback is None:
        return Progress()
    return Progress(on_progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                    on_message=feedback.pushInfo,
                    is_canceled=feedback.isCanceled)


@contextlib.contextmanager
def engine_errors():
    """Turn the engine's Cancelled and ValueError (its "bad input" errors) into QgsProcessingException.

    A raised exception, not a normal return, is what makes a cancelled qgis_process run exit non-zero.
    """
    try:
        yield
    except Cancelled as exc:
        raise QgsProcessingException("Cancelled by the user.") from exc
    except ValueError as exc:
        raise QgsProcessingException(str(exc)) from exc


def run_engine(function: Callable[..., Any], feedback=None, *args, **kwargs) -> Any:
    """Call an engine function inside :func:`engine_errors`; if it accepts ``progress`` it gets one."""
    if "progress" not in kwargs:
        import inspect

        try:
            accepts = "progress" in inspect.signature(function).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            kwargs["progress"] = progress_for(feedback)
    with engine_errors():
        return function(*args, **kwargs)

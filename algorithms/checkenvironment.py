"""difflc:checkenvironment — what the plugin can use on this machine, and what to install if not.

The first thing a user (or a bug report) needs: versions of everything the pipeline touches, whether
torch is importable by *QGIS's* Python (with the exact pip line if not), whether a GPU is usable, and
whether the pretrained backbone checkpoint is installed and where.
"""
from __future__ import annotations

import json
import platform
import sys
from typing import Any, Dict

from qgis.core import (Qgis, QgsProcessingOutputBoolean, QgsProcessingOutputNumber, QgsProcessingOutputString,
                       QgsProcessingParameterFileDestination)

from ..engine import paths
from .base import DiffLcAlgorithm
from .install import pip_install_command, qgis_python_executable

NOT_INSTALLED = "not installed"


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name, fromlist=["__version__"])
        return str(getattr(module, "__version__", "unknown"))
    except Exception as exc:  # ImportError, or a broken install (numpy ABI mismatch raises others)
        return NOT_INSTALLED if isinstance(exc, ImportError) else f"broken: {exc}"


def _gdal() -> Dict[str, Any]:
    try:
        from osgeo import gdal
    except Exception as exc:
        return {"GDAL_VERSION": f"{NOT_INSTALLED} ({exc})", "GDAL_ARRAY_OK": False}
    try:
        from osgeo import gdal_array  # noqa: F401 - fails when numpy does not match GDAL's build
        array_ok = True
    except Exception:
        array_ok = False
    return {"GDAL_VERSION": gdal.__version__, "GDAL_ARRAY_OK": array_ok}


def _torch() -> Dict[str, Any]:
    info: Dict[str, Any] = {"TORCH_VERSION": NOT_INSTALLED, "CUDA_AVAILABLE": False, "GPU_NAME": "",
                            "GPU_MEMORY_GB": 0.0}
    try:
        import torch  # noqa: PLC0415 - optional, and slow to import
    except ImportError:
        return info
    info["TORCH_VERSION"] = str(torch.__version__)
    try:
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(CUDA_AVAILABLE=True, GPU_NAME=props.name,
                        GPU_MEMORY_GB=round(props.total_memory / 2 ** 30, 1))
    except Exception as exc:  # a broken driver must not break the report
        info["GPU_NAME"] = f"CUDA error: {exc}"
    return info


def collect_environment() -> Dict[str, Any]:
    """Everything the report shows, as JSON-able values keyed by the algorithm's output names."""
    env: Dict[str, Any] = {
        "QGIS_VERSION": Qgis.QGIS_VERSION,
        "PYTHON_VERSION": platform.python_version(),
        "PYTHON_EXECUTABLE": qgis_python_executable(),
        "PLATFORM": platform.platform(),
    }
    env.update(_gdal())
    env["NUMPY_VERSION"] = _version("numpy")
    env["SKLEARN_VERSION"] = _version("sklearn")
    env["SAFETENSORS_VERSION"] = _version("safetensors")
    env.update(_torch())
    backbone = paths.find_backbone()
    env["BACKBONE_INSTALLED"] = backbone is not None
    env["BACKBONE_PATH"] = str(backbone) if backbone is not None else ""
    env["BACKBONE_SEARCHED"] = "; ".join(str(p) for p in paths.backbone_candidates())
    env["CACHE_DIR"] = str(paths.cache_dir())
    missing = [name for name, key in (("torch", "TORCH_VERSION"), ("scikit-learn", "SKLEARN_VERSION"),
                                      ("safetensors", "SAFETENSORS_VERSION")) if env[key] == NOT_INSTALLED]
    env["MISSING"] = ", ".join(missing)
    env["PIP_COMMAND"] = pip_install_command() if missing else ""
    return env


_NUMBERS = {"GPU_MEMORY_GB"}
_BOOLEANS = {"CUDA_AVAILABLE", "BACKBONE_INSTALLED", "GDAL_ARRAY_OK"}
_STRINGS = ["QGIS_VERSION", "PYTHON_VERSION", "PYTHON_EXECUTABLE", "PLATFORM", "GDAL_VERSION", "NUMPY_VERSION",
            "SKLEARN_VERSION", "SAFETENSORS_VERSION", "TORCH_VERSION", "GPU_NAME", "BACKBONE_PATH",
            "BACKBONE_SEARCHED", "CACHE_DIR", "MISSING", "PIP_COMMAND"]


class CheckEnvironment(DiffLcAlgorithm):
    NAME = "checkenvironment"
    DISPLAY_NAME = "Check environment"
    HELP = """<p>Reports the versions of QGIS, Python, GDAL, numpy, scikit-learn, safetensors and PyTorch
seen by the Python that QGIS runs, whether a CUDA GPU is usable (name and memory), and whether the
pretrained ImageNet 64&times;64 diffusion backbone (<code>64x64_diffusion.pt</code>) is installed and
where it was looked for (<code>$DIFFLC_BACKBONE</code>, then the cache folder,
<code>$DIFFLC_CACHE_DIR</code> or <code>~/.cache/diffusion_landcover</code>).</p>
<p>When PyTorch or another dependency is missing it prints the exact <code>pip install</code> command for
QGIS's Python. Optionally writes everything to a JSON file to attach to a bug report.</p>"""

    OUTPUT = "OUTPUT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Environment report (JSON)", fileFilter="JSON files (*.json)",
            optional=True, createByDefault=False))
        for key in _STRINGS:
            self.addOutput(QgsProcessingOutputString(key, key.replace("_", " ").title()))
        for key in sorted(_BOOLEANS):
            self.addOutput(QgsProcessingOutputBoolean(key, key.replace("_", " ").title()))
        for key in sorted(_NUMBERS):
            self.addOutput(QgsProcessingOutputNumber(key, key.replace("_", " ").title()))

    def process(self, parameters, context, feedback):
        env = collect_environment()
        for key in _STRINGS + sorted(_BOOLEANS) + sorted(_NUMBERS):
            if key == "PIP_COMMAND":
                continue
            feedback.pushInfo(f"{key.replace('_', ' ').lower()}: {env[key]}")
        if env["MISSING"]:
            feedback.reportError(f"Missing Python packages: {env['MISSING']}. Run 'Install dependencies' (plugin "
                                 f"menu or this provider), or install them into QGIS's Python with:\n"
                                 f"    {env['PIP_COMMAND']}\nthen restart QGIS.", fatalError=False)
        if not env["GDAL_ARRAY_OK"]:
            feedback.reportError("osgeo.gdal_array cannot be imported: numpy does not match the one GDAL was "
                                 "built with (numpy 2 installed over Debian's 1.x?).", fatalError=False)
        if not env["BACKBONE_INSTALLED"]:
            feedback.pushInfo("No pretrained backbone found (looked in: " + env["BACKBONE_SEARCHED"] + "); the "
                              "pipeline then trains a compact backbone on the scene.")
        results: Dict[str, Any] = dict(env)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context) if self.OUTPUT in parameters else ""
        if output:
            from ..engine.files import write_text

            write_text(output, json.dumps(env, indent=2, sort_keys=True))
            feedback.pushInfo(f"Report written to {output}")
            results[self.OUTPUT] = output
        return results

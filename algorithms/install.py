"""The Python QGIS runs, and the one command that installs the plugin's dependencies into it.

Why a module of its own: the message a user without PyTorch reads (what to run, which Python, why numpy is
pinned) is shared by the torch check of every algorithm, *Check environment* and the Dask batch; nothing here
imports torch.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from typing import Dict, List, Optional

from qgis.core import QgsProcessingException

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Used when the requirement files are not shipped beside the plugin (they are, in the ZIP).
DEFAULT_REQUIREMENTS = {"torch": "2.13.0", "scikit-learn": "1.9.1", "safetensors": "0.8.0", "scikit-image": "0.24.0"}
DEFAULT_PINS = {"numpy": "1.24.2", "scipy": "1.10.1"}
NUMPY_PIN_REASON = ("numpy and scipy are pinned to the versions QGIS already uses: pip would otherwise pull "
                    "numpy 2, which breaks GDAL's Python bindings (osgeo.gdal_array) and with them QGIS's "
                    "raster tools.")



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


def read_pins(path: str) -> Dict[str, str]:
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
    runtime = read_pins(os.path.join(req_dir, "runtime.txt")) or dict(DEFAULT_REQUIREMENTS)
    constraints = read_pins(os.path.join(req_dir, "constraints.txt"))
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


def runtime_requirements() -> List[str]:
    """The 'name==version' lines the installer installs: ``requirements/runtime.txt`` when shipped, else
    :data:`DEFAULT_REQUIREMENTS`."""
    pins = read_pins(os.path.join(PLUGIN_DIR, "requirements", "runtime.txt")) or dict(DEFAULT_REQUIREMENTS)
    return [f"{name}=={version}" for name, version in pins.items()]


def dependency_folder() -> str:
    """The folder *Install dependencies* fills and the plugin appends to ``sys.path``: inside the active QGIS
    profile (``<profile>/python/difflc-deps/<python X.Y>``), so removing the profile removes it too."""
    from qgis.core import QgsApplication

    from ..engine.installer import default_folder

    return default_folder(QgsApplication.qgisSettingsDirPath())


def add_dependency_folder() -> bool:
    """At plugin load: the installed folder at the end of ``sys.path`` (QGIS's numpy and GDAL stay first)."""
    from ..engine.installer import append_to_sys_path

    try:
        return append_to_sys_path(dependency_folder())
    except Exception:  # noqa: BLE001 - a broken profile path must never stop the plugin from loading
        return False


def torch_missing_message(error: Optional[BaseException] = None) -> str:
    detail = f" ({error})" if error is not None else ""
    return (f"PyTorch is not installed in the Python that QGIS runs ({qgis_python_executable()}){detail}. "
            f"Run 'Diffusion Land Cover › Install dependencies' (plugin menu or Processing Toolbox), which installs "
            f"them into a folder of the plugin without changing QGIS's Python, or install them yourself with:\n"
            f"    {pip_install_command()}\n"
            f"then restart QGIS. {NUMPY_PIN_REASON}")


def require_torch():
    """Import and return torch, or raise a QgsProcessingException that says exactly how to install it."""
    try:
        import torch  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        raise QgsProcessingException(torch_missing_message(exc)) from exc
    return torch

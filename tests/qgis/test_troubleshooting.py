"""README "Troubleshooting": one test per row that had none (the refusals table's rows are tested where the
refusals are: test_issue10_safety.py, test_issue19_messages.py, tests/engine/test_issue10_files.py, ...).

Rows and their tests: the Debian wrapper's ``--noversioncheck`` bug, no display, a pyenv ``python3`` first on
PATH (the launcher, here); the provider enabled in a fresh profile and "PyTorch is not installed"
(test_foundation_qgis_process.py); numpy 2 over Debian's, ``.venv`` without qgis, ``make setup`` without root,
``DIFFLC_DEBUG=1`` (here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "qgis_process"


def _fake(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _launcher_list(tmp_path, env_changes, drop=("DISPLAY",)):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "profile")
    env.update(env_changes)
    return subprocess.run([str(LAUNCHER), "list"], cwd=tmp_path, env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=180)


def test_debian_wrapper_bug_is_bypassed(tmp_path):
    """Row `Command --noversioncheck not known!`: a qgis_process first on PATH that is Debian's broken wrapper."""
    fake = tmp_path / "bin"
    _fake(fake, "qgis_process", 'echo "Command --noversioncheck not known!" >&2; exit 1')
    proc = _launcher_list(tmp_path, {"PATH": f"{fake}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and "difflc:classify" in proc.stdout, proc.stderr
    assert "noversioncheck" not in proc.stderr


def test_no_display_runs_headless(tmp_path):
    """Row exit 134 / "could not connect to display": no DISPLAY and no QT_QPA_PLATFORM given."""
    proc = _launcher_list(tmp_path, {}, drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert proc.returncode == 0 and "difflc:classify" in proc.stdout, proc.stderr
    assert "could not connect to display" not in proc.stderr


def test_a_foreign_python3_first_on_path_is_not_used(tmp_path):
    """Row exit 139 / "SIP not found": a pyenv-like python3 first on PATH (it would crash the embedded Python)."""
    fake = tmp_path / "pyenv-shims"
    _fake(fake, "python3", "exit 139")
    _fake(fake, "python", "exit 139")
    proc = _launcher_list(tmp_path, {"PATH": f"{fake}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and "difflc:classify" in proc.stdout, proc.stderr
    assert "SIP" not in proc.stderr


def test_numpy_is_the_one_gdal_array_was_built_for():
    """Row `numpy.core.multiarray failed to import`: the venv's numpy loads osgeo.gdal_array."""
    proc = subprocess.run([sys.executable, "-c", "import numpy, osgeo.gdal_array; print(numpy.__version__)"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "multiarray" not in proc.stderr, proc.stderr
    assert int(proc.stdout.split(".")[0]) < 2


def test_the_venv_imports_qgis():
    """Row `.venv cannot import qgis`: the venv is made from Debian's python3 with its system site packages."""
    python = REPO / ".venv" / "bin" / "python"
    proc = subprocess.run([str(python), "-c", "import qgis.core, osgeo.gdal"], capture_output=True, text=True,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert proc.returncode == 0, proc.stderr


def test_make_setup_without_root_prints_the_apt_get_line(tmp_path):
    """Row `make setup says packages are missing`: not root and a package missing: the exact command, exit 1
    (stops at step 1, before the virtual environment is touched)."""
    fake = tmp_path / "bin"
    _fake(fake, "dpkg-query", 'case "$*" in *xvfb*) exit 1;; *) printf "install ok installed";; esac')
    _fake(fake, "id", 'if [ "$1" = "-u" ]; then echo 1000; else /usr/bin/id "$@"; fi')
    _fake(fake, "apt-get", "echo 'apt-get must not run' >&2; exit 99")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], cwd=tmp_path, text=True,
                          capture_output=True, env=dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}"), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[setup] missing system packages: xvfb" in proc.stderr
    assert "sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends xvfb'" in proc.stderr
    assert "apt-get must not run" not in proc.stderr


def test_difflc_debug_puts_the_traceback_in_the_log_only(qgis_app, monkeypatch):
    """Row "a traceback, or an error you do not understand": one line always; the traceback only with
    DIFFLC_DEBUG=1, and then in the log, not in the message."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from diffusion_landcover.algorithms.base import error_boundary

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.debug = []

        def pushDebugInfo(self, info):  # noqa: N802
            self.debug.append(info)

    def failing():
        raise KeyError("head")

    for debug, expect_traceback in (("", False), ("1", True)):
        monkeypatch.setenv("DIFFLC_DEBUG", debug)
        feedback = Feedback()
        with pytest.raises(QgsProcessingException) as info:
            with error_boundary(feedback):
                failing()
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
        assert "DIFFLC_DEBUG=1" in str(info.value)
        assert any("Traceback" in d and "failing" in d for d in feedback.debug) == expect_traceback

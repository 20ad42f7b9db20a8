"""Shared test set-up.

Engine tests never touch QGIS. QGIS tests ask for the session fixture ``qgis_app``, which starts a
headless QgsApplication once, initialises Processing and registers this plugin's provider, imported as
the package ``diffusion_landcover`` (the name QGIS installs it under) through a symlink in a temp folder.

QGIS exit work-around (PLATFORM.md): ``exitQgis()`` at interpreter exit can segfault and turn a failing
run's exit status 1 into 139. So exitQgis is never called and ``pytest_unconfigure`` ends the process with
pytest's own exit status.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "diffusion_landcover"
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"  # QGIS's bundled plugins, home of `processing`

_state = {"exitstatus": None, "app": None, "link_dir": None}


def import_plugin_package():
    """Import the repo as package ``diffusion_landcover`` through a symlink in a temp folder.

    Needs no QgsApplication (class definitions only), so tests may call it at collection time.
    """
    if _state["link_dir"] is None:
        folder = Path(tempfile.mkdtemp(prefix="difflc-pytest-"))
        (folder / PACKAGE).symlink_to(REPO, target_is_directory=True)
        sys.path.insert(0, str(folder))
        _state["link_dir"] = folder
    import importlib

    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="session")
def qgis_app():
    """A running headless QgsApplication with Processing and the ``difflc`` provider registered."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    _state["app"] = app
    if QGIS_PLUGINS not in sys.path:
        sys.path.insert(0, QGIS_PLUGINS)
    from processing.core.Processing import Processing

    Processing.initialize()
    import_plugin_package()
    from diffusion_landcover.plugin.provider import DiffusionLandCoverProvider

    provider = DiffusionLandCoverProvider()
    assert QgsApplication.processingRegistry().addProvider(provider), "difflc provider did not register"
    app.difflc_provider = provider  # keep a reference: the registry forgets algorithms of a dead provider
    yield app


def pytest_sessionfinish(session, exitstatus):
    _state["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = _state["exitstatus"]
    if status is None:  # session never finished (usage error): let pytest exit normally
        return
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        # a test run that ran nothing must never pass as green, whatever the caller makes of exit 5
        sys.stderr.write("no tests were collected: check testpaths and file names\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets: one intra-op thread is faster and far steadier on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""The plugin foundation inside a headless QGIS: provider, algorithm base, plugin GUI glue."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def registry(qgis_app):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry()


def test_provider_lists_checkenvironment(registry):
    provider = registry.providerById("difflc")
    assert provider is not None
    assert provider.name() == "Diffusion Land Cover"
    ids = [alg.id() for alg in provider.algorithms()]
    assert "difflc:checkenvironment" in ids
    assert not provider.icon().isNull()


def test_every_algorithm_follows_the_base_contract(registry):
    from diffusion_landcover.algorithms.base import HELP_PATH, DiffLcAlgorithm

    help_page = Path(HELP_PATH).read_text(encoding="utf-8")
    algorithms = registry.providerById("difflc").algorithms()
    assert algorithms
    for alg in algorithms:
        assert isinstance(alg, DiffLcAlgorithm), alg.id()
        assert alg.groupId() == "difflc" and alg.group() == "Diffusion Land Cover"
        clone = alg.createInstance()
        assert type(clone) is type(alg) and clone is not alg
        help_text = alg.shortHelpString()
        assert "UniDiff" in help_text and "SatDiFuser" in help_text, alg.id()
        assert alg.helpUrl() == f"{Path(HELP_PATH).as_uri()}#{alg.id()}"  # shipped help, offline
        assert f'<tr id="{alg.id()}">' in help_page, alg.id()
        assert not alg.icon().isNull()


def test_checkenvironment_reports_this_interpreter(qgis_app, tmp_path, monkeypatch):
    import numpy
    import processing
    from osgeo import gdal
    from qgis.core import Qgis

    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("DIFFLC_BACKBONE", raising=False)
    out = tmp_path / "env.json"
    result = processing.run("difflc:checkenvironment", {"OUTPUT": str(out)})

    assert result["QGIS_VERSION"] == Qgis.QGIS_VERSION
    assert result["NUMPY_VERSION"] == numpy.__version__
    assert result["GDAL_VERSION"] == gdal.__version__
    assert result["GDAL_ARRAY_OK"] is True
    try:
        import torch
        assert result["TORCH_VERSION"] == torch.__version__
        assert result["CUDA_AVAILABLE"] == torch.cuda.is_available()
    except ImportError:
        assert result["TORCH_VERSION"] == "not installed" and "pip install" in result["PIP_COMMAND"]
    assert result["BACKBONE_INSTALLED"] is False and result["BACKBONE_PATH"] == ""
    assert str(tmp_path / "empty-cache" / "64x64_diffusion.pt") in result["BACKBONE_SEARCHED"]
    saved = json.loads(out.read_text())
    assert saved["NUMPY_VERSION"] == numpy.__version__ and saved["CACHE_DIR"] == str(tmp_path / "empty-cache")


def test_checkenvironment_finds_backbone_from_env_then_cache(qgis_app, tmp_path, monkeypatch):
    import processing

    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / "64x64_diffusion.pt"
    cached.write_bytes(b"not a real checkpoint")
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"x")
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(cache))
    monkeypatch.setenv("DIFFLC_BACKBONE", str(explicit))
    first = processing.run("difflc:checkenvironment", {})
    assert first["BACKBONE_INSTALLED"] is True and first["BACKBONE_PATH"] == str(explicit)
    explicit.unlink()  # a stale $DIFFLC_BACKBONE falls back to the cache
    second = processing.run("difflc:checkenvironment", {})
    assert second["BACKBONE_PATH"] == str(cached)


def test_missing_algorithm_module_is_logged_and_skipped(qgis_app):
    from qgis.core import QgsApplication

    from diffusion_landcover.algorithms import algorithm_classes
    from diffusion_landcover.algorithms.checkenvironment import CheckEnvironment

    messages = []
    log = QgsApplication.messageLog()
    log.messageReceived.connect(lambda message, tag, level: messages.append((tag, message)))
    classes = algorithm_classes(["no_such_algorithm_module", "checkenvironment"])
    assert classes == [CheckEnvironment]
    assert any(tag == "Diffusion Land Cover" and "no_such_algorithm_module" in message for tag, message in messages)


def test_progress_for_maps_feedback(qgis_app):
    from qgis.core import QgsProcessingFeedback

    from diffusion_landcover.algorithms.base import progress_for
    from diffusion_landcover.engine.progress import Cancelled

    feedback = QgsProcessingFeedback()
    logged = []
    feedback.pushInfo = logged.append  # Python-side override is what Progress calls
    progress = progress_for(feedback).sub(0.5, 1.0)
    progress.step(0.5)
    assert feedback.progress() == pytest.approx(75.0)
    progress.log("hello")
    assert logged == ["hello"]
    feedback.cancel()
    with pytest.raises(Cancelled):
        progress.step(0.9)


def test_the_error_boundary_turns_engine_errors_into_processing_exceptions(qgis_app):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from diffusion_landcover.algorithms.base import error_boundary, progress_for

    def engine_step(value, progress):
        progress.step(1.0)
        if value < 0:
            raise ValueError(f"band 3 of layer 'hsi' is empty (value {value})")
        return value * 2

    def run_engine(step, feedback, value):  # what processAlgorithm does around process()
        with error_boundary(feedback):
            return step(value, progress_for(feedback))

    feedback = QgsProcessingFeedback()
    assert run_engine(engine_step, feedback, 21) == 42
    assert feedback.progress() == pytest.approx(100.0)
    with pytest.raises(QgsProcessingException, match="band 3 of layer 'hsi' is empty"):
        run_engine(engine_step, feedback, -1)
    feedback.cancel()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_engine(engine_step, feedback, 1)


def test_torch_check_runs_before_parameters_for_algorithms_that_need_it(qgis_app, monkeypatch):
    from qgis.core import QgsProcessingContext, QgsProcessingException

    from diffusion_landcover.algorithms import base

    class NeedsTorch(base.DiffLcAlgorithm):
        NAME = "needstorch"
        NEEDS_TORCH = True

        def initAlgorithm(self, config=None):  # noqa: N802
            pass

    def missing():
        raise QgsProcessingException("PyTorch is not installed (test)")

    alg = NeedsTorch()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    assert alg.checkParameterValues({}, context)[0] is True
    monkeypatch.setattr(base, "require_torch", missing)
    ok, message = alg.checkParameterValues({}, context)
    assert ok is False and "PyTorch is not installed (test)" in message
    assert "PyTorch" in alg.shortHelpString()


class FakeIface:
    """The part of QgisInterface the plugin touches, recording every call."""

    def __init__(self):
        self.menu, self.toolbar, self.messages = [], [], []

    def mainWindow(self):  # noqa: N802
        return None

    def addPluginToMenu(self, menu, action):  # noqa: N802
        self.menu.append((menu, action))

    def removePluginMenu(self, menu, action):  # noqa: N802
        self.menu.remove((menu, action))

    def addToolBarIcon(self, action):  # noqa: N802
        self.toolbar.append(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self.toolbar.remove(action)

    def messageBar(self):  # noqa: N802
        return self

    def pushMessage(self, title, text, level=None, duration=None):  # noqa: N802
        self.messages.append((title, text, level))


def test_plugin_gui_adds_and_removes_everything(qgis_app, registry, monkeypatch):
    import processing
    from qgis.core import Qgis

    from diffusion_landcover import classFactory
    from diffusion_landcover.plugin import plugin as plugin_module
    from diffusion_landcover.plugin.provider import DiffusionLandCoverProvider

    registry.removeProvider(qgis_app.difflc_provider)  # the plugin registers its own
    iface = FakeIface()
    plugin = classFactory(iface)
    try:
        plugin.initGui()
        assert registry.providerById("difflc") is plugin.provider
        assert registry.algorithmById("difflc:checkenvironment") is not None
        assert iface.menu == [("Diffusion Land Cover", plugin.action), ("Diffusion Land Cover", plugin.install_action)]
        assert iface.toolbar == [plugin.action]

        assert plugin_module.MAIN_ALGORITHM == "difflc:trainandclassify"
        opened = []
        monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg_id, params: opened.append(alg_id))
        # an algorithm that is not registered: a message-bar warning, no dialog, no crash
        monkeypatch.setattr(plugin_module, "MAIN_ALGORITHM", "difflc:not_registered")
        plugin.action.trigger()
        assert opened == [] and iface.messages[-1][2] == Qgis.Warning
        assert "difflc:not_registered" in iface.messages[-1][1]
        monkeypatch.setattr(plugin_module, "MAIN_ALGORITHM", "difflc:checkenvironment")
        plugin.action.trigger()
        assert opened == ["difflc:checkenvironment"]
        plugin.install_action.trigger()  # the menu entry is the Processing algorithm's own dialog
        assert opened == ["difflc:checkenvironment", "difflc:installdependencies"]
        assert registry.algorithmById("difflc:installdependencies") is not None

        plugin.unload()
        assert iface.menu == [] and iface.toolbar == []
        assert registry.providerById("difflc") is None
        assert registry.algorithmById("difflc:checkenvironment") is None
    finally:
        if registry.providerById("difflc") is None:
            qgis_app.difflc_provider = DiffusionLandCoverProvider()
            registry.addProvider(qgis_app.difflc_provider)


def test_python_executable_when_embedded_in_the_qgis_binary(qgis_app, monkeypatch):
    """Inside QGIS sys.executable is the qgis binary: the command must still name a python."""
    import os
    import sys

    from diffusion_landcover.algorithms import install

    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    python = install.qgis_python_executable()
    assert os.path.basename(python).startswith("python") and os.path.isfile(python)
    assert os.path.realpath(python).startswith(os.path.realpath(sys.exec_prefix)) or \
        os.path.realpath(python) == os.path.realpath(sys._base_executable)
    assert install.pip_install_command().startswith(python + " -m pip install")

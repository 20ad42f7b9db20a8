"""difflc:installdependencies in QGIS: a real pip run from PyPI (a small package, a tmp folder), the second run's
"already installed", cancel through the feedback, the refusals before any work, and the folder the plugin
appends to sys.path at load. The engine side (constraints, nvidia-smi, offline, no network) is
tests/engine/test_installer.py."""
from __future__ import annotations

import os
import sys
import time

import pytest

PYPI = "https://pypi.org/simple"
PKG = "tomli==2.0.1"
ALG = "difflc:installdependencies"


@pytest.fixture
def clean_pip(monkeypatch):
    """This machine's pip settings off (a local wheel folder, mirrors): PyPI itself answers."""
    for key in [k for k in os.environ if k.startswith("PIP_") and k not in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def params(folder, **more):
    out = {"REQUIREMENTS": PKG, "FOLDER": str(folder), "INDEX_URL": PYPI}
    out.update(more)
    return out


def test_install_from_pypi_then_already_installed(qgis_app, tmp_path, clean_pip):
    import processing
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines, self.progress = [], []
            self.progressChanged.connect(self.progress.append)

        def pushInfo(self, info):  # noqa: N802
            self.lines.append(info)
            super().pushInfo(info)

    folder = tmp_path / "deps"
    log = Log()
    first = processing.run(ALG, params(folder), feedback=log)
    assert first["FOLDER"] == str(folder) and first["ALREADY_INSTALLED"] is False
    assert first["VERSIONS"] == "tomli 2.0.1" and (folder / "tomli" / "__init__.py").is_file()
    assert any(line.startswith("pip: Collecting tomli") for line in log.lines)
    assert any("Pinned to QGIS's own versions: " in line and "numpy==" in line for line in log.lines)
    assert log.progress and log.progress[-1] == 100.0
    t0 = time.monotonic()
    log = Log()
    second = processing.run(ALG, params(folder), feedback=log)
    assert second["ALREADY_INSTALLED"] is True and time.monotonic() - t0 < 5.0
    assert any(line.startswith("Already installed in") for line in log.lines)
    assert str(folder) not in sys.path  # another FOLDER than the plugin's is never put on the path


def test_cancel_through_the_feedback_removes_the_partial_folder(qgis_app, tmp_path, clean_pip):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class CancelAtCollecting(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            if info.startswith("pip: Collecting"):
                self.cancel()
            super().pushInfo(info)

    folder = tmp_path / "deps"
    with pytest.raises(QgsProcessingException, match="Cancelled by the user"):
        processing.run(ALG, params(folder), feedback=CancelAtCollecting())
    assert not folder.exists() and os.listdir(tmp_path) == []


def test_refusals_before_any_work(qgis_app, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context = QgsProcessingContext()
    ok, message = alg.checkParameterValues(params(tmp_path / "d", REQUIREMENTS="tomli>=2"), context)
    assert not ok and message.startswith("REQUIREMENTS: requirement 'tomli>=2' is not 'name' or 'name==version'")
    empty = tmp_path / "wheels"
    empty.mkdir()
    ok, message = alg.checkParameterValues(params(tmp_path / "d", WHEELS_FOLDER=str(empty)), context)
    assert not ok and f"WHEELS_FOLDER {empty} holds no .whl files" in message
    blocker = tmp_path / "file"
    blocker.write_text("")
    ok, message = alg.checkParameterValues(params(blocker / "deps"), context)
    assert not ok and message.startswith(f"cannot write to {blocker}")
    ok, message = alg.checkParameterValues(params(tmp_path / "d", INDEX_URL="pypi.org"), context)
    assert not ok and message.startswith("INDEX_URL: 'pypi.org' is not")
    assert alg.checkParameterValues(params(tmp_path / "new" / "d"), context) == (True, "")
    assert sorted(os.listdir(tmp_path)) == ["file", "wheels"]  # checked without creating anything


def test_plugin_folder_is_in_the_profile_and_appended_at_load(qgis_app, tmp_path, monkeypatch):
    from qgis.core import QgsApplication

    from diffusion_landcover import classFactory
    from diffusion_landcover.algorithms import install
    from diffusion_landcover.engine.installer import STAMP

    expected = os.path.join(QgsApplication.qgisSettingsDirPath(), "python", "difflc-deps",
                            "%d.%d" % sys.version_info[:2])
    assert install.dependency_folder() == expected
    folder = tmp_path / "deps"
    folder.mkdir()
    monkeypatch.setattr(install, "dependency_folder", lambda: str(folder))
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    first_site = next(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    classFactory(None)
    assert str(folder) not in sys.path  # not completed by the installer (no stamp): never put on the path
    (folder / STAMP).write_text("{}")
    classFactory(None)
    assert sys.path[-1] == str(folder) and sys.path.index(first_site) < sys.path.index(str(folder))

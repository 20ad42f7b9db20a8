"""difflc:downloadbackbone through Processing and through the real qgis_process, against a local server."""
from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from download_server import TINY_CONFIG, CheckpointServer, checkpoint_bytes

REPO = Path(__file__).resolve().parents[2]
CONFIG_JSON = json.dumps(TINY_CONFIG)


@pytest.fixture(scope="module")
def checkpoint():
    import torch
    from engine.networks.backbone import weights_fingerprint

    data = checkpoint_bytes()
    return data, weights_fingerprint(torch.load(io.BytesIO(data), weights_only=True))


@pytest.fixture
def server(checkpoint):
    srv = CheckpointServer(checkpoint[0]).start()
    yield srv
    srv.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(folder))
    monkeypatch.delenv("DIFFLC_BACKBONE", raising=False)
    return folder


def test_download_verify_and_reuse(qgis_app, server, checkpoint, tmp_path, cache):
    import processing

    out = tmp_path / "mirror" / "adm.pt"
    params = {"URL": server.url, "OUTPUT": str(out), "CONFIG": CONFIG_JSON}
    first = processing.run("difflc:downloadbackbone", params)
    assert first["OUTPUT"] == str(out) and out.read_bytes() == checkpoint[0]
    assert first["FINGERPRINT"] == checkpoint[1] and first["REUSED"] is False
    assert not cache.exists()  # an explicit OUTPUT leaves the cache alone

    second = processing.run("difflc:downloadbackbone", params)
    assert second["REUSED"] is True and second["FINGERPRINT"] == checkpoint[1]
    assert len(server.requests) == 1  # the verified file was not downloaded again
    processing.run("difflc:downloadbackbone", dict(params, OVERWRITE=True))
    assert len(server.requests) == 2


def test_default_output_is_the_cache_that_checkenvironment_searches(qgis_app, server, cache):
    import processing

    result = processing.run("difflc:downloadbackbone", {"URL": server.url, "CONFIG": CONFIG_JSON})
    expected = cache / "64x64_diffusion.pt"
    assert result["OUTPUT"] == str(expected) and expected.is_file()
    env = processing.run("difflc:checkenvironment", {})
    assert env["BACKBONE_INSTALLED"] is True and env["BACKBONE_PATH"] == str(expected)


def test_file_that_is_not_the_imagenet_backbone_is_refused_and_deleted(qgis_app, server, tmp_path, cache):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "adm.pt"
    with pytest.raises(QgsProcessingException, match="does not match config 'adm_imagenet_64'") as info:
        processing.run("difflc:downloadbackbone", {"URL": server.url, "OUTPUT": str(out)})
    assert "deleted" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_invalid_config_json_is_a_clear_error(qgis_app, server, tmp_path, cache):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="CONFIG is not a valid UNetConfig"):
        processing.run("difflc:downloadbackbone", {"URL": server.url, "OUTPUT": str(tmp_path / "a.pt"),
                                                   "CONFIG": "{not json"})
    assert server.requests == []  # nothing is downloaded before the parameters are understood


def test_cancel_keeps_the_partial_file_for_a_resume(qgis_app, server, checkpoint, tmp_path, cache, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from diffusion_landcover.engine.jobs import download as plugin_download

    monkeypatch.setattr(plugin_download, "CHUNK", 64 * 1024)
    out = tmp_path / "adm.pt"
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda percent: feedback.cancel() if percent > 20 else None)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("difflc:downloadbackbone", {"URL": server.url, "OUTPUT": str(out), "CONFIG": CONFIG_JSON},
                       feedback=feedback)
    part = out.with_name(out.name + ".part")
    assert not out.exists() and 0 < part.stat().st_size < len(checkpoint[0])
    kept = part.stat().st_size

    processing.run("difflc:downloadbackbone", {"URL": server.url, "OUTPUT": str(out), "CONFIG": CONFIG_JSON})
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert out.read_bytes() == checkpoint[0] and not part.exists()


def test_through_the_qgis_process_binary(qgis_app, server, checkpoint, tmp_path, cache):
    """The real qgis_process: parameters as strings, the server answering from this process's thread."""
    out = tmp_path / "adm.pt"
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    env.pop("DISPLAY", None)
    proc = subprocess.run(
        [str(REPO / "scripts" / "qgis_process"), "--json", "run", "difflc:downloadbackbone", "--",
         f"URL={server.url}", f"OUTPUT={out}", f"CONFIG={CONFIG_JSON}", "OVERWRITE=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert results["OUTPUT"] == str(out) and out.read_bytes() == checkpoint[0]
    assert results["FINGERPRINT"] == checkpoint[1]
    assert len(server.requests) == 1

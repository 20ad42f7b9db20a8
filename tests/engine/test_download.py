"""engine/jobs/download.py against a local HTTP server serving a tiny ADM checkpoint (plain torch state dict)."""
from __future__ import annotations

import io

import pytest
import torch

from download_server import TINY_CONFIG, CheckpointServer, checkpoint_bytes
from engine.jobs import download
from engine.networks.backbone import BackboneLoadError, UNetConfig, weights_fingerprint
from engine.progress import Cancelled, Progress

TINY = UNetConfig.from_dict(TINY_CONFIG)
OTHER = UNetConfig(name="tiny_other", model_channels=32, out_channels=3, num_res_blocks=1,
                   attention_resolutions=(2,), channel_mult=(1, 2), num_classes=None, learn_sigma=False,
                   num_head_channels=32)


def state_dict_bytes(config, seed=0) -> bytes:
    return checkpoint_bytes(config.to_dict(), seed=seed)


@pytest.fixture(scope="module")
def tiny_checkpoint():
    data = state_dict_bytes(TINY)
    return data, weights_fingerprint(torch.load(io.BytesIO(data), weights_only=True))


@pytest.fixture
def server(tiny_checkpoint):
    srv = CheckpointServer(tiny_checkpoint[0]).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 64 * 1024)  # many chunks: cancel and progress happen mid-file


def recording_progress():
    fractions, messages = [], []
    return Progress(on_progress=fractions.append, on_message=messages.append), fractions, messages


def test_full_download_verifies_strictly(server, tiny_checkpoint, tmp_path):
    progress, fractions, messages = recording_progress()
    dest = tmp_path / "cache" / "64x64_diffusion.pt"
    result = download.fetch_backbone(dest, server.url, progress, config=TINY)
    assert dest.read_bytes() == tiny_checkpoint[0]
    assert result.path == dest and not result.reused and result.resumed_from == 0
    assert result.downloaded_bytes == len(tiny_checkpoint[0])
    assert result.fingerprint == tiny_checkpoint[1]
    assert not download.part_path(dest).exists()
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and len(fractions) > 10
    assert any("strict load" in m for m in messages)
    assert "range" not in server.requests[0]


def test_existing_verified_file_is_reused_unless_overwrite(server, tiny_checkpoint, tmp_path):
    dest = tmp_path / "model.pt"
    download.fetch_backbone(dest, server.url, config=TINY)
    again = download.fetch_backbone(dest, server.url, config=TINY)
    assert again.reused and again.downloaded_bytes == 0 and again.fingerprint == tiny_checkpoint[1]
    assert len(server.requests) == 1
    forced = download.fetch_backbone(dest, server.url, config=TINY, overwrite=True)
    assert not forced.reused and len(server.requests) == 2
    assert download.download_backbone(dest, server.url, config=TINY) == dest and len(server.requests) == 3


def test_interrupted_download_resumes_with_range(server, tiny_checkpoint, tmp_path):
    data = tiny_checkpoint[0]
    dest = tmp_path / "64x64_diffusion.pt"
    server.cut_after = [300_000]
    with pytest.raises(ValueError, match="Run again to resume") as info:
        download.fetch_backbone(dest, server.url, config=TINY, retries=0)
    part = download.part_path(dest)
    assert str(part) in str(info.value)
    assert part.stat().st_size == 300_000 and not dest.exists()

    result = download.fetch_backbone(dest, server.url, config=TINY, retries=0)
    assert server.requests[1]["range"] == "bytes=300000-"
    assert dest.read_bytes() == data and result.resumed_from == 300_000
    assert result.downloaded_bytes == len(data) - 300_000 and not part.exists()


def test_interruption_is_resumed_automatically_within_one_call(server, tiny_checkpoint, tmp_path):
    dest = tmp_path / "x.pt"
    server.cut_after = [100_000, 500_000]
    progress, _, messages = recording_progress()
    download.download_file(server.url, dest, progress, retries=2, retry_delay=0)
    assert dest.read_bytes() == tiny_checkpoint[0]
    assert [r.get("range") for r in server.requests] == [None, "bytes=100000-", "bytes=600000-"]
    assert sum("Retrying" in m for m in messages) == 2


def test_server_without_range_support_restarts_cleanly(server, tiny_checkpoint, tmp_path):
    dest = tmp_path / "x.pt"
    part = download.part_path(dest)
    part.write_bytes(tiny_checkpoint[0][:200_000])
    server.support_range = False
    progress, _, messages = recording_progress()
    result = download.fetch_backbone(dest, server.url, progress, config=TINY)
    assert server.requests[0]["range"] == "bytes=200000-"  # asked, got a 200 with the whole file
    assert dest.read_bytes() == tiny_checkpoint[0] and result.resumed_from == 0
    assert any("does not support resuming" in m for m in messages)


def test_complete_part_file_is_verified_without_downloading_again(server, tiny_checkpoint, tmp_path):
    dest = tmp_path / "x.pt"
    download.part_path(dest).write_bytes(tiny_checkpoint[0])  # e.g. a crash between download and verify
    result = download.fetch_backbone(dest, server.url, config=TINY)
    assert result.downloaded_bytes == 0 and dest.read_bytes() == tiny_checkpoint[0]


def test_cancel_mid_download_keeps_part_and_no_final_file(server, tiny_checkpoint, tmp_path):
    dest = tmp_path / "x.pt"
    reports = []
    progress = Progress(on_progress=reports.append, is_canceled=lambda: len(reports) >= 3)
    with pytest.raises(Cancelled):
        download.fetch_backbone(dest, server.url, progress, config=TINY)
    part = download.part_path(dest)
    assert not dest.exists()
    assert 0 < part.stat().st_size < len(tiny_checkpoint[0])
    kept = part.stat().st_size
    download.fetch_backbone(dest, server.url, config=TINY)  # the next run resumes the kept part
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == tiny_checkpoint[0]


@pytest.mark.parametrize("payload, expected", [
    (bytes(range(256)) * 200, "not a plain tensor state dict|cannot be read"),
    (None, "does not match config 'tiny_test'"),
], ids=["random-bytes", "other-config"])
def test_wrong_file_is_rejected_and_deleted(payload, expected, tmp_path):
    payload = payload if payload is not None else state_dict_bytes(OTHER)
    srv = CheckpointServer(payload).start()
    try:
        dest = tmp_path / "x.pt"
        with pytest.raises(BackboneLoadError, match=expected) as info:
            download.fetch_backbone(dest, srv.url, config=TINY)
        assert "was deleted" in str(info.value) and srv.url in str(info.value)
        assert not dest.exists() and not download.part_path(dest).exists()
    finally:
        srv.stop()


def test_tiny_file_is_not_accepted_as_the_imagenet_backbone(server, tmp_path):
    """Without a config the expected network is ADM ImageNet 64: another ADM must be refused."""
    with pytest.raises(BackboneLoadError, match="adm_imagenet_64"):
        download.fetch_backbone(tmp_path / "x.pt", server.url)
    assert list(tmp_path.iterdir()) == []


def test_http_404_is_a_clear_value_error(server, tmp_path):
    url = server.url.replace("64x64_diffusion.pt", "missing.pt")
    with pytest.raises(ValueError, match="HTTP 404") as info:
        download.fetch_backbone(tmp_path / "x.pt", url, config=TINY)
    assert url in str(info.value) and not isinstance(info.value, BackboneLoadError)
    assert len(server.requests) == 1  # a 404 is not retried
    assert not (tmp_path / "x.pt").exists()


def test_unreachable_server_names_the_manual_download(tmp_path):
    srv = CheckpointServer(b"x").start()
    url = srv.url
    srv.stop()  # nothing listens on that port any more
    dest = tmp_path / "x.pt"
    with pytest.raises(ValueError, match="cannot reach the server") as info:
        download.fetch_backbone(dest, url, config=TINY, retries=1, retry_delay=0)
    assert "by hand" in str(info.value) and str(dest) in str(info.value)

"""Paper-reproduction plumbing: REAL Augsburg/Berlin label maps, SYNTHETIC cubes of the official shapes.

The stub pipeline classifies each pixel by the nearest training-class mean spectrum; the synthetic HSI gives
every labelled pixel its class's spectrum plus noise, so a transposed cube, shifted labels or a train/test
mix-up would show up as a collapse in accuracy, not pass silently.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio

from benchmarks import reproduce_s2fl as rep

LABELS = rep.REPO.parent / "shared" / "data" / "s2fl_labels"
pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not LABELS.exists(),
                                                         reason="real label maps <repo>/../shared/data/s2fl_labels missing")]


def nearest_class_mean(hsi, sar, train_labels, settings):
    classes = np.unique(train_labels[train_labels > 0])
    means = np.stack([hsi[train_labels == c].mean(axis=0) for c in classes])  # [K, B]
    flat = hsi.reshape(-1, hsi.shape[2])
    d = (flat ** 2).sum(1)[:, None] - 2 * flat @ means.T + (means ** 2).sum(1)[None]
    return classes[d.argmin(1)].reshape(train_labels.shape)


@pytest.fixture(scope="module")
def augsburg_dir(tmp_path_factory):
    spec = rep.DATASETS["augsburg"]
    train = sio.loadmat(str(LABELS / "augsburg" / "TrainImage.mat"))["TrainImage"].astype(np.int64)
    test = sio.loadmat(str(LABELS / "augsburg" / "TestImage.mat"))["TestImage"].astype(np.int64)
    truth = np.maximum(train, test)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, spec.hsi_bands)).astype(np.float32) * 0.5
    centres[0] = 0.0  # unlabelled pixels
    hsi = centres[truth]  # [H, W, B] float32, ~116 MB
    hsi += rng.standard_normal(hsi.shape, dtype=np.float32) * 0.3
    sar = rng.random((spec.height, spec.width, spec.sar_bands), dtype=np.float32)
    folder = tmp_path_factory.mktemp("augsburg")
    sio.savemat(str(folder / rep.HSI_FILE), {rep.HSI_VAR: hsi})
    del hsi
    sio.savemat(str(folder / rep.SAR_FILE), {rep.SAR_VAR: sar})
    (folder / "64x64_diffusion.pt").write_bytes(b"stub")
    return folder


def test_plan_checks_inputs_and_counts_official_labels(augsburg_dir):
    plan = rep.make_plan("augsburg", augsburg_dir, LABELS / "augsburg", str(augsburg_dir / "64x64_diffusion.pt"))
    counts = plan.labels.counts(7)
    assert sum(counts["train"]) == 761 and sum(counts["test"]) == 77_533
    assert all(n > 0 for n in counts["train"]) and all(n > 0 for n in counts["test"])
    s = plan.settings
    assert s.representation.rgb_bands == (22, 12, 7)  # paper's 0-based 21/11/6, settings are 1-based
    assert s.features.timesteps == (0,) and s.features.blocks == (10,)
    assert s.modalities == ("prgb", "pca", "sar") and s.backbone.checkpoint.endswith("64x64_diffusion.pt")
    berlin = rep.build_settings(rep.DATASETS["berlin"], None)
    assert berlin.representation.rgb_bands == (41, 31, 16) and berlin.features.timesteps == (300,)
    assert berlin.features.blocks == (11,)


def test_dry_run_prints_plan_and_published_numbers(augsburg_dir, capsys):
    rc = rep.main(["--dataset", "augsburg", "--data-dir", str(augsburg_dir), "--labels-dir",
                   str(LABELS / "augsburg"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "761 px" in out and "77533 px" in out and "332×485×180" in out
    assert "OA 93.08" in out and "dry run" in out


def test_stub_pipeline_runs_end_to_end_and_prints_beside_published(augsburg_dir, monkeypatch, capsys, tmp_path):
    calls = {}

    def stub(hsi, sar, train_labels, settings):
        calls.update(hsi=hsi.shape, sar=sar.shape, n_train=int((train_labels > 0).sum()))
        return nearest_class_mean(hsi, sar, train_labels, settings)

    monkeypatch.setattr(rep, "run_pipeline", stub)
    out_json = tmp_path / "result.json"
    rc = rep.main(["--dataset", "augsburg", "--data-dir", str(augsburg_dir), "--labels-dir",
                   str(LABELS / "augsburg"), "--checkpoint", str(augsburg_dir / "64x64_diffusion.pt"),
                   "--out", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    # the pipeline saw the cubes in the official orientation, the two SAR intensity bands and ONLY train labels
    assert calls == {"hsi": (332, 485, 180), "sar": (332, 485, 2), "n_train": 761}
    ours = [line for line in out.splitlines() if line.startswith("| ours |")]
    published = [line for line in out.splitlines() if line.startswith("| published |")]
    assert ours and published and "93.08" in published[0] and "89.97" in published[0]
    oa = float(ours[0].split("|")[2])
    assert oa > 90  # separable synthetic classes; a misaligned label map would fall to chance
    assert out_json.exists() and '"n_samples": 77533' in out_json.read_text()


def test_wrong_shaped_cube_is_named_clearly(tmp_path):
    sio.savemat(str(tmp_path / rep.HSI_FILE), {rep.HSI_VAR: np.zeros((332, 485, 100), np.float32)})
    sio.savemat(str(tmp_path / rep.SAR_FILE), {rep.SAR_VAR: np.zeros((332, 485, 4), np.float32)})
    with pytest.raises(rep.InputError) as e:
        rep.make_plan("augsburg", tmp_path, LABELS / "augsburg", None, require_checkpoint=False)
    msg = str(e.value)
    assert "data_HS_LR.mat:data_HS_LR" in msg and "(332, 485, 100)" in msg and "(332, 485, 180)" in msg


def test_missing_variable_and_missing_files_are_named(tmp_path, capsys):
    sio.savemat(str(tmp_path / rep.HSI_FILE), {rep.HSI_VAR: np.zeros((332, 485, 180), np.float32)})
    sio.savemat(str(tmp_path / rep.SAR_FILE), {"sar": np.zeros((332, 485, 4), np.float32)})
    with pytest.raises(rep.InputError, match=r"data_SAR_HR\.mat: variable 'data_SAR_HR' not found \(it has: sar\)"):
        rep.make_plan("augsburg", tmp_path, LABELS / "augsburg", None, require_checkpoint=False)
    rc = rep.main(["--dataset", "augsburg", "--data-dir", str(tmp_path / "nowhere"), "--dry-run"])
    assert rc == 2 and "data_HS_LR.mat not found" in capsys.readouterr().err


def test_berlin_labels_from_npy(tmp_path):
    """The shared folder has Berlin's real test map only: pair it with a tiny synthetic train map."""
    spec = rep.DATASETS["berlin"]
    test = np.load(LABELS / "berlin" / "test_label_berlin.npy")
    train = np.zeros_like(test)
    free = np.argwhere(test == 0)[:8]
    train[free[:, 0], free[:, 1]] = np.arange(1, 9)
    sio.savemat(str(tmp_path / "TrainImage.mat"), {"TrainImage": train})
    labels = rep.load_labels(spec, [tmp_path, LABELS / "berlin"])
    assert labels.test_source.endswith("test_label_berlin.npy")
    counts = labels.counts(8)
    assert sum(counts["test"]) == 461_851 and len(counts["test"]) == 8 and min(counts["test"]) > 0


def test_overlapping_train_and_test_is_rejected(tmp_path):
    test = sio.loadmat(str(LABELS / "augsburg" / "TestImage.mat"))["TestImage"]
    sio.savemat(str(tmp_path / "TrainImage.mat"), {"TrainImage": test})
    sio.savemat(str(tmp_path / "TestImage.mat"), {"TestImage": test})
    with pytest.raises(rep.InputError, match="labelled in both"):
        rep.load_labels(rep.DATASETS["augsburg"], [tmp_path])


def test_default_runner_explains_a_missing_pipeline(monkeypatch):
    from engine.tasks import landcover as pipeline

    monkeypatch.delattr(pipeline, "fit_predict_arrays", raising=False)
    with pytest.raises(NotImplementedError, match="fit_predict_arrays is not implemented"):
        rep.run_pipeline(np.zeros((4, 4, 3)), np.zeros((4, 4, 2)), np.zeros((4, 4), int), None)


def test_published_table_is_parsed_from_reference():
    row, source = rep.published_results("berlin")
    assert row["OA"] == 80.96 and row["mIoU"] == 53.34
    row, source = rep.published_results("augsburg", path=rep.REPO / "no-such-file.md")
    assert row == rep.PUBLISHED["augsburg"] and "embedded" in source

"""Many scenes on Dask (engine.jobs.batch): byte-identical to single-process classify, failures retried and reported,
cancel leaves nothing behind. Tiny scenes (96x96, 6 bands) and a tiny model keep the module at ~20 s."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis"))  # GDAL-only raster helpers
from helpers_rasters import sample_pixels, synthetic_scene, write_raster  # noqa: E402

from engine.jobs import batch  # noqa: E402
from engine.files import TEMP_PREFIX  # noqa: E402
from engine.progress import Cancelled, Progress  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two good scenes, one with the wrong band count, one that is not a raster; a tiny HSI-only model."""
    from engine.jobs import LabelGeometries, TrainRequest, classify, train
    from engine.settings import PipelineSettings

    root = tmp_path_factory.mktemp("batch")
    scenes = root / "scenes"
    scenes.mkdir()
    a = synthetic_scene(scenes, name="alpha", seed=1)
    b = synthetic_scene(scenes, name="beta", seed=2)
    (root / "tmp").mkdir()
    bad = synthetic_scene(root / "tmp", name="x")
    from osgeo import gdal

    ds = gdal.Open(bad.hsi)
    five = ds.ReadAsArray()[:5]
    write_raster(scenes / "gamma_hsi.tif", five, ds.GetGeoTransform(), nodata=-9999.0)  # 5 bands: model wants 6
    ds = None
    (scenes / "delta_hsi.tif").write_bytes(b"not a raster at all")
    for sar in scenes.glob("*_sar.tif"):
        sar.unlink()

    rows, cols = sample_pixels(a.truth, 8)
    xs, ys = a.pixel_centre(rows, cols)
    labels = LabelGeometries("labels", "class_id", np.asarray(xs), np.asarray(ys),
                             [int(v) for v in a.truth[rows, cols]])
    settings = PipelineSettings()
    settings.backbone.compact_steps = 2
    settings.tiles.stride = 32
    settings.spatial.sigma = 1.5  # a halo of 5 rows: row blocks must get it right
    settings.device = "cpu"
    model = str(root / "model.difflc")
    train(TrainRequest(a.hsi, None, labels, settings, model_path=model))
    tall = synthetic_scene(root / "tmp", name="tall", size=100, seed=5)  # window origins 0, 32, 36 (flush)
    reference = root / "reference"
    reference.mkdir()
    for s in (a, b):
        stem = Path(s.hsi).stem
        classify(model, s.hsi, None, str(reference / f"{stem}_classes.tif"),
                 str(reference / f"{stem}_confidence.tif"), device="cpu")
    return {"root": root, "scenes": scenes, "model": model, "reference": reference, "good": [a.hsi, b.hsi],
            "tall": tall.hsi,
            "bad": [str(scenes / "gamma_hsi.tif"), str(scenes / "delta_hsi.tif")]}


def _same_bytes(folder: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == names  # nothing more (no temporary), nothing less
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_two_real_worker_processes_match_single_process_classify_and_report_the_failure(data, tmp_path):
    plan = batch.plan_scenes(data["model"], data["good"] + data["bad"][:1], str(tmp_path), confidence=True)
    assert [u.output for u in plan.units] == [str(tmp_path / f"{s}_hsi_classes.tif") for s in ("alpha", "beta",
                                                                                                  "gamma")]
    messages, seen = [], []
    outcome = batch.run_batch(plan, batch.ClusterSpec(n_workers=2, processes=True),
                              Progress(on_message=messages.append), on_result=seen.append)
    assert [r.ok for r in outcome.results] == [True, True, False]
    failed = outcome.failed[0]
    assert failed.unit.hsi == data["bad"][0] and failed.attempts == 2 and len(failed.errors) == 2
    assert "BundleMismatchError" in failed.error and "band" in failed.error
    assert "gamma_hsi.tif" in outcome.summary() and "trying it once more" in "\n".join(messages)
    assert len(seen) == 3
    assert {r.worker for r in outcome.done} and all(r.worker.startswith("tcp://") for r in outcome.done)
    assert all(r.peak_rss_mib > 50 for r in outcome.done)
    _same_bytes(tmp_path, data["reference"])  # the failed scene left nothing, the staging folder is gone


def test_an_unreadable_input_fails_alone_on_threads(data, tmp_path):
    plan = batch.plan_scenes(data["model"], [data["bad"][1], data["good"][0]], str(tmp_path), confidence=True)
    outcome = batch.run_batch(plan, batch.ClusterSpec(n_workers=2, processes=False))
    assert [r.ok for r in outcome.results] == [False, True]
    assert outcome.failed[0].attempts == 2 and "delta_hsi.tif" in outcome.failed[0].error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha_hsi_classes.qml", "alpha_hsi_classes.tif",
                                                          "alpha_hsi_classes.tif.aux.xml", "alpha_hsi_confidence.tif"]


def test_cancel_stops_running_scenes_and_leaves_no_file(data, tmp_path, monkeypatch):
    """A scene that runs until cancelled: the batch stops it through the cluster event, nothing is left."""
    from engine import files
    from engine import jobs

    started = []

    def slow_classify(model, hsi, sar, output, confidence=None, progress=None, device="auto", **_):
        tmp = files.temp_beside(output, ".tif")
        Path(tmp).write_bytes(b"partial")
        started.append(tmp)
        try:
            for _ in range(600):
                progress.check()
                time.sleep(0.05)
        finally:
            files.discard(tmp)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(jobs, "classify", slow_classify)
    plan = batch.plan_scenes(data["model"], data["good"], str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        batch.run_batch(plan, batch.ClusterSpec(n_workers=2, processes=False),
                        Progress(is_canceled=lambda: len(started) == 2))
    assert time.perf_counter() - t0 < 20
    assert list(tmp_path.iterdir()) == []


def test_plan_refuses_what_would_lose_outputs(data, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "alpha_hsi.tif").write_bytes(Path(data["good"][0]).read_bytes())
    with pytest.raises(ValueError, match="same name 'alpha_hsi'"):
        batch.plan_scenes(data["model"], [data["good"][0], str(other / "alpha_hsi.tif")], str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        batch.plan_scenes(str(tmp_path / "none.difflc"), data["good"], str(tmp_path))
    with pytest.raises(ValueError, match="no input raster"):
        batch.plan_scenes(data["model"], [str(other)], str(tmp_path), pattern="*.jp2")
    with pytest.raises(ValueError, match="output folder"):
        batch.plan_scenes(data["model"], data["good"], str(tmp_path / "missing"))
    plan = batch.plan_scenes(data["model"], [str(data["scenes"])], str(tmp_path), pattern="*_hsi.tif")
    assert [u.name for u in plan.units] == ["alpha_hsi.tif", "beta_hsi.tif", "delta_hsi.tif", "gamma_hsi.tif"]


def test_command_line(data, tmp_path):
    out = tmp_path / "maps"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "engine.jobs.batch", data["model"], str(data["scenes"]), "-o", str(out),
                           "--glob", "*_hsi.tif", "--workers", "2", "--confidence"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # two of four scenes cannot be classified
    assert "2 of 4 scene(s) classified" in proc.stdout
    assert "FAILED " + data["bad"][0] in proc.stdout and "FAILED " + data["bad"][1] in proc.stdout
    for name in os.listdir(data["reference"]):
        assert (out / name).read_bytes() == (data["reference"] / name).read_bytes(), name
    assert not [p for p in os.listdir(out) if p.startswith(TEMP_PREFIX)]
    proc = subprocess.run([sys.executable, "-m", "engine.jobs.batch", data["model"], str(tmp_path / "nothing.tif"),
                           "-o", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nothing.tif does not exist" in proc.stderr


# ------------------------------------------------------------------------------------------------ row blocks

def _whole_and_blocks(model_path, hsi, ranges):
    from engine.jobs.bundle import load_bundle
    from engine.jobs import open_inputs
    from engine.tasks.landcover import from_bundle, predict_scene

    metadata, tensors = load_bundle(model_path)
    model = from_bundle(metadata, tensors, device="cpu")
    reader = open_inputs(hsi, None, Progress()).reader
    assert model.sigma == 1.5

    def collect(rows=None):
        out = {}

        def write(row, index, conf, probs):
            for i in range(index.shape[0]):
                assert row + i not in out, "a row was written twice"
                out[row + i] = (index[i].tobytes(), conf[i].tobytes(), probs[:, i].tobytes())
        predict_scene(model, reader, write, probabilities=True, rows=rows)
        return out

    whole = collect()
    return whole, {r: collect(r) for r in ranges}


def test_predict_scene_rows_give_the_whole_scene_rows_bit_for_bit(data):
    ranges = [(0, 100), (0, 7), (7, 40), (30, 31), (40, 68), (68, 100), (95, 100)]
    whole, blocks = _whole_and_blocks(data["model"], data["tall"], ranges)
    assert sorted(whole) == list(range(100))
    for (r0, r1), got in blocks.items():
        assert sorted(got) == list(range(r0, r1)), (r0, r1)
        for row, value in got.items():
            assert value == whole[row], (r0, r1, row)


def test_row_blocks_on_workers_assemble_into_the_classify_map(data, tmp_path):
    from engine.jobs import classify
    from helpers_rasters import read_array

    reference = tmp_path / "reference"
    reference.mkdir()
    classify(data["model"], data["tall"], None, str(reference / "tall_hsi_classes.tif"),
             str(reference / "tall_hsi_confidence.tif"), device="cpu")
    for name in os.listdir(data["reference"]):
        if name.startswith("alpha"):
            (reference / name).write_bytes((data["reference"] / name).read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    plan = batch.plan_scenes(data["model"], [data["tall"], data["good"][0]], str(out), confidence=True,
                             block_rows=40)
    assert [u.rows for u in plan.units] == [(0, 40), (40, 80), (80, 100), (0, 40), (40, 80), (80, 96)]
    outcome = batch.run_batch(plan, batch.ClusterSpec(n_workers=2, processes=False))
    assert [r.ok for r in outcome.results] == [True, True]
    assert [r.unit.output for r in outcome.results] == [str(out / "tall_hsi_classes.tif"),
                                                        str(out / "alpha_hsi_classes.tif")]
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))  # no block, no temporary left
    for name in os.listdir(reference):
        if name.endswith(".tif"):  # the pixels and every raster property; the file layout may differ
            got, got_facts = read_array(out / name)
            want, want_facts = read_array(reference / name)
            assert got.tobytes() == want.tobytes() and got_facts == want_facts, name
        else:
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name

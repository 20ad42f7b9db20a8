"""difflc:classifymany on a real remote Dask cluster (issue 19): `dask scheduler` and `dask worker` started as
separate processes on 127.0.0.1, exactly as the README's cluster section says. The scheduler runs WITHOUT the
plugin (cwd outside the repo, no PYTHONPATH): the maps must still be byte-identical to difflc:classify's, and a
worker that cannot import the plugin is refused before any work, by address, with what to put on its PYTHONPATH."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import scene_points, styled_layer, synthetic_scene, write_raster
from test_classifymany import classify_references

TINY = {"COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32}
START_TIMEOUT_S = 40
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(f"difflc:{alg}", params, feedback=feedback or QgsProcessingFeedback())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(pythonpath=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return env


class Processes:
    """The cluster's processes, each in its own session so that stopping one stops its nanny's children."""

    def __init__(self, cwd: Path):
        self.cwd, self.procs = cwd, []

    def start(self, args, env, log_name):
        log = open(self.cwd / log_name, "wb")
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=self.cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def stop(self, proc=None):
        for p, log in [x for x in self.procs if proc is None or x[0] is proc]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
            log.close()
            self.procs.remove((p, log))

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in self.cwd.glob("*.log"))


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=f"{START_TIMEOUT_S}s") as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module")
def cluster(qgis_app, tmp_path_factory):
    """A scheduler without the plugin and one `dask worker` (2 processes x 1 thread) with it on PYTHONPATH."""
    from conftest import import_plugin_package

    plugins_folder = Path(import_plugin_package().__file__).parent.parent  # holds diffusion_landcover -> repo
    cwd = tmp_path_factory.mktemp("cluster")  # outside the repo: `python -m` puts the cwd on sys.path
    scheduler_env = _env()
    probe = subprocess.run([sys.executable, "-c", "import diffusion_landcover"], cwd=cwd, env=scheduler_env,
                           capture_output=True)
    assert probe.returncode != 0, "the scheduler's Python must not see the plugin"
    procs = Processes(cwd)
    address = f"tcp://127.0.0.1:{_free_port()}"
    try:
        procs.start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
                    scheduler_env, "scheduler.log")
        procs.start(["worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
                     "--no-dashboard"], _env(plugins_folder), "worker.log")
        _wait_for_workers(address, 2)
        yield {"address": address, "procs": procs, "plugins_folder": plugins_folder}
    except BaseException:
        sys.stderr.write(procs.logs())
        raise
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def scenes(qgis_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote")
    good = [synthetic_scene(folder, name=name, seed=seed) for name, seed in (("east", 6), ("west", 7))]
    for sar in folder.glob("*_sar.tif"):
        sar.unlink()
    from osgeo import gdal

    ds = gdal.Open(good[0].hsi)  # 5 bands where the model wants 6: fails on its worker, reported by name
    write_raster(folder / "odd_hsi.tif", ds.ReadAsArray()[:5].astype(np.float32), ds.GetGeoTransform(),
                 nodata=-9999.0)
    ds = None
    return good, str(folder / "odd_hsi.tif")


@pytest.fixture(scope="module")
def model(scenes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote-model")
    points, _, _ = scene_points(scenes[0][0], folder / "labels.gpkg", per_class=8)
    path = str(folder / "model.difflc")
    run("trainclassifier", {"HSI": scenes[0][0].hsi, "LABELS": styled_layer(points), "CLASS_FIELD": "class_id",
                            "MODEL": path, **TINY})
    return path


def test_a_scheduler_without_the_plugin_classifies_like_classify(cluster, scenes, model, tmp_path):
    from qgis.core import QgsProcessingFeedback

    good, odd = scenes
    reference = classify_references(good, model, tmp_path / "reference")

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages, self.errors = [], []

        def pushInfo(self, info):  # noqa: N802
            self.messages.append(info)

        def reportError(self, error, fatalError=False):  # noqa: N802
            self.errors.append(error)

    out = tmp_path / "maps"
    feedback = Feedback()
    t0 = time.perf_counter()
    result = run("classifymany", {"MODEL": model, "INPUTS": [good[0].hsi, odd, good[1].hsi], "WORKERS": 1,
                                  "DASK_SCHEDULER": cluster["address"], "CONFIDENCE": True,
                                  "OUTPUT_FOLDER": str(out)}, feedback)
    seconds = time.perf_counter() - t0
    assert result["DONE"] == 2 and result["FAILED"] == 1, (feedback.messages, feedback.errors)
    assert result["OUTPUTS"] == [str(out / "east_hsi_classes.tif"), str(out / "west_hsi_classes.tif")]
    assert len(feedback.errors) == 1 and "odd_hsi.tif" in feedback.errors[0] and "band" in feedback.errors[0]
    assert any(m.startswith("2 worker(s) import the plugin from ") for m in feedback.messages)
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))  # the failed scene left nothing
    for name in os.listdir(reference):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    print(f"remote classifymany of 3 scenes: {seconds:.1f} s")


def test_a_worker_without_the_plugin_is_refused_before_any_work(cluster, scenes, model, tmp_path):
    from qgis.core import QgsProcessingException

    procs, address = cluster["procs"], cluster["address"]
    port = _free_port()
    bad = procs.start(["worker", address, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
                       "--worker-port", str(port), "--no-nanny", "--no-dashboard"], _env(), "bad-worker.log")
    try:
        _wait_for_workers(address, 3)
        out = tmp_path / "maps"
        with pytest.raises(QgsProcessingException) as refused:
            run("classifymany", {"MODEL": model, "INPUTS": [s.hsi for s in scenes[0]], "WORKERS": 1,
                                 "DASK_SCHEDULER": address, "OUTPUT_FOLDER": str(out)})
        message = str(refused.value)
        assert "\n" not in message.strip()
        assert f"1 of 3 Dask worker(s) cannot import the plugin as 'diffusion_landcover' (tcp://127.0.0.1:{port}:" \
            in message, message
        assert "No module named 'diffusion_landcover'" in message
        assert f"on their PYTHONPATH (here {cluster['plugins_folder']})" in message
        assert not out.exists() or list(out.iterdir()) == []
    finally:
        procs.stop(bad)

"""Issue 19: a stop (SIGTERM, SIGINT, cancel) at any moment of a run leaves nothing hidden or partial, runs side
by side in one QGIS process keep their own temporaries, and the plugin changes no process-wide state.

The moments are hooked, not raced: the signal is raised in the running thread (``signal.raise_signal``) from
inside the step under test, so each case hits exactly the moment it names, every time. The real-process
counterpart, signals at evenly spread moments of a real ``qgis_process`` run, is ``scripts/stress_signals.py``
(results in BENCHMARKS.md).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import synthetic_scene
from test_issue10_safety import _qgis_process, digest, model, scene  # noqa: F401 - the fixtures

REPO = Path(__file__).resolve().parents[2]


def _modules():
    from diffusion_landcover.engine import files
    from diffusion_landcover.engine.data import raster_io

    return files, raster_io


def _after(obj, name, monkeypatch, signum=signal.SIGTERM, nth=1, before=False, when=lambda *a, **k: True):
    """Raise ``signum`` in this thread right after (or before) the ``nth`` call of ``obj.name`` that ``when``
    accepts."""
    real = getattr(obj, name)
    calls = []

    def hooked(*args, **kwargs):
        if not when(*args, **kwargs):
            return real(*args, **kwargs)
        calls.append(1)
        if before and len(calls) == nth:
            signal.raise_signal(signum)
        result = real(*args, **kwargs)
        if not before and len(calls) == nth:
            signal.raise_signal(signum)
        return result

    monkeypatch.setattr(obj, name, hooked)
    return calls


def _moment(name, monkeypatch):
    from osgeo import gdal

    files, raster_io = _modules()
    hooks = {
        # inside the step that creates and registers a temporary: mkstemp has made the file
        "temporary file made": lambda: _after(tempfile, "mkstemp", monkeypatch,
                                              when=lambda *a, **k: k.get("suffix") == ".tif"),
        "temporary registered": lambda: _after(files, "temp_beside", monkeypatch),
        "GeoTIFF created": lambda: _after(raster_io, "_create_tiff", monkeypatch),
        "confidence GeoTIFF created": lambda: _after(raster_io, "_create_tiff", monkeypatch, nth=2),
        "first block written": lambda: _after(raster_io.ClassifiedWriter, "write", monkeypatch),
        "SIGINT while writing": lambda: _after(raster_io.ClassifiedWriter, "write", monkeypatch,
                                               signum=signal.SIGINT),
        # GDAL writes the .aux.xml sidecar (category names) when the dataset is flushed
        "GDAL writes the sidecar": lambda: _after(gdal.Dataset, "FlushCache", monkeypatch),
        "files closed, before the moves": lambda: _after(raster_io.ClassifiedWriter, "_close", monkeypatch),
        "between the final moves": lambda: _after(files, "_move", monkeypatch),
    }
    return hooks[name]()


MOMENTS = ["temporary file made", "temporary registered", "GeoTIFF created", "confidence GeoTIFF created",
           "first block written", "SIGINT while writing", "GDAL writes the sidecar",
           "files closed, before the moves", "between the final moves"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_stop_at_any_moment_leaves_nothing_hidden_or_partial(scene, model, tmp_path, monkeypatch, moment):
    import processing
    from qgis.core import QgsProcessingException

    s, _, folder = scene
    before = digest(folder)
    out = tmp_path / "out"
    out.mkdir()
    calls = _moment(moment, monkeypatch)
    with pytest.raises(QgsProcessingException) as info:
        processing.run("difflc:classify", {"MODEL": model, "HSI": s.hsi, "SAR": s.sar,
                                           "OUTPUT": str(out / "map.tif"), "CONFIDENCE": str(out / "conf.tif")})
    monkeypatch.undo()
    message = str(info.value)
    assert calls, "the hooked step never ran"
    assert ("SIGINT" if "SIGINT" in moment else "SIGTERM") in message, message
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".difflc-")], names
    if moment == "between the final moves":  # held until the moves were over: every output complete
        assert {"map.tif", "conf.tif", "map.qml"} <= set(names), names
        assert "outputs completed before it" in message and "map.tif" in message, message
        from osgeo import gdal

        assert gdal.Open(str(out / "map.tif")).ReadAsArray().max() > 0
    else:
        assert names == [], names
        assert "no output was written or changed" in message
    assert digest(folder) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_handlers_come_back_after_a_run(scene, model, tmp_path):
    import processing

    s, _, _ = scene
    term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    processing.run("difflc:classify", {"MODEL": model, "HSI": s.hsi, "OUTPUT": str(tmp_path / "m.tif"),
                                       "SAR": s.sar})
    assert signal.getsignal(signal.SIGTERM) is term and signal.getsignal(signal.SIGINT) is intr


def test_a_stop_swallowed_by_a_library_is_still_reported_as_the_signal(qgis_app):
    """The handler runs wherever the main thread is, also inside a third-party bare ``except:`` that swallows
    Terminated. The cancel it requested then stops the run as Cancelled: the user must still read SIGTERM, and
    a plain cancel must still read as a cancel."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from diffusion_landcover.algorithms.base import error_boundary
    from diffusion_landcover.engine.progress import Progress

    feedback = QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException) as info:
        with error_boundary(feedback):
            try:
                signal.raise_signal(signal.SIGTERM)
                for _ in range(100):  # the handler runs at the next bytecode; never more than a few
                    time.sleep(0.001)
            except BaseException:  # noqa: B902 - what the library does
                pass
            assert feedback.isCanceled()
            Progress(is_canceled=feedback.isCanceled).check()
    assert "SIGTERM" in str(info.value)

    feedback = QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException) as info:
        with error_boundary(feedback):
            feedback.cancel()
            Progress(is_canceled=feedback.isCanceled).check()
    assert "Cancelled by the user" in str(info.value)


def test_a_stop_turned_into_another_exception_is_still_reported_as_the_signal(qgis_app):
    """A C extension's import that a signal interrupts re-raises it as an ImportError (CI saw SIGINT land while
    GDAL's gdal_array imported numpy's C API, and the user read "unexpected ImportError ... a bug"). The run was
    stopped: the message must say so, for whatever exception carries the stop; without a stop the same
    ImportError stays a bug report."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from diffusion_landcover.algorithms.base import error_boundary

    def import_interrupted(signum):
        try:
            signal.raise_signal(signum)
            for _ in range(100):
                time.sleep(0.001)
        except BaseException:  # noqa: B902 - what numpy's import_array does with any error
            raise ImportError("numpy.core.multiarray failed to import") from None

    for signum in (signal.SIGINT, signal.SIGTERM):
        with pytest.raises(QgsProcessingException) as info:
            with error_boundary(QgsProcessingFeedback()):
                import_interrupted(signum)
        assert signal.Signals(signum).name in str(info.value) and "bug" not in str(info.value), str(info.value)

    with pytest.raises(QgsProcessingException) as info:
        with error_boundary(QgsProcessingFeedback()):
            raise ImportError("numpy.core.multiarray failed to import")
    assert "unexpected ImportError" in str(info.value)


def test_a_stop_inside_an_uninterrupted_step_is_raised_when_it_ends():
    from diffusion_landcover.engine.stopping import Terminated, stop_signals_unwind, uninterrupted

    done = []
    with pytest.raises(Terminated) as info:
        with stop_signals_unwind():
            with uninterrupted():
                signal.raise_signal(signal.SIGTERM)
                for _ in range(100):
                    time.sleep(0.001)
                done.append("the step finished")
            done.append("never reached")
    assert done == ["the step finished"] and info.value.signal_name == "SIGTERM"


# ------------------------------------------------------------------------------------------- side by side

def test_two_runs_at_once_one_failing_keep_their_own_temporaries(scene, model, tmp_path, monkeypatch):
    """As Processing's background tasks do: two algorithms in two threads of one QGIS process. Run B fails while
    run A is writing; A's temporaries are A's, so A's map comes out complete (with one process-wide register,
    B's clean-up removed them)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    from diffusion_landcover.engine.data import raster_io

    s, _, _ = scene
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    a_out.mkdir(), b_out.mkdir()
    a_writing, b_done = threading.Event(), threading.Event()
    real_write = raster_io.ClassifiedWriter.write

    def write(self, *args, **kwargs):
        if self.path.startswith(str(a_out)) and not a_writing.is_set():
            a_writing.set()
            assert b_done.wait(120), "run B never finished"
        elif self.path.startswith(str(b_out)):
            assert a_writing.wait(120), "run A never started writing"
            raise RuntimeError("planted failure of run B")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(raster_io.ClassifiedWriter, "write", write)
    results = {}

    class Errors(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors = []

        def reportError(self, error, fatalError=False):  # noqa: N802
            self.errors.append(error)

    def run(key, out):
        alg = QgsApplication.processingRegistry().createAlgorithmById("difflc:classify")
        context, feedback = QgsProcessingContext(), Errors()
        params = {"MODEL": model, "HSI": s.hsi, "SAR": s.sar, "OUTPUT": str(out / "map.tif"),
                  "CONFIDENCE": str(out / "conf.tif")}
        try:
            ok, message = alg.checkParameterValues(params, context)
            assert ok, message
            _, ok = alg.run(params, context, feedback)  # as QgsProcessingAlgRunnerTask does
            results[key] = (ok, " ".join(feedback.errors))
        finally:
            if key == "B":
                b_done.set()

    threads = [threading.Thread(target=run, args=("A", a_out)), threading.Thread(target=run, args=("B", b_out))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["B"][0] is False and "planted failure" in results["B"][1], results
    assert results["A"] == (True, ""), results
    assert sorted(p.name for p in b_out.iterdir()) == []
    names = sorted(p.name for p in a_out.iterdir())
    assert {"map.tif", "conf.tif", "map.qml"} <= set(names) and not [n for n in names if n.startswith(".")], names
    from osgeo import gdal

    data = gdal.Open(str(a_out / "map.tif")).ReadAsArray()
    assert data.shape == s.shape and set(np.unique(data)) <= {1, 2}


def test_the_plugin_leaves_gdal_error_modes_and_random_generators_as_it_found_them(scene, tmp_path):
    """In a fresh interpreter: importing the provider and the engine, reading a raster and training a model
    switch neither GDAL's, OGR's nor OSR's exception mode, nor reseed Python's, numpy's or torch's generators."""
    s, labels, _ = scene
    code = f"""
import random, sys
sys.path.insert(0, {str(tmp_path / 'pkg')!r})
from osgeo import gdal, ogr, osr
import numpy as np
import torch
modes = lambda: (gdal.GetUseExceptions(), ogr.GetUseExceptions(), osr.GetUseExceptions())
assert modes() == (0, 0, 0), modes()
random.seed(7); np.random.seed(7); torch.manual_seed(7)
states = lambda: (random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state().tolist())
before = states()
import diffusion_landcover.plugin.provider
from diffusion_landcover.engine.data import raster_io, labels
from diffusion_landcover.engine import jobs
from diffusion_landcover.engine.settings import PipelineSettings
assert modes() == (0, 0, 0), ("import", modes())
raster_io.read_info({s.hsi!r})
try:
    raster_io.read_info({str(tmp_path / 'missing.tif')!r})
except Exception:
    pass
assert modes() == (0, 0, 0), ("read", modes())
rows, cols = np.nonzero(np.ones({s.shape!r}, bool))
pick = np.random.default_rng(0).choice(rows.size, 24, replace=False)
info = raster_io.read_info({s.hsi!r})
gt = info.geotransform
xs, ys = gt[0] + (cols[pick] + 0.5) * gt[1], gt[3] + (rows[pick] + 0.5) * gt[5]
truth = np.array({s.truth.tolist()!r})
geoms = jobs.LabelGeometries("pts", "class_id", xs, ys, [int(v) for v in truth[rows[pick], cols[pick]]])
settings = PipelineSettings.from_dict(dict(compact_steps=2, stride=32, trees=10))
jobs.train(jobs.TrainRequest({s.hsi!r}, {s.sar!r}, geoms, settings, {str(tmp_path / 'm.difflc')!r}))
assert modes() == (0, 0, 0), ("train", modes())
jobs.classify({str(tmp_path / 'm.difflc')!r}, {s.hsi!r}, {s.sar!r}, {str(tmp_path / 'map.tif')!r})
assert modes() == (0, 0, 0), ("classify", modes())
assert states() == before, "a generator was reseeded"
print("OK")
"""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "diffusion_landcover").symlink_to(REPO, target_is_directory=True)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- qgis_process

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_real_qgis_process_run_leaves_nothing_behind(model, tmp_path, signum):
    """A real qgis_process classify, signalled once its map is being written. Whatever moment the signal
    lands, the result is one of two correct ones: stopped (exit 1, the signal named, the folder empty) or, if the
    run had already finished its outputs, complete (exit 0). Never a hidden or partial file."""
    big = synthetic_scene(tmp_path, size=512, name="big")
    out = tmp_path / "out"
    out.mkdir()
    with open(tmp_path / "stdout.txt", "w") as so, open(tmp_path / "stderr.txt", "w") as se:
        proc = _qgis_process(["difflc:classify", "--", f"MODEL={model}", f"HSI={big.hsi}", f"SAR={big.sar}",
                              f"OUTPUT={out / 'map.tif'}", f"CONFIDENCE={out / 'conf.tif'}"], tmp_path,
                             stdout=so, stderr=se)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not any(out.iterdir()):
            time.sleep(0.01)
        assert any(out.iterdir()) or proc.poll() is not None, "the map was never started"
        proc.send_signal(signum)
        proc.wait(timeout=120)
    err = (tmp_path / "stderr.txt").read_text()
    names = sorted(p.name for p in out.iterdir() if not p.name.endswith(".aux.xml") or not p.name.startswith("."))
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [], (hidden, err)
    if proc.returncode == 1:
        assert signal.Signals(signum).name in err, err
        assert names == [], names
    else:
        assert proc.returncode == 0, err
        assert {"map.tif", "conf.tif", "map.qml"} <= set(names), names

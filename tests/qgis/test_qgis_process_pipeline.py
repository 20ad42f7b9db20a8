"""The one-step pipeline through the real qgis_process binary (scripts/qgis_process), as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers_rasters import read_array, scene_points, synthetic_scene

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "qgis_process"


def qgis_process(*args, cwd, timeout=300):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(cwd / "profile")
    env["OMP_NUM_THREADS"] = "1"  # tiny networks: one thread is faster and steadier on a shared 2-core machine
    return subprocess.run([str(LAUNCHER), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    scene = synthetic_scene(folder)
    labels, rows, cols = scene_points(scene, folder / "labels.gpkg", per_class=8)
    return scene, labels, rows, cols


@pytest.mark.slow
def test_trainandclassify_through_qgis_process(inputs, tmp_path):
    scene, labels, rows, cols = inputs
    out = tmp_path / "landcover.tif"
    proc = qgis_process("--json", "run", "difflc:trainandclassify", "--", f"HSI={scene.hsi}", f"SAR={scene.sar}",
                        f"LABELS={labels}", "CLASS_FIELD=class_id", "COMPACT_STEPS=2", "ADAPT_STEPS=2", "STRIDE=32",
                        f"OUTPUT={out}", f"MODEL={tmp_path / 'model.difflc'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert results["OUTPUT"] == str(out) and results["MODEL"] == str(tmp_path / "model.difflc")
    assert out.is_file() and (tmp_path / "landcover.qml").is_file() and (tmp_path / "model.difflc").is_file()
    data, facts = read_array(out)
    assert facts["dtype"] == "Byte" and facts["categories"][1:3] == ["class 1", "class 2"]  # no style in the file
    held_out = np.ones(scene.shape, bool)
    held_out[rows, cols] = False
    assert (data[held_out] == scene.truth[held_out]).mean() > 0.9


def test_failing_run_exits_non_zero_with_the_message(inputs, tmp_path):
    scene, labels, _, _ = inputs
    out = tmp_path / "landcover.tif"
    proc = qgis_process("run", "difflc:trainandclassify", "--", f"HSI={scene.hsi}", f"LABELS={labels}",
                        "CLASS_FIELD=landuse", "COMPACT_STEPS=2", "ADAPT_STEPS=2", f"OUTPUT={out}", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]  # a clean failure, not a crash (139)
    assert "has no field 'landuse'" in output and "Available fields: fid, class_id" in output, output[-3000:]
    assert not out.exists()

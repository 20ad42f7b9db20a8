"""difflc:classifymany through processing.run: two scenes on two local Dask worker processes give the maps
difflc:classify gives; bad parameters are refused before any work; loading the provider imports neither torch
nor dask (qgis_process loads it at every call)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_rasters import scene_points, styled_layer, synthetic_scene

TINY = {"COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(alg, params, feedback=None):
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(f"difflc:{alg}", params, feedback=feedback or QgsProcessingFeedback())


@pytest.fixture(scope="module")
def scenes(qgis_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    return [synthetic_scene(folder, name=name, seed=seed) for name, seed in (("north", 3), ("south", 4))]


@pytest.fixture(scope="module")
def model(scenes, tmp_path_factory):
    """A tiny HSI-only model (one raster per scene is what classifymany takes)."""
    folder = tmp_path_factory.mktemp("model")
    points, _, _ = scene_points(scenes[0], folder / "labels.gpkg", per_class=8)
    path = str(folder / "model.difflc")
    run("trainclassifier", {"HSI": scenes[0].hsi, "LABELS": styled_layer(points), "CLASS_FIELD": "class_id",
                            "MODEL": path, **TINY})
    return path


def classify_references(scenes, model, folder: Path) -> Path:
    """What ``classify`` writes for each scene, named as classifymany names its outputs."""
    folder.mkdir()
    for s in scenes:
        stem = Path(s.hsi).stem
        run("classify", {"MODEL": model, "HSI": s.hsi, "OUTPUT": str(folder / f"{stem}_classes.tif"),
                         "CONFIDENCE": str(folder / f"{stem}_confidence.tif")})
    return folder


def test_classifymany_on_two_worker_processes_matches_classify(scenes, model, tmp_path):
    from qgis.core import QgsProcessingFeedback

    reference = classify_references(scenes, model, tmp_path / "reference")

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages, self.progress, self.polled = [], [], 0

        def pushInfo(self, info):  # noqa: N802
            self.messages.append(info)

        def setProgress(self, value):  # noqa: N802
            self.progress.append(value)

        def isCanceled(self):  # noqa: N802
            self.polled += 1
            return False

    out = tmp_path / "maps"  # created by the run
    feedback = Feedback()
    result = run("classifymany", {"MODEL": model, "INPUTS": [s.hsi for s in scenes], "WORKERS": 2,
                                  "CONFIDENCE": True, "OUTPUT_FOLDER": str(out)}, feedback)
    assert result["DONE"] == 2 and result["FAILED"] == 0 and result["OUTPUT_FOLDER"] == str(out)
    assert result["OUTPUTS"] == [str(out / "north_hsi_classes.tif"), str(out / "south_hsi_classes.tif")]
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))  # no temporary, no staging folder left
    for name in os.listdir(reference):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert feedback.progress[-1] == 100.0 and len([m for m in feedback.messages if m.startswith("[")]) == 2
    assert feedback.polled > 0


def test_classifymany_refuses_bad_parameters_before_any_work(scenes, model, tmp_path):
    from qgis.core import QgsProcessingException

    garbage = tmp_path / "broken.tif"
    garbage.write_bytes(b"not a raster")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    cases = [
        ({"MODEL": str(tmp_path / "none.difflc"), "INPUTS": [scenes[0].hsi]}, "does not exist"),
        ({"MODEL": model, "INPUTS": [str(garbage)]}, "broken.tif"),
        ({"MODEL": model, "INPUTS": [scenes[0].hsi], "OUTPUT_FOLDER": str(not_a_folder)}, "is not a folder"),
        ({"MODEL": model}, "INPUTS"),
        ({"MODEL": model, "INPUT_FOLDER": str(tmp_path), "PATTERN": "*.jp2"}, "no input raster"),
    ]
    for params, expected in cases:
        params.setdefault("OUTPUT_FOLDER", str(tmp_path / "out"))
        with pytest.raises(QgsProcessingException, match=expected):
            run("classifymany", params)
    assert not (tmp_path / "out").exists()


def test_loading_the_provider_imports_neither_torch_nor_dask(qgis_app, tmp_path):
    link_dir = tmp_path / "pkg"
    link_dir.mkdir()
    (link_dir / "diffusion_landcover").symlink_to(Path(__file__).resolve().parents[2], target_is_directory=True)
    code = ("import sys\n"
            "from qgis.core import QgsApplication\n"
            "app = QgsApplication([], False); app.initQgis()\n"
            "from diffusion_landcover.plugin.provider import DiffusionLandCoverProvider\n"
            "provider = DiffusionLandCoverProvider()\n"
            "assert QgsApplication.processingRegistry().addProvider(provider)\n"
            "ids = [a.id() for a in provider.algorithms()]\n"
            "assert 'difflc:classifymany' in ids, ids\n"
            "[a.shortHelpString() for a in provider.algorithms()]\n"
            "print(sorted(m for m in ('torch', 'dask', 'distributed') if m in sys.modules))\n"
            "import os; os._exit(0)\n")
    env = dict(os.environ, PYTHONPATH=str(link_dir), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"

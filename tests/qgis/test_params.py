"""Dialog values → engine settings (algorithms/params.py), and the checks that stop a bad value before any work."""
from __future__ import annotations

import pytest


def _alg(name):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(f"difflc:{name}")
    assert alg is not None, name
    return alg


def _settings(alg, params):
    from qgis.core import QgsProcessingContext

    from diffusion_landcover.algorithms.params import settings_from_parameters

    return settings_from_parameters(alg, params, QgsProcessingContext())


def test_defaults_translate_to_the_engine_defaults(qgis_app):
    from diffusion_landcover.engine.settings import PipelineSettings

    got = _settings(_alg("trainclassifier"), {}).to_dict()
    want = PipelineSettings().to_dict()
    assert got == want


def test_every_advanced_value_reaches_its_setting(qgis_app):
    alg = _alg("trainandclassify")
    s = _settings(alg, {
        "TIMESTEPS": "100, 250", "BLOCKS": "3;4", "HEAD": 1, "TREES": 120, "FEATURE_CHECK": False, "FUSION": 3,
        "SPECTRUM": False, "CLASS_WEIGHTS": True, "STRIDE": 48, "SMOOTHING": 1.5, "RGB_BANDS": "30 20 10",
        "SAR_UNITS": 2, "ADAPT_STEPS": 7, "ADAPT_PRESET": 1, "ADAPT_BATCH": 4, "COMPACT_STEPS": 9, "SEED": 3,
        "DEVICE": 1, "BACKBONE_SOURCE": 1, "REGULARISER": 1, "SELF_TRAINING": 2, "ADAPT_TIME_BUDGET": 90})
    assert s.features.timesteps == (100, 250) and s.features.blocks == (3, 4)
    assert s.head.kind == "mlp" and s.head.trees == 120 and s.head.feature_check_p == 0.0
    assert s.features.fusion == "moe" and not s.head.include_spectrum and s.head.class_weighting
    assert s.tiles.stride == 48 and s.spatial.sigma == 1.5
    assert s.spatial.method == "gaussian" and s.selftrain.mode == "off"
    assert s.representation.rgb_bands == (30, 20, 10) and s.representation.sar_db is False
    assert s.adaptation.steps == 7 and s.adaptation.preset == "public" and s.adaptation.batch_size == 4
    assert s.backbone.compact_steps == 9 and s.seed == 3 and s.device == "cpu"
    assert s.backbone.source == "untrained" and s.adaptation.time_budget_s == 5400.0
    # -1 means "chosen for you": the smoothing by cross-validation, the adaptation steps by the network
    s = _settings(alg, {"SMOOTHING": -1, "ADAPT_STEPS": -1})
    assert s.spatial.sigma is None and s.adaptation.steps is None
    assert _settings(alg, {"ADAPT_TIME_BUDGET": 0}).adaptation.time_budget_s is None  # 0 = no limit


@pytest.mark.parametrize("name, value, words", [
    ("TIMESTEPS", "1000", "TIMESTEPS must be one or more integers between 0 and 999"),
    ("TIMESTEPS", "200,abc", "TIMESTEPS must be whole numbers"),
    ("BLOCKS", "4.5", "BLOCKS must be whole numbers"),
    ("RGB_BANDS", "3,2", "RGB_BANDS needs exactly three band numbers"),
    ("RGB_BANDS", "0,2,3", "RGB_BANDS needs exactly three band numbers from 1 up"),
])
def test_a_bad_value_stops_the_dialog_before_any_work(qgis_app, tmp_path, name, value, words):
    from qgis.core import QgsProcessingContext

    alg = _alg("trainclassifier")
    ok, message = alg.checkParameterValues({name: value, "MODEL": str(tmp_path / "m.difflc")}, QgsProcessingContext())
    assert not ok and words in message
    assert not list(tmp_path.iterdir())  # nothing written

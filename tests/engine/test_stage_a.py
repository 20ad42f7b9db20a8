"""Stage A as the product runs it: the untrained default, the shipped prior and its FiLM adaptation, smoothing in
the model file (no GDAL, no QGIS)."""
import numpy as np
import pytest
import torch

from engine.networks.backbone import load_backbone, weights_fingerprint
from engine.paths import shipped_prior
from engine.tasks.landcover import (TrainingPixels, bundle_payload, fit, fit_scene_representations, from_bundle,
                             predict_scene, prepare_backbone)
from engine.progress import Progress
from engine.data.readers import ArrayReader, StackedReader
from engine.settings import PipelineSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(n=72, bands=6, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, n), np.int64)
    truth[:, n // 2:] = 1
    spectra = np.array([np.linspace(0.1, 0.3, bands), np.linspace(0.4, 0.1, bands)], np.float32)
    hsi = spectra[truth].transpose(2, 0, 1) + rng.normal(scale=0.05, size=(bands, n, n)).astype(np.float32)
    rows, cols = [], []
    for c in (0, 1):
        r, k = np.nonzero(truth == c)
        pick = rng.choice(r.size, 6, replace=False)
        rows.append(r[pick])
        cols.append(k[pick])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return hsi.astype(np.float32), truth, TrainingPixels(rows, cols, truth[rows, cols], 2)


def _settings(source):
    s = PipelineSettings()
    s.device, s.seed = "cpu", 3
    s.backbone.source = source
    s.backbone.patch_pool = 8
    s.adaptation.steps = 2
    s.head.trees = 20
    s.representation.rgb_bands = (5, 3, 1)
    return s


def _prepared(source, **change):
    hsi, _, _ = _scene()
    reader = StackedReader(ArrayReader(hsi))
    s = _settings(source)
    for k, v in change.items():
        setattr(s.backbone, k, v)
    reps = fit_scene_representations(reader, {"band_count": hsi.shape[0], "bad_bands": []}, None, s, Progress())
    return prepare_backbone(reader, reps, s, Progress())


def test_untrained_default_is_the_scene_network_with_no_training_steps():
    a = _prepared("untrained")
    b = _prepared("scene", compact_steps=0)
    c = _prepared("untrained")
    assert a.info.kind == "compact" and a.info.fingerprint == b.info.fingerprint == c.info.fingerprint
    assert a.info.fingerprint != _prepared("scene", compact_steps=1).info.fingerprint


def test_prior_adaptation_trains_only_the_film_path_and_leaves_the_prior_unchanged():
    prior = load_backbone(shipped_prior())
    p = _prepared("prior")
    assert p.info.kind == "prior" and p.info.fingerprint == weights_fingerprint(prior)
    assert p.info.adaptation.steps == 2
    assert p.tensors and all(k.startswith("film.label_emb") or (k.startswith("film.output_blocks.")
                                                                 and ".emb_layers." in k) for k in p.tensors)
    adapted = dict(p.model.named_parameters())
    changed = [n for n, w in prior.named_parameters() if not torch.equal(w, adapted[n].detach())]
    assert changed and all(f"film.{n}" in p.tensors for n in changed)  # nothing outside the delta moved
    frozen = _prepared("prior", )  # same seed: deterministic
    assert all(torch.equal(v, frozen.tensors[k]) for k, v in p.tensors.items())


def test_model_file_round_trip_keeps_the_smoothing_and_the_prediction():
    hsi, truth, labels = _scene()
    reader = StackedReader(ArrayReader(hsi))
    s = _settings("prior")
    s.spatial.sigma = 1.5
    model = fit(reader, {"band_count": hsi.shape[0], "bad_bands": []}, None, labels, s)
    assert model.sigma == 1.5
    metadata, tensors = bundle_payload(model)
    assert metadata["spatial"] == {"method": "gaussian", "sigma": 1.5, "r": 0, "eps": 0.0}
    again = from_bundle(metadata, tensors, device="cpu")
    assert again.sigma == 1.5 and again.backbone_info.kind == "prior"
    old_file = from_bundle({**metadata, "spatial": {"sigma": 1.5}}, tensors, device="cpu")  # a 0.2 model file
    assert old_file.regulariser == again.regulariser
    maps = []
    for m in (model, again):
        out = np.zeros(truth.shape, np.int64)

        def write(row, index, _conf, out=out):
            out[row:row + index.shape[0]] = index

        predict_scene(m, reader, write)
        maps.append(out)
    assert np.array_equal(maps[0], maps[1])
    assert (maps[0] == truth).mean() > 0.9


def test_smoothing_is_chosen_on_training_labels_and_recorded():
    hsi, _, labels = _scene()
    reader = StackedReader(ArrayReader(hsi))
    s = _settings("untrained")
    model = fit(reader, {"band_count": hsi.shape[0], "bad_bands": []}, None, labels, s)
    spatial = model.report["spatial"]
    assert spatial["method"] == model.regulariser.method and spatial["folds"] >= 2
    scores = spatial["selection"]["scores"]
    expected = ["none"] + [f"guided r {r} ε {e:g}" for r in sorted(s.spatial.guided_radii)
                           for e in sorted(s.spatial.guided_eps)]
    assert list(scores) == expected and spatial["selection"]["chosen"] == model.regulariser.label
    assert spatial["selection"]["repeats"] == s.spatial.repeats  # few labels: repeated fold assignments

"""Pretraining of the prior: the corpus sampler and a resumable, deterministic training loop."""
import numpy as np
import pytest
import torch

from engine.networks.backbone import UNetConfig
from engine.networks.pretrain import CorpusSampler, CorpusScene, PretrainSettings, pretrain
from engine.progress import Cancelled, Progress

TINY = UNetConfig(name="tiny", model_channels=32, out_channels=3, num_res_blocks=1, attention_resolutions=(),
                  channel_mult=(1,), num_classes=5, learn_sigma=False, num_head_channels=32, image_size=16)


def _scenes():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 40, 30)).astype(np.float32)
    a[:, :6, :] = np.nan  # a nodata strip: crops must avoid it
    return [CorpusScene("optical", {"prgb": a, "pca": -a}, 2.0),
            CorpusScene("sar", {"sar": rng.uniform(-1, 1, (3, 20, 20)).astype(np.float32)}, 1.0)]


def test_sampler_draws_valid_crops_and_modality_labels():
    s = CorpusSampler(_scenes(), patch=16, max_nodata=0.0)
    x, y = s.sample(64, torch.Generator().manual_seed(1))
    assert x.shape == (64, 3, 16, 16) and torch.isfinite(x).all()
    assert set(y.tolist()) <= {1, 2, 3} and len(set(y.tolist())) == 3
    zero_rows = (x == 0).all(dim=(1, 3)).any(dim=1)  # a NaN row would have become zeros
    assert not zero_rows.any()
    x2, y2 = s.sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_sampler_refuses_bad_scenes():
    with pytest.raises(ValueError, match="smaller than one"):
        CorpusSampler([CorpusScene("s", {"sar": np.zeros((3, 8, 8), np.float32)})], patch=16)
    with pytest.raises(ValueError, match="unknown modalities"):
        CorpusSampler([CorpusScene("s", {"rgb": np.zeros((3, 32, 32), np.float32)})], patch=16)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_a_straight_run(tmp_path):
    settings = PretrainSettings(steps=6, batch_size=2, warmup=2, checkpoint_every=2, config=TINY.to_dict())
    sampler = CorpusSampler(_scenes(), patch=16)
    straight = pretrain(sampler, settings, tmp_path / "a")
    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        pretrain(sampler, settings, tmp_path / "b", Progress(is_canceled=cancel_after_three))
    resumed = pretrain(sampler, settings, tmp_path / "b")
    for (n, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), n
    assert straight.losses == resumed.losses and len(resumed.losses) == 6
    other = PretrainSettings(steps=8, batch_size=2, warmup=2, checkpoint_every=2, config=TINY.to_dict())
    with pytest.raises(ValueError, match="other pretraining settings"):
        pretrain(sampler, other, tmp_path / "b")

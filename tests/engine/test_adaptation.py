"""FiLM adaptation touches only the FiLM path; delta round trip; sampler rules; compact training; cancel."""
import numpy as np
import pytest
import torch

from engine.networks.adaptation import (PoolSampler, adapt, apply_delta, resolve_lr, train_compact_backbone,
                               trainable_parameter_names)
from engine.networks.backbone import ADM_IMAGENET_64, UNetConfig, build_backbone
from engine.progress import Cancelled, Progress
from engine.settings import MODALITY_IDS, AdaptSettings, BackboneSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = UNetConfig(name="tiny", image_size=32, model_channels=32, out_channels=6, num_res_blocks=1,
                  attention_resolutions=(8,), channel_mult=(1, 1, 1, 1), num_head_channels=32, num_classes=5,
                  learn_sigma=True, dropout=0.0)


def _pool(n=6, patch=32, seed=0, mods=("prgb", "pca", "sar")):
    """What landcover.read_patch_pool hands Stage A: n windows of every modality, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return {m: np.tanh(rng.normal(size=(n, 3, patch, patch))).astype(np.float32) for m in mods}


def _perturb_zero_init(model, seed=0):
    """ADM zero-initialises output convs: randomise them so that every FiLM tensor receives gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def test_trainable_count_for_adm_imagenet_on_meta():
    with torch.device("meta"):
        model = build_backbone(ADM_IMAGENET_64)
    params = dict(model.named_parameters())
    names = trainable_parameter_names(model, "decoder")
    n = sum(params[k].numel() for k in names)
    assert n == 15_237_504
    assert abs(100.0 * n / sum(p.numel() for p in params.values()) - 5.15) < 0.01
    assert all(k == "label_emb.weight" or (k.startswith("output_blocks.") and ".emb_layers." in k) for k in names)
    all_names = trainable_parameter_names(model, "all")
    assert set(names) < set(all_names) and any(k.startswith("input_blocks.") for k in all_names)


def test_only_trainables_change_even_with_weight_decay():
    model = _perturb_zero_init(build_backbone(TINY, seed=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = PoolSampler(_pool())
    settings = AdaptSettings(steps=3, batch_size=4, weight_decay=0.5, lr=1e-2)
    result = adapt(model, sampler, settings, seed=0, device="cpu")
    names = set(trainable_parameter_names(model, "decoder"))
    assert set(result.delta) == names
    after = model.state_dict()
    for k, v in before.items():
        if k in names:
            assert not torch.equal(v, after[k]), f"{k} did not train"
            assert torch.equal(result.delta[k], after[k])
        else:
            assert torch.equal(v, after[k]), f"frozen tensor {k} changed"
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert len(result.losses) == 3 and np.isfinite(result.losses).all()


def test_adapt_deterministic_and_delta_applies_to_fresh_base():
    sampler = PoolSampler(_pool())
    s = AdaptSettings(steps=2, batch_size=3, ema_decay=0.5)
    a = adapt(_perturb_zero_init(build_backbone(TINY, seed=1)), sampler, s, seed=5, device="cpu")
    b = adapt(_perturb_zero_init(build_backbone(TINY, seed=1)), sampler, s, seed=5, device="cpu")
    assert a.base_fingerprint == b.base_fingerprint and a.losses == b.losses
    assert all(torch.equal(a.delta[k], b.delta[k]) for k in a.delta)
    fresh = _perturb_zero_init(build_backbone(TINY, seed=1))
    apply_delta(fresh, a.delta)
    state = fresh.state_dict()
    assert all(torch.equal(state[k], v) for k, v in a.delta.items())


def test_apply_delta_mismatch_is_explained():
    model = build_backbone(TINY, seed=0)
    with pytest.raises(ValueError, match="lacks"):
        apply_delta(model, {"nope.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        apply_delta(model, {"label_emb.weight": torch.zeros(3, 3)})


def test_presets():
    assert resolve_lr(AdaptSettings()) == 3e-3
    assert resolve_lr(AdaptSettings(preset="public")) == 1e-4
    assert resolve_lr(AdaptSettings(preset="public", lr=5e-4)) == 5e-4
    with pytest.raises(ValueError):
        resolve_lr(AdaptSettings(preset="nope"))


def test_sampler_anchor_nodata_and_flips():
    pool = _pool(n=4, patch=64)
    pool["pca"][:, :, :, :10] = np.nan  # nodata in a window reaches the network as 0
    sampler = PoolSampler(pool)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(5):
        x, y = sampler.sample(8, g)
        assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert int(y[0]) == MODALITY_IDS["prgb"] and set(y.tolist()) <= {1, 2, 3}
        seen |= set(y.tolist())
    assert seen == {1, 2, 3}
    x, y = PoolSampler({"prgb": pool["prgb"][:1]}).sample(16, torch.Generator().manual_seed(1))
    window = torch.from_numpy(pool["prgb"][0])
    flips = {window.equal(v) for v in x} | {window.flip(-1).equal(v) for v in x}
    assert True in flips and all(any(v.equal(w) for w in (window, window.flip(-1), window.flip(-2),
                                                          window.flip(-1).flip(-2))) for v in x)


def test_compact_backbone_trains_all_and_loss_drops():
    sampler = PoolSampler(_pool(seed=2))
    cfg = UNetConfig(name="tiny_compact", image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                     attention_resolutions=(8,), channel_mult=(1, 1, 1, 1), num_head_channels=32, num_classes=5,
                     learn_sigma=False)
    init = {k: v.clone() for k, v in build_backbone(cfg, seed=0).state_dict().items()}
    logs = []
    model = train_compact_backbone(sampler, BackboneSettings(compact_steps=24, compact_batch_size=4),
                                   seed=0, device="cpu", progress=Progress(on_message=logs.append), config=cfg)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init[k])]
    assert len(changed) > 0.8 * len(init)
    assert np.mean(model.train_losses[-5:]) < np.mean(model.train_losses[:5])
    assert any("compact" in m for m in logs)


def test_cancel_inside_adapt():
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Cancelled):
        adapt(build_backbone(TINY, seed=0), PoolSampler(_pool()), AdaptSettings(steps=50, batch_size=2),
              seed=0, device="cpu", progress=Progress(is_canceled=cancel))
    assert calls["n"] == 2

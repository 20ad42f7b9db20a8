"""Feature extractor: group order, shared fixed noise, determinism, truncation-safe, pixel gathering."""
import numpy as np
import pytest
import torch

from engine.networks.backbone import UNetConfig, build_backbone, default_feature_blocks
from engine.networks.diffusion import CosineSchedule, fixed_noise, q_sample
from engine.networks.features import FeatureExtractor
from engine.settings import MODALITY_IDS, FeatureSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CFG = UNetConfig(name="tiny_feat", image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                 attention_resolutions=(8,), channel_mult=(1, 1, 2, 2), num_head_channels=32, num_classes=5,
                 learn_sigma=False)


def _model(seed=0):
    model = build_backbone(CFG, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # undo zero-init so that every block matters
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _patches(b=3, m=2, p=32, seed=0):
    return torch.from_numpy(np.tanh(np.random.default_rng(seed).normal(size=(b, m, 3, p, p))).astype(np.float32))


def test_groups_dim_and_shape():
    model = _model()
    ext = FeatureExtractor(model, FeatureSettings(timesteps=(0, 200), batch_size=2), ["prgb", "pca"], "cpu")
    blocks = default_feature_blocks(CFG)
    info = {i: c for i, c, _ in model.decoder_blocks()}
    assert [g[:3] for g in ext.groups] == [(m, t, b) for m in ("prgb", "pca") for t in (0, 200) for b in blocks]
    assert ext.dim == sum(g[3] for g in ext.groups) == 2 * 2 * sum(info[b] for b in blocks)
    out = ext(_patches())
    assert out.shape == (3, ext.dim, 32, 32) and out.dtype == torch.float32 and out.device.type == "cpu"


def test_matches_manual_computation_with_one_shared_noise():
    model = _model()
    blocks = default_feature_blocks(CFG)
    ext = FeatureExtractor(model, FeatureSettings(timesteps=(300,), noise_seed=7, batch_size=2),
                           ["prgb", "sar"], "cpu")
    x = _patches(3, 2)
    got = ext(x)
    noise = fixed_noise((1, 3, 32, 32), 7).expand(3, -1, -1, -1)
    parts = []
    with torch.no_grad():
        for k, mod in enumerate(["prgb", "sar"]):
            xt = q_sample(x[:, k], torch.full((3,), 300), noise, CosineSchedule())
            y = torch.full((3,), MODALITY_IDS[mod])
            feats = model.forward_features(xt, torch.full((3,), 300), y, blocks)
            for b in blocks:
                parts.append(torch.nn.functional.interpolate(feats[b], size=(32, 32), mode="bilinear",
                                                             align_corners=False))
    torch.testing.assert_close(got, torch.cat(parts, 1), rtol=1e-4, atol=1e-5)


def test_deterministic_batch_independent_and_seed_matters():
    x = _patches(5, 2, seed=1)
    a = FeatureExtractor(_model(), FeatureSettings(batch_size=2), ["prgb", "pca"], "cpu")(x)
    b = FeatureExtractor(_model(), FeatureSettings(batch_size=5), ["prgb", "pca"], "cpu")(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # batch size changes float rounding only
    assert torch.equal(a, FeatureExtractor(_model(), FeatureSettings(batch_size=2), ["prgb", "pca"], "cpu")(x))
    c = FeatureExtractor(_model(), FeatureSettings(batch_size=2, noise_seed=1), ["prgb", "pca"], "cpu")(x)
    assert not torch.allclose(a, c)


def test_bad_inputs():
    ext = FeatureExtractor(_model(), FeatureSettings(), ["prgb", "pca"], "cpu")
    with pytest.raises(ValueError, match="modalities"):
        ext(_patches(1, 3))
    with pytest.raises(ValueError, match="do not exist"):
        FeatureExtractor(_model(), FeatureSettings(blocks=(99,)), ["prgb"], "cpu")

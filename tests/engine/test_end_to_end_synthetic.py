"""Whole learning path on a synthetic two-class scene: compact backbone → features → head → tiled map.

Representations are faked as three 3-channel images; 20 labelled pixels must give ≥ 0.8 accuracy elsewhere.
"""
import numpy as np
import pytest
import torch

from engine.networks.adaptation import PatchSampler, train_compact_backbone
from engine.networks.backbone import UNetConfig
from engine.heads.classifier import train_head
from engine.networks.features import FeatureExtractor, pixel_features
from engine.settings import BackboneSettings, FeatureSettings, HeadSettings, TileSettings
from engine.tasks.tiling import predict_tiled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


MODS = ["prgb", "pca", "sar"]
CFG = UNetConfig(name="tiny_e2e", image_size=32, model_channels=32, out_channels=3, num_res_blocks=1,
                 attention_resolutions=(8,), channel_mult=(1, 1, 1, 1), num_head_channels=32, num_classes=5,
                 learn_sigma=False)
P = 32


def _scene(n=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    truth = (((yy - 40) ** 2 + (xx - 55) ** 2) < 30 ** 2).astype(np.int64)  # a disk: class 1
    images = {}
    for k, m in enumerate(MODS):
        base = np.where(truth[None] == 1, 0.4 - 0.2 * k, -0.3 + 0.1 * k) * np.array([1.0, -0.5, 0.8])[:, None, None]
        stripes = 0.15 * np.sin(xx / (2.0 + truth * 3))[None]  # class-dependent texture
        images[m] = np.clip(base + stripes + rng.normal(scale=0.1, size=(3, n, n)), -1, 1).astype(np.float32)
    return images, truth


def test_tiny_pipeline_beats_chance_clearly():
    torch.manual_seed(0)
    images, truth = _scene()
    n = truth.shape[0]
    model = train_compact_backbone(PatchSampler(images, patch=P), BackboneSettings(compact_steps=12,
                                   compact_batch_size=4), seed=0, device="cpu", config=CFG)
    ext = FeatureExtractor(model, FeatureSettings(timesteps=(200,), batch_size=8), MODS, "cpu")
    stack = np.stack([images[m] for m in MODS])  # [M, 3, H, W]

    rng = np.random.default_rng(1)
    lab = np.concatenate([rng.choice(np.flatnonzero(truth.ravel() == c), 10, replace=False) for c in (0, 1)])
    rows, cols = np.unravel_index(lab, truth.shape)
    r0, c0 = np.clip(rows - P // 2, 0, n - P), np.clip(cols - P // 2, 0, n - P)
    patches = torch.from_numpy(np.stack([stack[:, :, r:r + P, c:c + P] for r, c in zip(r0, c0)]))
    x = pixel_features(ext, patches, [np.array([a]) for a in rows - r0], [np.array([b]) for b in cols - c0])
    head = train_head(x, truth[rows, cols], [ext.dim], HeadSettings(max_epochs=60, patience=15, val_fraction=0.2),
                      seed=0)

    flat = stack.reshape(len(MODS) * 3, n, n)
    out = np.zeros((2, n, n), np.float32)

    def predict(batch, need):
        b = batch.shape[0]
        f = ext(torch.from_numpy(batch.reshape(b, len(MODS), 3, P, P))).numpy()
        probs = head.predict_proba(f.transpose(0, 2, 3, 1).reshape(-1, ext.dim))
        return probs.reshape(b, P, P, 2).transpose(0, 3, 1, 2)

    def write(row, probs):
        out[:, row:row + probs.shape[1]] = probs

    predict_tiled(n, n, lambda r, c, h, w: flat[:, r:r + h, c:c + w], predict, 2, write, TileSettings(P, P // 2),
                  batch_size=8)
    pred = out.argmax(0)
    mask = np.ones(truth.shape, bool)
    mask[rows, cols] = False
    acc = (pred[mask] == truth[mask]).mean()
    assert acc >= 0.8, f"accuracy {acc:.3f} on unlabelled pixels"

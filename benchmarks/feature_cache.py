"""Per-seed diffusion features at every labelled pixel, computed once and reused by every head/fusion study.

Backbone training (unsupervised: it never sees a label) dominates the pipeline's time; the ablations differ
only in which features reach which head. So for each (scene, seed) this trains the compact backbone exactly
as the product does (``engine.tasks.landcover.prepare_backbone`` with the seed's settings), extracts features for a
grid of timesteps × decoder blocks × modalities with the product's tiling (windows of 64, stride 32,
overlapping windows averaged), and keeps them at the scene's labelled pixels only (train ∪ evaluation).
The same is done for an untrained backbone (the control of METHOD.md section 4).

    python benchmarks/feature_cache.py --scenes enmap,chip --seeds 3

Files: ``benchmarks/out/cache/{scene}_s{seed}_{trained|untrained}.npz`` with ``features`` float16 [N, D],
``groups`` (modality, t, block, channels) per column group, ``rows``/``cols`` (the labelled pixels, in
``np.nonzero(labels >= 0)`` order) and ``spectrum`` float32 [N, D_s] (the standardised bands the head sees).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.protocol import SceneData, load_scene  # noqa: E402

CACHE = REPO / "benchmarks" / "out" / "cache"
# the sweep grid: compact backbone decoder blocks 3 (64 ch, 32²), 4 (32 ch, 32²), 5 (32 ch, 64²), 7 (last)
GRID = {"enmap": {"timesteps": (0, 100, 200, 400), "blocks": (3, 4, 5, 7)},
        "chip": {"timesteps": (0, 200), "blocks": (3, 4, 5)}}


def cache_path(scene: str, seed: int, kind: str) -> Path:
    return CACHE / f"{scene}_s{seed}_{kind}.npz"


def backbone_path(scene: str, seed: int, kind: str) -> Path:
    return CACHE / f"{scene}_s{seed}_{kind}.backbone.safetensors"


def save_backbone(path: Path, backbone) -> None:
    """The trained backbone (compact weights + its JSON description) in the bundle's no-pickle format."""
    import json

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in backbone.tensors.items()}, str(tmp),
              metadata={"info": json.dumps(backbone.info.to_dict())})
    tmp.replace(path)


def load_backbone(scene: str, seed: int, kind: str = "trained"):
    """The cached ``PreparedBackbone`` of (scene, seed, kind), or None; the product trains the same one
    (deterministic on the CPU), so benchmarks reuse it instead of training it again."""
    import json

    from safetensors import safe_open

    from engine.tasks.landcover import PreparedBackbone, restore_backbone

    path = backbone_path(scene, seed, kind)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["info"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return PreparedBackbone(restore_backbone(info, tensors, "cpu"), info, tensors)


def _settings(seed: int, steps: int):
    from engine.settings import PipelineSettings

    s = PipelineSettings()
    s.seed, s.device = seed, "cpu"
    s.backbone.compact_steps = steps
    return s


def build(scene: SceneData, seed: int, kind: str, timesteps: Sequence[int], blocks: Sequence[int],
          log=print) -> Path:
    import torch

    from engine.networks.features import FeatureExtractor
    from engine.tasks.landcover import (active_modalities, fit_scene_representations, prepare_backbone,
                                 window_inputs)
    from engine.progress import Progress
    from engine.data.readers import ArrayReader, StackedReader
    from engine.tasks.tiling import predict_tiled

    out = cache_path(scene.name, seed, kind)
    if out.exists() and backbone_path(scene.name, seed, kind).exists():
        return out
    settings = _settings(seed, settings_steps(kind))
    reader = StackedReader(ArrayReader(scene.hsi), ArrayReader(scene.sar) if scene.sar is not None else None)
    t0 = time.perf_counter()
    reps = fit_scene_representations(reader, scene.hsi_meta, scene.sar_meta, settings, Progress())
    backbone = prepare_backbone(reader, reps, settings, Progress())
    t_train = time.perf_counter() - t0
    save_backbone(backbone_path(scene.name, seed, kind), backbone)
    if out.exists():  # features cached by an earlier version that did not keep the backbone
        log(f"{out.name}: backbone saved ({t_train:.0f} s)")
        return out
    settings.features.timesteps = tuple(timesteps)
    settings.features.blocks = tuple(blocks)
    modalities = active_modalities(settings, scene.sar is not None)
    extractor = FeatureExtractor(backbone.model, settings.features, modalities, "cpu")
    rows, cols = np.nonzero(scene.labels >= 0)
    feats = np.zeros((rows.size, extractor.dim), np.float16)
    by_row: Dict[int, np.ndarray] = {}
    for i, r in enumerate(rows):
        by_row.setdefault(int(r), []).append(i)
    by_row = {r: np.asarray(v) for r, v in by_row.items()}

    def predict_patches(block: np.ndarray, need: np.ndarray) -> np.ndarray:
        stacks = [window_inputs(reader, reps, modalities, window, spectrum=False)[0] for window in block]
        return extractor(torch.from_numpy(np.stack(stacks).astype(np.float32))).numpy()

    def write_rows(row: int, values: np.ndarray) -> None:
        for k in range(values.shape[1]):
            idx = by_row.get(row + k)
            if idx is not None:
                feats[idx] = values[:, k, cols[idx]].T.astype(np.float16)

    t1 = time.perf_counter()
    predict_tiled(reader.height, reader.width, reader.read, predict_patches, extractor.dim, write_rows,
                  settings.tiles, batch_size=settings.features.batch_size)
    t_feat = time.perf_counter() - t1
    full = np.concatenate([scene.hsi] + ([scene.sar] if scene.sar is not None else []), axis=0)
    hsi, sar = reader.split(full)
    spectrum = reps.spectrum(hsi, sar)[:, rows, cols].T.astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, features=feats, spectrum=spectrum, rows=rows, cols=cols,
             groups=np.array([[g[0], g[1], g[2], g[3]] for g in extractor.groups], dtype=object).astype(str),
             seconds=np.array([t_train, t_feat]))
    tmp.replace(out)
    log(f"{out.name}: {feats.shape[1]} feature dims at {rows.size} px; backbone {t_train:.0f} s, "
        f"features {t_feat:.0f} s")
    return out


def settings_steps(kind: str) -> int:
    from engine.settings import BackboneSettings

    return BackboneSettings().compact_steps if kind == "trained" else 1


def load(scene: str, seed: int, kind: str = "trained") -> Dict:
    with np.load(cache_path(scene, seed, kind), allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    d["groups"] = [(str(g[0]), int(g[1]), int(g[2]), int(g[3])) for g in d["groups"]]
    return d


def select(cache: Dict, modalities=None, timesteps=None, blocks=None) -> Tuple[np.ndarray, list]:
    """Columns of the groups that match; returns (features float32 [N, D], the chosen groups)."""
    cols, chosen, start = [], [], 0
    for g in cache["groups"]:
        m, t, b, c = g
        if ((modalities is None or m in modalities) and (timesteps is None or t in timesteps)
                and (blocks is None or b in blocks)):
            cols.append(np.arange(start, start + c))
            chosen.append(g)
        start += c
    if not cols:
        return np.zeros((cache["features"].shape[0], 0), np.float32), []
    return cache["features"][:, np.concatenate(cols)].astype(np.float32), chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", default="enmap,chip")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the protocol's)")
    p.add_argument("--kinds", default="trained,untrained")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when two builds share 2 cores)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    for name in [s for s in a.scenes.split(",") if s]:
        scene = load_scene(name)
        seeds = list(scene.seeds if a.seeds is None else range(a.seeds))
        for seed in seeds:
            for kind in a.kinds.split(","):
                build(scene, seed, kind, GRID[name]["timesteps"], GRID[name]["blocks"],
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

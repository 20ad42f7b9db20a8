"""Object classification on real objects (issue 21, item 5): the product's pooled diffusion features against
zonal statistics + Random Forest, on the same splits.

Objects: the connected regions (4-connected) of each scene's reference label raster, regions of at least 4 pixels
(EnMAP west land cover, Salinas-A fields, the Sen1Floods11 chip's water / land). Training: k labelled objects per
class (k = 3; seeds 0-9), evaluation on every other object, by count and by area (pixels).

Methods, all on one pooling pass per scene (``engine.tasks.objects.pool_objects``: every pixel once, from its home
window; the network is the product's default, seed 0):

- ``ours``: the product's object head: ``heads.fit_head`` (forest, 500 trees, out-of-bag feature check) on
  [mean, std] of [diffusion features ‖ standardised bands];
- ``pooled_bands``: control without the network: a 500-tree forest on [mean, std] of the standardised bands;
- ``zonal_rf``: the baseline users run today, a 500-tree Random Forest on each object's mean raw bands (zonal
  statistics);
- with ``--pixel-map``, ``pixel_map_majority``: the product's pixel route (``landcover.fit_predict_arrays``, default
  settings, the same network) trained on every pixel of the training objects, then the majority class of the map
  inside each object.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.objects --out benchmarks/results/issue21
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("ours", "pooled_bands", "zonal_rf")
PIXEL_MAP = "pixel_map_majority"


CELLS = {"salinas": 10}  # Salinas-A is six fields, one region per class: cut into 10x10-pixel parcels


def region_objects(labels: np.ndarray, min_pixels: int = 4, cell: int = 0):
    """(ids [H, W] 1..n (0 = none), class index per object, pixels per object) from a label raster (-1 = none):
    its connected regions, cut by a grid of ``cell`` pixels when given."""
    from scipy.ndimage import label

    ids = np.zeros(labels.shape, np.int64)
    classes: List[int] = []
    n = 0
    h, w = labels.shape
    grid = None
    if cell:
        grid = (np.arange(h)[:, None] // cell) * (w // cell + 1) + np.arange(w)[None, :] // cell
    for c in sorted(set(np.unique(labels).tolist()) - {-1}):
        comp, k = label(labels == c)
        if grid is not None:
            key = np.where(comp > 0, comp * (grid.max() + 1) + grid, 0)
            uniq, comp = np.unique(key, return_inverse=True)
            comp = comp.reshape(labels.shape)
            k = uniq.size - 1  # 0 stays 0 (the smallest key)
        sizes = np.bincount(comp.ravel(), minlength=k + 1)
        keep = np.flatnonzero(sizes >= min_pixels)
        keep = keep[keep > 0]
        new = np.zeros(k + 1, np.int64)
        new[keep] = np.arange(n + 1, n + 1 + keep.size)
        ids = np.where(comp > 0, np.maximum(ids, new[comp]), ids)
        classes += [c] * keep.size
        n += keep.size
    pixels = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    return ids, np.asarray(classes, np.int64), pixels


def pick(classes: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        if idx.size <= k:  # leave at least one of the class to evaluate on
            out.append(rng.choice(idx, max(1, idx.size - 1), replace=False))
        else:
            out.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(out))


def scene_features(scene) -> Dict:
    """One pooling pass: the product's pooled features and the zonal mean raw bands of every region."""
    from engine.data.readers import ArrayReader, StackedReader
    from engine.networks.device import resolve_device
    from engine.networks.features import FeatureExtractor
    from engine.progress import Progress
    from engine.settings import PipelineSettings
    from engine.tasks.landcover import active_modalities, fit_scene_representations, prepare_backbone
    from engine.tasks.objects import object_features, object_group_sizes, pool_objects

    ids, classes, pixels = region_objects(scene.labels, cell=CELLS.get(scene.name, 0))
    settings = PipelineSettings()
    settings.device = "cpu"
    reader = StackedReader(ArrayReader(scene.hsi), ArrayReader(scene.sar) if scene.sar is not None else None)
    t0 = time.perf_counter()
    reps = fit_scene_representations(reader, scene.hsi_meta, scene.sar_meta, settings, Progress())
    backbone = prepare_backbone(reader, reps, settings, Progress())
    extractor = FeatureExtractor(backbone.model, settings.features, active_modalities(settings, scene.sar is not None),
                                 resolve_device("cpu"))
    pooler = pool_objects(reader, ArrayReader(ids[None].astype(np.float64)), int(classes.size), reps, extractor,
                          settings.tiles)
    groups = object_group_sizes(extractor.groups, reps.spectrum_dim)
    feats = object_features(pooler, extractor.dim, groups)
    seconds = time.perf_counter() - t0
    raw = np.concatenate([scene.hsi[scene.good_bands]] + ([scene.sar] if scene.sar is not None else []))
    flat = ids.ravel()
    zonal = np.stack([np.bincount(flat, weights=np.nan_to_num(b.ravel()), minlength=classes.size + 1)[1:]
                      for b in raw], axis=1) / np.maximum(pixels, 1)[:, None]
    return {"ids": ids, "reader": reader, "backbone_prepared": backbone, "settings": settings,
            "x": feats.x, "groups": groups, "n_diffusion": 2 * extractor.dim, "zonal": zonal.astype(np.float32),
            "classes": classes, "pixels": pixels, "seconds": seconds, "usable": feats.usable,
            "backbone": backbone.info.kind}


def scores(pred: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> Dict:
    right = pred == truth
    return {"oa_count": float(right.mean()), "oa_area": float((right * weights).sum() / weights.sum())}


def pixel_map_majority(scene, f: Dict, train: np.ndarray, seed: int, test: np.ndarray) -> np.ndarray:
    """The pixel route trained on every pixel of the training objects; each test object's majority map class."""
    import dataclasses

    from engine.tasks.landcover import fit_predict_arrays

    ids, classes = f["ids"], f["classes"]
    wanted = np.zeros(classes.size + 1, np.int64)
    wanted[train + 1] = classes[train] + 1
    train_labels = wanted[ids]
    settings = dataclasses.replace(f["settings"], seed=seed)
    pixel_map = fit_predict_arrays(scene.hsi, scene.sar, train_labels, settings, scene.hsi_meta, scene.sar_meta,
                                   backbone=f["backbone_prepared"])
    # the map holds 1..K of the classes present in training: back to class indices
    present = np.unique(classes[train])
    index = np.where(pixel_map > 0, present[np.clip(pixel_map - 1, 0, present.size - 1)], -1)
    out = np.full(test.size, -1, np.int64)
    flat_ids, flat_map = ids.ravel(), index.ravel()
    n_classes = int(classes.max()) + 1
    votes = np.zeros((classes.size + 1, n_classes), np.int64)
    ok = (flat_ids > 0) & (flat_map >= 0)
    np.add.at(votes, (flat_ids[ok], flat_map[ok]), 1)
    out = votes[test + 1].argmax(axis=1)
    return out


def run_scene(name: str, k: int, seeds, pixel_map: bool = False) -> Dict:
    from benchmarks.protocol import load_scene
    from engine.heads.classifier import fit_head
    from engine.heads.forest import train_forest
    from engine.settings import HeadSettings

    scene = load_scene(name)
    f = scene_features(scene)
    classes, pixels, usable = f["classes"], f["pixels"], f["usable"]
    methods = METHODS + ((PIXEL_MAP,) if pixel_map else ())
    per_seed: Dict[str, List[Dict]] = {m: [] for m in methods}
    checks = []
    for seed in seeds:
        train = pick(classes[usable], k, seed)
        train = np.flatnonzero(usable)[train]
        test = np.setdiff1d(np.flatnonzero(usable), train)
        y, n_classes = classes[train], int(classes.max()) + 1
        head = fit_head(f["x"][train], y, f["groups"], HeadSettings(), seed=seed, n_classes=n_classes,
                        spectrum_last=True)
        checks.append((head.config.get("feature_check") or {}).get("diffusion_features_used"))
        preds = {"ours": head.predict_proba(f["x"][test]).argmax(axis=1)}
        bands = f["x"][:, f["n_diffusion"]:]
        rf = train_forest(bands[train], y, n_classes, n_trees=500, seed=seed)
        preds["pooled_bands"] = rf.predict_proba(bands[test]).argmax(axis=1)
        rf = train_forest(f["zonal"][train], y, n_classes, n_trees=500, seed=seed)
        preds["zonal_rf"] = rf.predict_proba(f["zonal"][test]).argmax(axis=1)
        if pixel_map:
            preds[PIXEL_MAP] = pixel_map_majority(scene, f, train, seed, test)
        for m in methods:
            per_seed[m].append({"seed": seed, **scores(preds[m], classes[test], pixels[test].astype(np.float64))})
    return {"scene": name, "objects": int(classes.size), "objects_per_class": np.bincount(classes).tolist(),
            "pooling_seconds": round(f["seconds"], 1), "backbone": f["backbone"], "k": k,
            "diffusion_features_kept": checks, "per_seed": per_seed}


def summary(result: Dict) -> Dict:
    from benchmarks.protocol import paired_ci

    out = {}
    for metric in ("oa_count", "oa_area"):
        vals = {m: [r[metric] for r in rs] for m, rs in result["per_seed"].items()}
        out[metric] = {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                       for m, v in vals.items()}
        for base in [m for m in vals if m != "ours"]:
            out[metric][f"ours-{base}"] = paired_ci(vals["ours"], vals[base]).to_dict()
    return out


NAMES = {"ours": "ours", "pooled_bands": "pooled bands (no network)", "zonal_rf": "zonal mean bands + RF-500",
         PIXEL_MAP: "pixel map + majority"}


def markdown(results: List[Dict]) -> str:
    methods = [m for m in NAMES if any(m in r["per_seed"] for r in results)]
    others = [m for m in methods if m != "ours"]
    lines = ["| scene | objects | metric | " + " | ".join(NAMES[m] for m in methods) + " | "
             + " | ".join(f"ours − {NAMES[m]} (95 % CI)" for m in others) + " |",
             "|" + "---|" * (3 + len(methods) + len(others))]
    for r in results:
        s = summary(r)
        for metric, text in (("oa_count", "OA by count"), ("oa_area", "OA by area")):
            m = s[metric]
            cells = [f"{100 * m[x][0]:.1f} ± {100 * m[x][1]:.1f}" if x in m else "–" for x in methods]
            cis = [f"{100 * m[k]['mean']:+.1f} [{100 * m[k]['low']:+.1f}, {100 * m[k]['high']:+.1f}]"
                   if k in m else "–" for k in (f"ours-{o}" for o in others)]
            lines.append(f"| {r['scene']} | {r['objects']} | {text} | " + " | ".join(cells + cis) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["enmap", "salinas", "chip"])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--pixel-map", action="store_true", help="add the pixel map + majority baseline (slower)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = []
    for name in args.scenes:
        t0 = time.perf_counter()
        results.append(run_scene(name, args.k, args.seeds, args.pixel_map))
        print(f"{name}: {results[-1]['objects']} objects, {time.perf_counter() - t0:.0f} s", flush=True)
    text = markdown(results)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        tag = "_pixelmap" if args.pixel_map else ""
        (args.out / f"objects{tag}.json").write_text(json.dumps(results, indent=1))
        (args.out / f"objects{tag}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

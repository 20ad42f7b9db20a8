"""Figures for BENCHMARKS.md from ``accuracy.py``'s JSON: accuracy bars per scene, and the flood chip's map
(truth / the default pipeline / RF on raw bands) for one protocol split.

    python benchmarks/accuracy_figures.py [--json benchmarks/out/accuracy.json] [--out benchmarks/figures]
                                          [--map-seed 0] [--no-map]

The map panel re-runs the two methods on the split (the default pipeline through
``engine.tasks.landcover.fit_predict_arrays`` with the split's cached backbone, RF-500 on the raw bands of every
pixel), so it shows the same models the tables score.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BAR_METHODS = (("rf", "RF-500, bands"), ("svm", "RBF-SVM, bands"), ("ab_nodiff", "no-diffusion control"),
               ("difflc_untrained", "untrained-network control"), ("difflc_mlp", "ours, MLP head"),
               ("difflc", "ours (default)"))
BAR_METRICS = (("overall_accuracy", "OA"), ("kappa", "kappa"), ("mean_iou", "mIoU"))
SCENE_TITLES = {"enmap": "EnMAP Potsdam west (2 % labels)", "chip": "Sen1Floods11 chip (0.5 % labels)"}


def accuracy_bars(results: Dict, path: Path, methods: Sequence = BAR_METHODS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = [s for s in ("enmap", "chip") if s in results]
    fig, axes = plt.subplots(1, len(scenes), figsize=(6.5 * len(scenes), 4.6), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        summ = results[scene]["summary"]
        present = [(m, label) for m, label in methods if m in summ["mean"]]
        width = 0.8 / max(1, len(present))
        for i, (m, label) in enumerate(present):
            means = [100 * summ["mean"][m][k] for k, _ in BAR_METRICS]
            stds = [100 * (summ["std"][m][k] or 0.0) for k, _ in BAR_METRICS]
            x = np.arange(len(BAR_METRICS)) + (i - (len(present) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=2, label=label,
                   color=f"C{i}" if m != "difflc" else "black")
        lows = [100 * summ["mean"][m][k] for m, _ in present for k, _ in BAR_METRICS]
        ax.set_ylim(max(0.0, min(lows) - 8), min(100.0, max(lows) + 4))
        ax.set_xticks(np.arange(len(BAR_METRICS)))
        ax.set_xticklabels([short for _, short in BAR_METRICS])
        ax.set_ylabel("% (mean ± std over seeds)")
        ax.set_title(f"{SCENE_TITLES.get(scene, scene)}, {len(results[scene]['seeds'])} seeds")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chip_maps(path: Path, seed: int = 0) -> Dict:
    """Truth / default pipeline / RF on the chip for one split; returns each map's OA at the evaluation pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from sklearn.ensemble import RandomForestClassifier

    from benchmarks.pipeline_methods import _variant
    from benchmarks.protocol import load_scene, scene_split

    scene = load_scene("chip")
    split = scene_split(scene, seed)
    ours = _variant("difflc")(scene, split.train_label_map(scene.shape), seed).astype(np.int64) - 1  # 0..K-1, -1 nodata
    rf = RandomForestClassifier(n_estimators=500, n_jobs=1, random_state=seed)
    rf.fit(scene.pixel_matrix(split.train_rows, split.train_cols), split.train_y)
    h, w = scene.shape
    rows, cols = np.nonzero(np.ones(scene.shape, bool))
    x = scene.pixel_matrix(rows, cols)
    ok = np.isfinite(x).all(axis=1)
    rf_map = -np.ones(h * w, np.int64)
    rf_map[ok] = rf.predict(x[ok])
    rf_map = rf_map.reshape(h, w)
    oa = {name: float((m[split.eval_rows, split.eval_cols] == split.eval_y).mean())
          for name, m in (("ours", ours), ("rf", rf_map))}
    cmap = ListedColormap(["#d9d9d9", "#c2a36b", "#1f78b4"])  # no data, not water, water
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = (("reference (LabelHand)", scene.labels), (f"ours, default (OA {100 * oa['ours']:.2f})", ours),
              (f"RF-500 on raw bands (OA {100 * oa['rf']:.2f})", rf_map))
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(m + 1, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].plot(split.train_cols, split.train_rows, "r.", markersize=2, label="training pixels")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Sen1Floods11 Spain_7370579, split seed {seed} ({split.n_train} training pixels; grey = no data; "
                 f"blue = water)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return oa


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=str(REPO / "benchmarks" / "out" / "accuracy.json"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "figures"))
    p.add_argument("--map-seed", type=int, default=0)
    p.add_argument("--no-map", action="store_true")
    a = p.parse_args(argv)
    results = json.loads(Path(a.json).read_text())["results"]
    out = Path(a.out)
    print(accuracy_bars(results, out / "accuracy_bars.png"))
    if not a.no_map:
        import torch

        torch.set_num_threads(2)
        oa = chip_maps(out / "chip_maps.png", a.map_seed)
        print(out / "chip_maps.png", {k: round(100 * v, 2) for k, v in oa.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Heads and fusions on cached diffusion features (``feature_cache.py``): which design lets the features help?

Every candidate is paired with its no-diffusion control (the same head on the bands alone) and with the same
design on untrained-network features. Scored with the protocol (``protocol.scene_split``) on every
evaluation pixel; all selection inside a candidate uses the training pixels only.

    python benchmarks/fusion_study.py --scene enmap --seeds 0,1,2 --candidates mlp,bag,late
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import feature_cache  # noqa: E402
from benchmarks.protocol import load_scene, paired_ci, scene_split  # noqa: E402
from engine.assessment.metrics import classification_metrics  # noqa: E402


def _head_settings(**kw):
    from engine.settings import HeadSettings

    s = HeadSettings()
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def mlp_proba(xtr, ytr, xev, k, seed, n=1, **kw) -> np.ndarray:
    """Mean probabilities of ``n`` product heads (each with its own seeded validation split)."""
    from engine.heads.classifier import train_head

    out = 0.0
    for i in range(n):
        head = train_head(xtr, ytr, [xtr.shape[1]], _head_settings(**kw), seed=seed * 100 + i, n_classes=k)
        out = out + head.predict_proba(xev)
    return out / n


def rf_proba(xtr, ytr, xev, k, seed, trees=500, **kw) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=seed, **kw).fit(xtr, ytr)
    p = np.zeros((xev.shape[0], k))
    p[:, rf.classes_] = rf.predict_proba(xev)
    return p


def rf_auto_proba(f, fe, r, re, y, k, seed, log=None) -> np.ndarray:
    """RF on bands vs RF on features + bands, the one with the higher out-of-bag accuracy (training labels)."""
    from sklearn.ensemble import RandomForestClassifier

    best = None
    for xtr, xev in ((np.c_[f, r], np.c_[fe, re]), (r, re)):
        rf = RandomForestClassifier(n_estimators=500, n_jobs=1, random_state=seed, oob_score=True).fit(xtr, y)
        if best is None or rf.oob_score_ > best[0]:
            p = np.zeros((xev.shape[0], k))
            p[:, rf.classes_] = rf.predict_proba(xev)
            best = (rf.oob_score_, p, xtr.shape[1])
    print(f"  rf_auto: chose {'bands only' if best[2] == r.shape[1] else 'features + bands'} "
          f"(OOB {best[0]:.3f})", file=sys.stderr)
    return best[1]


def pca_reduce(ftr, fev, dims, seed):
    from sklearn.decomposition import PCA

    mean, std = ftr.mean(0), ftr.std(0) + 1e-6
    p = PCA(n_components=min(dims, ftr.shape[0] - 1, ftr.shape[1]), random_state=seed)
    p.fit((ftr - mean) / std)
    return p.transform((ftr - mean) / std), p.transform((fev - mean) / std)


# candidate(feat_tr, feat_ev, spec_tr, spec_ev, raw_tr, raw_ev, y, k, seed) -> probabilities at eval px
CANDIDATES: Dict[str, Callable] = {
    "mlp": lambda f, fe, s, se, r, re, y, k, sd: mlp_proba(np.c_[f, s], y, np.c_[fe, se], k, sd),
    "bag5": lambda f, fe, s, se, r, re, y, k, sd: mlp_proba(np.c_[f, s], y, np.c_[fe, se], k, sd, n=5),
    "rf": lambda f, fe, s, se, r, re, y, k, sd: rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd),
    "late_rf_bag5": lambda f, fe, s, se, r, re, y, k, sd: 0.5 * rf_proba(r, y, re, k, sd)
    + 0.5 * mlp_proba(np.c_[f, s], y, np.c_[fe, se], k, sd, n=5),
    "late_rffeat_bag5": lambda f, fe, s, se, r, re, y, k, sd: 0.5 * rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd)
    + 0.5 * mlp_proba(s, y, se, k, sd, n=5),
    "rf_bal": lambda f, fe, s, se, r, re, y, k, sd: rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd,
                                                             class_weight="balanced"),
    "rf_mf03": lambda f, fe, s, se, r, re, y, k, sd: rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd,
                                                              max_features=0.3),
    "rf_auto": lambda f, fe, s, se, r, re, y, k, sd: rf_auto_proba(f, fe, r, re, y, k, sd),
    "rf_mix": lambda f, fe, s, se, r, re, y, k, sd: 0.5 * rf_proba(r, y, re, k, sd)
    + 0.5 * rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd),
    "rf100": lambda f, fe, s, se, r, re, y, k, sd: rf_proba(np.c_[f, r], y, np.c_[fe, re], k, sd, trees=100),
}


def _pca_candidates():
    def rf_pca(f, fe, s, se, r, re, y, k, sd, dims=16):
        if f.shape[1] == 0:
            return rf_proba(r, y, re, k, sd)
        a, b = pca_reduce(f, fe, dims, sd)
        return rf_proba(np.c_[a, r], y, np.c_[b, re], k, sd)

    def bag_pca(f, fe, s, se, r, re, y, k, sd, dims=16):
        if f.shape[1] == 0:
            return mlp_proba(s, y, se, k, sd, n=5)
        a, b = pca_reduce(f, fe, dims, sd)
        return mlp_proba(np.c_[a, s], y, np.c_[b, se], k, sd, n=5)

    CANDIDATES["rf_pca16"] = rf_pca
    CANDIDATES["bag5_pca16"] = bag_pca


_pca_candidates()


def run(scene_name: str, seeds: List[int], candidates: List[str], feature_kw: Dict, log=print) -> Dict:
    scene = load_scene(scene_name)
    index = -np.ones(scene.shape, np.int64)
    res: Dict = {}
    for seed in seeds:
        split = scene_split(scene, seed)
        raw_tr = scene.pixel_matrix(split.train_rows, split.train_cols)
        raw_ev = scene.pixel_matrix(split.eval_rows, split.eval_cols)
        for kind in ("trained", "untrained", "none"):
            cache = feature_cache.load(scene_name, seed, "untrained" if kind == "none" else kind)
            index[cache["rows"], cache["cols"]] = np.arange(cache["rows"].size)
            itr, iev = index[split.train_rows, split.train_cols], index[split.eval_rows, split.eval_cols]
            feats, _ = feature_cache.select(cache, **feature_kw)
            if kind == "none":
                feats = feats[:, :0]
            spec = cache["spectrum"]
            for c in candidates:
                t0 = time.perf_counter()
                p = CANDIDATES[c](feats[itr], feats[iev], spec[itr], spec[iev], raw_tr, raw_ev, split.train_y,
                                  scene.n_classes, seed)
                m = classification_metrics(split.eval_y, p.argmax(1), scene.n_classes)
                res.setdefault(f"{c}/{kind}", []).append(m)
                log(f"[{scene_name} s{seed}] {c:14s} {kind:9s} OA {100 * m['overall_accuracy']:.2f} "
                    f"kappa {100 * m['kappa']:.2f} mIoU {100 * m['mean_iou']:.2f} ({time.perf_counter() - t0:.1f} s)")
    return res


def table(res: Dict, reference: str = None) -> str:
    keys = ("overall_accuracy", "kappa", "mean_iou")
    lines = ["| candidate | OA | kappa | mIoU | ΔOA vs no-diffusion [95 % CI] |", "|---|---|---|---|---|"]
    for name, runs in res.items():
        cells = [f"{100 * np.mean([r[k] for r in runs]):.2f} ± {100 * np.std([r[k] for r in runs]):.2f}"
                 for k in keys]
        base = res.get(name.split("/")[0] + "/none")
        delta = ""
        if base is not None and not name.endswith("/none") and len(runs) == len(base):
            d = paired_ci([r["overall_accuracy"] for r in runs], [r["overall_accuracy"] for r in base])
            delta = f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scene", default="enmap")
    p.add_argument("--seeds", default="0")
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--timesteps", default="200")
    p.add_argument("--blocks", default="4,5")
    a = p.parse_args(argv)
    kw = {"timesteps": tuple(int(t) for t in a.timesteps.split(",")),
          "blocks": tuple(int(b) for b in a.blocks.split(","))}
    res = run(a.scene, [int(s) for s in a.seeds.split(",")], a.candidates.split(","), kw,
              log=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

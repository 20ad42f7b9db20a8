"""Change detection on every real pair of ``shared/data/change`` (issue 13): the naive baselines and ours.

Scores (``engine.assessment.change``): CVA magnitude on z-scored bands (Malila 1980) for OSCD (13 bands and the native 10 m
bands B02 B03 B04 B08) and LEVIR-CD (RGB); |log-ratio| and CVA for the Bern ERS-2 SAR pair. Metrics as the data
README defines them: rank ROC-AUC, best F1 over every threshold (oracle), and the F1 a user would get at an
automatic threshold on the score: Otsu 1979 and Kittler & Illingworth 1986 (minimum error).

``--ours`` adds ``engine.tasks.changedetect`` (deep CVA, Saha et al. 2019) with every FEATURES source (bands = CVA through
the product's own path, diffusion+bands = the default, diffusion) and, with ``--prior``, the shipped prior as
backbone; ``--supervised`` the forest on sparse stratified points (0.5 % of the pixels, at least 20 changed; seeds
0-4) against a 500-tree Random Forest on [bands t1, bands t2, t2 − t1] on the same splits, scored on every
non-training pixel, with paired 95 % t-intervals over cities x seeds. One command for everything:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.change --ours --supervised --out benchmarks/results/issue13
    .venv/bin/python -m benchmarks.change --pairs bern --json out.json        # the baselines only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.assessment.change import abs_log_ratio, cva_magnitude, evaluate_score  # noqa: E402

CHANGE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "change"
OSCD_CITIES = ("rennes", "aguasclaras", "bercy", "bordeaux", "paris")
OSCD_10M = (1, 2, 3, 7)  # B02 B03 B04 B08 (0-based in B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12)


@dataclass(frozen=True)
class Pair:
    name: str
    t1: np.ndarray  # [bands, H, W] float64
    t2: np.ndarray
    label: np.ndarray  # [H, W] bool (True = change)


def _read(path: Path) -> np.ndarray:
    from osgeo import gdal

    gdal.UseExceptions()
    a = gdal.Open(str(path)).ReadAsArray().astype(np.float64)
    return a[None] if a.ndim == 2 else a


def load_pair(name: str, folder: Path = CHANGE_DIR) -> Pair:
    """One pair: OSCD city, 'levir_test_2' (label 0/255) or 'bern'."""
    if name == "levir_test_2":
        return Pair(name, _read(folder / "levir_test_2_A.png"), _read(folder / "levir_test_2_B.png"),
                    _read(folder / "levir_test_2_label.png")[0] > 0)
    return Pair(name, _read(folder / f"{name}_t1.tif"), _read(folder / f"{name}_t2.tif"),
                _read(folder / f"{name}_change.tif")[0] > 0)


def scores_for(pair: Pair) -> List[Tuple[str, Callable[[], np.ndarray]]]:
    """The README's baseline scores for this pair, as (label, thunk)."""
    if pair.name == "bern":
        return [("|log-ratio|", lambda: abs_log_ratio(pair.t1[0], pair.t2[0])),
                ("CVA (= |z_t2 − z_t1|)", lambda: cva_magnitude(pair.t1, pair.t2))]
    if pair.name == "levir_test_2":
        return [("CVA RGB", lambda: cva_magnitude(pair.t1, pair.t2))]
    idx = list(OSCD_10M)
    return [("CVA 13 bands", lambda: cva_magnitude(pair.t1, pair.t2)),
            ("CVA B02 B03 B04 B08", lambda: cva_magnitude(pair.t1[idx], pair.t2[idx]))]


def run(pairs: Sequence[str]) -> List[Dict]:
    rows = []
    for name in pairs:
        pair = load_pair(name)
        for label, score_fn in scores_for(pair):
            start = time.perf_counter()
            score = score_fn()
            ev = evaluate_score(score, pair.label)
            rows.append({"pair": name, "score": label, "auc": ev.auc, "best_f1": asdict(ev.best),
                         **{m: asdict(r) for m, r in ev.automatic.items()},
                         "changed_pixels": int(pair.label.sum()), "pixels": int(pair.label.size),
                         "seconds": time.perf_counter() - start})
    return rows


def markdown(rows: List[Dict]) -> str:
    out = ["| pair | score | AUC | best F1 (oracle) | at threshold | F1 Otsu | P / R Otsu | F1 K–I | P / R K–I |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, o, k = r["best_f1"], r["otsu"], r["kittler-illingworth"]
        out.append(f"| {r['pair']} | {r['score'].replace('|', chr(92) + '|')} | {r['auc']:.4f} | {b['f1']:.4f} | "
                   f"{b['threshold']:.3f} | {o['f1']:.4f} | {o['precision']:.3f} / {o['recall']:.3f} | "
                   f"{k['f1']:.4f} | {k['precision']:.3f} / {k['recall']:.3f} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="*", default=[*OSCD_CITIES, "levir_test_2", "bern"])
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if not CHANGE_DIR.is_dir():
        print(f"no change data in {CHANGE_DIR}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    rows = run(args.pairs)
    print(markdown(rows))
    print(f"\n{len(rows)} scores on {len(args.pairs)} pairs in {time.perf_counter() - start:.1f} s "
          f"({os.cpu_count()} CPUs visible)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0




# ---------------------------------------------------------------------------------------------------------
# ours (engine.tasks.changedetect), unsupervised and supervised

def _settings(features: str, pair: str, backbone: str = "auto"):
    from engine.tasks.changedetect import ChangeSettings
    from engine.settings import PipelineSettings

    ps = PipelineSettings()
    ps.backbone.source = backbone
    ps.device = "cpu"
    return ChangeSettings(pipeline=ps, features=features, sar=pair == "bern")


def run_ours(pairs: Sequence[str], sources: Sequence[str], backbones: Sequence[str] = ("auto",)) -> List[Dict]:
    """Our unsupervised score per pair and FEATURES source: AUC, best F1, F1 at both automatic thresholds."""
    from engine.assessment.change import THRESHOLDS, f1_at
    from engine.tasks.changedetect import detect_arrays

    rows = []
    for name in pairs:
        pair = load_pair(name)
        for backbone in backbones:
            for src in sources:
                if backbone != "auto" and src == "bands":
                    continue  # no network: the backbone does not matter
                start = time.perf_counter()
                score, _, model = detect_arrays(pair.t1, pair.t2, _settings(src, name, backbone))
                seconds = time.perf_counter() - start
                ok = np.isfinite(score)
                ev = evaluate_score(score[ok], pair.label[ok])
                rows.append({"pair": name, "score": f"ours {src}" + ("" if backbone == "auto" else f" ({backbone})"),
                             "auc": ev.auc, "best_f1": asdict(ev.best),
                             **{m: asdict(r) for m, r in ev.automatic.items()},
                             "changed_pixels": int(pair.label.sum()), "pixels": int(pair.label.size),
                             "seconds": seconds, "backbone": model.backbone_info.kind if model.backbone_info else "none"})
                print(f"{name:13s} {rows[-1]['score']:28s} AUC {ev.auc:.4f} best F1 {ev.best.f1:.4f} "
                      f"Otsu {ev.automatic['otsu'].f1:.4f} KI {ev.automatic['kittler-illingworth'].f1:.4f} "
                      f"{seconds:.1f} s", flush=True)
    return rows


def sparse_points(label: np.ndarray, seed: int, fraction: float = 0.005, min_change: int = 20) -> np.ndarray:
    """Stratified random training pixels (flat indices): ``fraction`` of the pixels, at least ``min_change``
    changed, the rest unchanged; the same draw for ours and the baseline."""
    rng = np.random.default_rng(seed)
    flat = label.ravel()
    n = int(round(fraction * flat.size))
    n_change = max(min_change, int(round(n * flat.mean())))
    ch, no = np.flatnonzero(flat), np.flatnonzero(~flat)
    return np.sort(np.concatenate([rng.choice(ch, n_change, replace=False), rng.choice(no, n - n_change, replace=False)]))


def change_metrics(pred: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    """F1 and IoU of the change class, Cohen's kappa, on the given pixels."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    tp, fp, fn = int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum())
    tn = pred.size - tp - fp - fn
    n = pred.size
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n ** 2
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "iou": tp / max(tp + fp + fn, 1),
            "kappa": (po - pe) / (1 - pe) if pe < 1 else 0.0}


def rf_inputs(pair: Pair) -> np.ndarray:
    """[pixels, 3 bands] float32: [bands t1, bands t2, t2 − t1] per pixel, the supervised baseline's inputs."""
    return np.concatenate([pair.t1, pair.t2, pair.t2 - pair.t1]).reshape(3 * len(pair.t1), -1).T.astype(np.float32)


def fit_rf(x: np.ndarray, pair: Pair, train: np.ndarray, seed: int):
    """Random Forest (500 trees) on the pair's :func:`rf_inputs` ``x`` at the training pixels: the supervised
    baseline."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(500, random_state=seed, n_jobs=1).fit(x[train], pair.label.ravel()[train])


def rf_baseline(pair: Pair, train: np.ndarray, seed: int) -> np.ndarray:
    x = rf_inputs(pair)
    return fit_rf(x, pair, train, seed).predict(x).astype(bool)


def fit_ours(pair: Pair, seed: int, features: str):
    """Our supervised run on the pair's seed-``seed`` sparse labels: (train pixels, change map, model)."""
    from engine.tasks.changedetect import ChangeLabels, detect_arrays

    w = pair.label.shape[1]
    train = sparse_points(pair.label, seed)
    labels = ChangeLabels(train // w, train % w, pair.label.ravel()[train].astype(np.int64))
    settings = _settings(features, pair.name)
    settings.pipeline.seed = seed
    _, change, model = detect_arrays(pair.t1, pair.t2, settings, labels=labels)
    return train, change, model


def run_supervised(pairs: Sequence[str], seeds: Sequence[int], features: str = "diffusion+bands") -> List[Dict]:
    rows = []
    for name in pairs:
        pair = load_pair(name)
        for seed in seeds:
            start = time.perf_counter()
            train, change, model = fit_ours(pair, seed, features)
            t_ours = time.perf_counter() - start
            test = np.ones(pair.label.size, bool)
            test[train] = False
            start = time.perf_counter()
            rf = rf_baseline(pair, train, seed)
            t_rf = time.perf_counter() - start
            ref = pair.label.ravel()[test]
            ours = change_metrics(change.ravel()[test] == 1, ref)
            base = change_metrics(rf[test], ref)
            rows.append({"pair": name, "seed": seed, "train_pixels": int(train.size),
                         "train_change": int(pair.label.ravel()[train].sum()), "test_pixels": int(test.sum()),
                         "ours": ours, "rf": base, "seconds_ours": t_ours, "seconds_rf": t_rf,
                         "oob": model.report.get("validation")})
            print(f"{name:13s} seed {seed} ours F1 {ours['f1']:.4f} IoU {ours['iou']:.4f} kappa {ours['kappa']:.4f} | "
                  f"RF F1 {base['f1']:.4f} IoU {base['iou']:.4f} kappa {base['kappa']:.4f} ({t_ours:.0f} s / "
                  f"{t_rf:.0f} s)", flush=True)
    return rows


def run_transfer(cities: Sequence[str], seed: int = 0, features: str = "diffusion+bands") -> List[Dict]:
    """A supervised model fitted on one OSCD city (its seed-``seed`` sparse labels) applied to every other city
    without labels, as difflc:applychangemodel does (the same model object a saved file rebuilds), scored on all of
    the target's pixels; beside it the RF on stacked bands transferred the same way, the target's own supervised
    model (its own sparse labels; scored off them) and the target's unsupervised default map (Otsu)."""
    from engine.data.readers import ArrayReader
    from engine.tasks.changedetect import detect_arrays, stream_scores

    pairs = {name: load_pair(name) for name in cities}
    inputs = {name: rf_inputs(pair) for name, pair in pairs.items()}
    models, forests, own = {}, {}, {}
    for name, pair in pairs.items():
        train, change, models[name] = fit_ours(pair, seed, features)
        test = np.ones(pair.label.size, bool)
        test[train] = False
        own[name] = change_metrics(change.ravel()[test] == 1, pair.label.ravel()[test])["f1"]
        forests[name] = fit_rf(inputs[name], pair, train, seed)
    unsupervised = {}
    for name, pair in pairs.items():
        _, change, _ = detect_arrays(pair.t1, pair.t2, _settings(features, name))
        unsupervised[name] = change_metrics(change.ravel() == 1, pair.label.ravel())["f1"]
    rows = []
    for source in cities:
        for target, pair in pairs.items():
            if target == source:
                continue
            score = np.full(pair.label.shape, np.nan, np.float32)

            def write(row, s, score=score):
                score[row:row + s.shape[0]] = s

            start = time.perf_counter()
            stream_scores(models[source], ArrayReader(pair.t1), ArrayReader(pair.t2), write)
            seconds = time.perf_counter() - start
            rf = forests[source].predict(inputs[target]).astype(bool)
            ref = pair.label.ravel()
            rows.append({"source": source, "target": target, "seed": seed,
                         "ours": change_metrics(np.nan_to_num(score, nan=0.0).ravel() >= 0.5, ref),
                         "rf": change_metrics(rf, ref), "own_supervised_f1": own[target],
                         "unsupervised_f1": unsupervised[target], "seconds": seconds})
            r = rows[-1]
            print(f"{source:12s} -> {target:12s} ours F1 {r['ours']['f1']:.4f} RF F1 {r['rf']['f1']:.4f} | target's "
                  f"own supervised {own[target]:.4f}, unsupervised {unsupervised[target]:.4f} ({seconds:.0f} s)",
                  flush=True)
    return rows


def transfer_markdown(rows: List[Dict]) -> str:
    out = ["| target | ours, transferred (mean of 4 sources) | RF, transferred | own labels (ours) | unsupervised (Otsu) |",
           "|---|---|---|---|---|"]
    for target in dict.fromkeys(r["target"] for r in rows):
        rs = [r for r in rows if r["target"] == target]
        out.append(f"| {target} | {np.mean([r['ours']['f1'] for r in rs]):.4f} | "
                   f"{np.mean([r['rf']['f1'] for r in rs]):.4f} | {rs[0]['own_supervised_f1']:.4f} | "
                   f"{rs[0]['unsupervised_f1']:.4f} |")
    for name, diffs in (("ours − RF, both transferred", [r["ours"]["f1"] - r["rf"]["f1"] for r in rows]),
                        ("ours transferred − unsupervised on the target",
                         [r["ours"]["f1"] - r["unsupervised_f1"] for r in rows])):
        m, lo, hi = paired_ci(diffs)
        out.append(f"\n{name}, F1: {m:+.4f} (95 % CI {lo:+.4f} … {hi:+.4f}, n = {len(rows)} source → target pairs)")
    return "\n".join(out)


def paired_ci(diffs: Sequence[float]) -> Tuple[float, float, float]:
    """Mean and 95 % t-interval of paired differences."""
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    m = float(d.mean())
    if d.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return m, m - half, m + half


def supervised_markdown(rows: List[Dict]) -> str:
    out = ["| pair | seeds | train px (change) | ours F1 | RF F1 | ours IoU | RF IoU | ours kappa | RF kappa | s ours / RF |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["pair"] for r in rows):
        rs = [r for r in rows if r["pair"] == name]
        mean = lambda who, k: np.mean([r[who][k] for r in rs])  # noqa: E731
        out.append(f"| {name} | {len(rs)} | {rs[0]['train_pixels']} ({rs[0]['train_change']}) | "
                   f"{mean('ours', 'f1'):.4f} | {mean('rf', 'f1'):.4f} | {mean('ours', 'iou'):.4f} | "
                   f"{mean('rf', 'iou'):.4f} | {mean('ours', 'kappa'):.4f} | {mean('rf', 'kappa'):.4f} | "
                   f"{np.mean([r['seconds_ours'] for r in rs]):.0f} / {np.mean([r['seconds_rf'] for r in rs]):.0f} |")
    for k in ("f1", "iou", "kappa"):
        m, lo, hi = paired_ci([r["ours"][k] - r["rf"][k] for r in rows])
        out.append(f"\nours − RF, {k}: {m:+.4f} (95 % CI {lo:+.4f} … {hi:+.4f}, n = {len(rows)} city x seed pairs)")
    return "\n".join(out)


def figure(name: str, out: Path) -> None:
    """before / after / reference / our change score and map (default settings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.tasks.changedetect import ChangeSettings, detect_arrays

    pair = load_pair(name)
    score, change, _ = detect_arrays(pair.t1, pair.t2, _settings(ChangeSettings().features, name))

    def rgb(x):
        img = x[[3, 2, 1]] if len(x) >= 13 else x[:3] if len(x) >= 3 else np.repeat(x[:1], 3, 0)
        lo, hi = np.percentile(img, (2, 98), axis=(1, 2), keepdims=True)
        return np.clip((img - lo) / np.maximum(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)

    fig, ax = plt.subplots(1, 5, figsize=(20, 4.4))
    for a, (title, img) in zip(ax, [("before", rgb(pair.t1)), ("after", rgb(pair.t2)),
                                    ("reference change", pair.label), ("our score (deep CVA)", score),
                                    ("our map (Otsu)", change == 1)]):
        a.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main_all(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="*", default=[*OSCD_CITIES, "levir_test_2", "bern"])
    parser.add_argument("--json", help="also write the baseline rows as JSON here")
    parser.add_argument("--ours", action="store_true", help="also our unsupervised scores")
    parser.add_argument("--prior", action="store_true", help="also the shipped prior as backbone (control)")
    parser.add_argument("--supervised", action="store_true", help="also the supervised comparison on OSCD")
    parser.add_argument("--transfer", action="store_true",
                        help="also supervised models applied to the other OSCD cities (difflc:applychangemodel)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", help="folder for results (JSON + markdown) and the figure")
    args = parser.parse_args(argv)
    if not CHANGE_DIR.is_dir():
        print(f"no change data in {CHANGE_DIR}", file=sys.stderr)
        return 1
    os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # never an .aux.xml beside the shared data
    start = time.perf_counter()
    rows = run(args.pairs)
    text = [markdown(rows)]
    results: Dict = {"baselines": rows}
    if args.ours:
        backbones = ("auto", "prior") if args.prior else ("auto",)
        ours = run_ours(args.pairs, ("bands", "diffusion+bands", "diffusion"), backbones)
        results["ours"] = ours
        text.append(markdown(ours))
    if args.supervised:
        sup = run_supervised([p for p in args.pairs if p in OSCD_CITIES], args.seeds)
        results["supervised"] = sup
        text.append(supervised_markdown(sup))
    if args.transfer:
        transfer = run_transfer([p for p in args.pairs if p in OSCD_CITIES], args.seeds[0])
        results["transfer"] = transfer
        text.append(transfer_markdown(transfer))
    print("\n\n".join(text))
    print(f"\nall in {time.perf_counter() - start:.1f} s ({os.cpu_count()} CPUs visible)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text("\n\n".join(text) + "\n")
        figure("rennes", Path(__file__).resolve().parent / "figures" / "issue13_change_rennes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main_all())

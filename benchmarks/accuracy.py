"""Run every registered method on the protocol's splits; report mean ± std and paired differences.

    python benchmarks/accuracy.py [--scenes chip,enmap] [--seeds N] [--methods rf,svm,...]
                                  [--out benchmarks/out/accuracy.json]

Without ``--methods`` it runs the whole suite (``suite``): the baselines, the product's configurations and
every ablation of ``benchmarks/pipeline_methods.py``.

A method is ``fn(scene: SceneData, split: Split, seed: int) -> np.ndarray`` of class indices 0..K-1 at the
evaluation pixels (``split.eval_rows/eval_cols`` order). Register more with ``register(name)``; a method
that predicts a whole map can use ``split.train_label_map(scene.shape)`` as its input and
``split.predictions_from_map(map)`` for its output. All methods see identical splits, so the differences
against RF and SVM are paired per seed (t-interval, ``protocol.paired_ci``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import baselines  # noqa: E402
from benchmarks.protocol import SceneData, Split, load_scene, paired_ci, scene_split  # noqa: E402
from engine.assessment.metrics import classification_metrics  # noqa: E402

Method = Callable[[SceneData, Split, int], np.ndarray]
METHODS: Dict[str, Method] = {}
SUMMARY_METRICS = ("overall_accuracy", "average_accuracy", "kappa", "mean_f1", "mean_iou")
SHORT = {"overall_accuracy": "OA", "average_accuracy": "AA", "kappa": "kappa", "mean_f1": "mF1",
         "mean_iou": "mIoU"}
# paired against, where both ran: the baselines, the no-network/untrained controls and the default's parts
REFERENCES = ("rf", "svm", "rf_smooth", "rf_ms", "rf_ms_smooth", "ab_nodiff", "difflc_nosmooth", "difflc_prior", "difflc_scene")


def register(name: str, fn: Optional[Method] = None):
    """``register("x", fn)`` or ``@register("x")``; a name can be registered once."""
    def add(f: Method) -> Method:
        if name in METHODS and METHODS[name] is not f:
            raise ValueError(f"method {name!r} is already registered")
        METHODS[name] = f
        return f

    return add(fn) if fn is not None else add


def from_map_predictor(fn: Callable[[SceneData, np.ndarray, int], np.ndarray]) -> Method:
    """Adapt ``fn(scene, train_map [H,W] of 0/1..K, seed) -> map [H,W] of 1..K`` (the shape of
    ``engine.tasks.landcover.fit_predict_arrays``) to a registry method scored at the evaluation pixels."""
    def method(scene: SceneData, split: Split, seed: int) -> np.ndarray:
        return split.predictions_from_map(fn(scene, split.train_label_map(scene.shape), seed))

    method.__name__ = getattr(fn, "__name__", "map_method")
    return method


register("rf", baselines.random_forest)
register("svm", baselines.rbf_svm)
register("mlp", baselines.mlp)
register("rf_smooth", baselines.rf_smoothed)
register("rf_ms", baselines.rf_multiscale)
register("rf_ms_smooth", baselines.rf_ms_smoothed)


def evaluate(method: Method, scene: SceneData, split: Split, seed: int) -> Dict:
    t0 = time.perf_counter()
    pred = np.asarray(method(scene, split, seed))
    seconds = time.perf_counter() - t0
    if pred.shape != split.eval_y.shape:
        raise ValueError(f"method returned {pred.shape} predictions; expected {split.eval_y.shape} "
                         "(one per evaluation pixel)")
    m = classification_metrics(split.eval_y, pred, scene.n_classes, scene.class_names)
    m["seconds"] = seconds
    m["seed"] = seed
    return m


def run(scenes: Sequence[Union[str, SceneData]], methods: Union[Sequence[str], Callable[[SceneData], Sequence[str]]],
        n_seeds: Optional[int] = None, log=print) -> Dict:
    """Scenes by name (``protocol.SCENES``) or as loaded :class:`SceneData`; seeds 0..n_seeds-1 or the protocol's.

    ``methods``: names, or a function of the scene giving its names (ablations differ per scene).
    """
    results: Dict = {}
    for item in scenes:
        scene = load_scene(item) if isinstance(item, str) else item
        name = scene.name
        methods_here = list(methods(scene) if callable(methods) else methods)
        unknown = [m for m in methods_here if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(METHODS)}")
        seeds = list(scene.seeds if n_seeds is None else range(n_seeds))
        per: Dict[str, List[Dict]] = {m: [] for m in methods_here}
        splits = []
        for seed in seeds:
            split = scene_split(scene, seed)
            splits.append({"seed": seed, "n_train": split.n_train, "n_eval": split.n_eval,
                           "train_per_class": np.bincount(split.train_y, minlength=scene.n_classes).tolist()})
            for m in methods_here:
                r = evaluate(METHODS[m], scene, split, seed)
                per[m].append(r)
                log(f"[{name} seed {seed}] {m}: OA {100 * r['overall_accuracy']:.2f} "
                    f"kappa {100 * r['kappa']:.2f} mIoU {100 * r['mean_iou']:.2f} ({r['seconds']:.1f} s)")
        results[name] = {"seeds": seeds, "fraction": scene.fraction, "per_class": scene.per_class, "splits": splits, "notes": scene.notes,
                         "methods": per, "summary": summarise(per)}
    return results


def summarise(per: Dict[str, List[Dict]]) -> Dict:
    out: Dict = {"mean": {}, "std": {}, "seconds": {}, "paired": {}}
    for m, runs in per.items():
        out["mean"][m] = {k: float(np.mean([r[k] for r in runs])) for k in SUMMARY_METRICS}
        out["std"][m] = {k: float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else float("nan")
                         for k in SUMMARY_METRICS}
        out["seconds"][m] = float(np.sum([r["seconds"] for r in runs]))
    for ref in REFERENCES:
        if ref not in per:
            continue
        for m, runs in per.items():
            if m == ref or not _compared(m, ref):
                continue
            out["paired"].setdefault(m, {})[ref] = {
                k: paired_ci([r[k] for r in runs], [r[k] for r in per[ref]]).to_dict() for k in SUMMARY_METRICS}
    return out


def _compared(method: str, ref: str) -> bool:
    """The default against every reference; the other product variants against RF, RF + smoothing and the
    untrained control; ablations against the no-diffusion control; baselines against RF."""
    if method == ref:
        return False
    if method == "difflc":
        return True
    if method.startswith("difflc_prior"):
        return ref in ("rf", "rf_smooth", "rf_ms", "difflc_prior")
    if method.startswith("difflc"):
        return ref in ("rf", "rf_smooth", "rf_ms", "rf_ms_smooth")
    if method.startswith("ab_"):
        return ref == "ab_nodiff"
    return ref == "rf"


def markdown(results: Dict) -> str:
    lines = []
    for scene, res in results.items():
        s = res["summary"]
        n_train = sorted({sp["n_train"] for sp in res["splits"]})
        share = (f"{res['per_class']} px per class" if res.get("per_class") else f"{100 * res['fraction']:g} %")
        lines.append(f"### {scene}: {len(res['seeds'])} seeds, {share} training "
                     f"({'/'.join(map(str, n_train))} px), {res['splits'][0]['n_eval']} evaluation px\n")
        lines.append("| method | " + " | ".join(SHORT[k] for k in SUMMARY_METRICS) + " | time (s, all seeds) |")
        lines.append("|---" * (len(SUMMARY_METRICS) + 2) + "|")
        for m in s["mean"]:
            cells = [f"{100 * s['mean'][m][k]:.2f} ± {100 * s['std'][m][k]:.2f}" for k in SUMMARY_METRICS]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {s['seconds'][m]:.0f} |")
        if s["paired"]:
            lines.append("\nPaired differences (percentage points, mean [95 % CI]; * = CI excludes 0):\n")
            lines.append("| method | vs | " + " | ".join(f"Δ{SHORT[k]}" for k in SUMMARY_METRICS) + " |")
            lines.append("|---" * (len(SUMMARY_METRICS) + 2) + "|")
            for m, refs in s["paired"].items():
                for ref, d in refs.items():
                    cells = [f"{100 * d[k]['mean']:+.2f} [{100 * d[k]['low']:+.2f}, {100 * d[k]['high']:+.2f}]"
                             + ("*" if d[k]["significant"] else "") for k in SUMMARY_METRICS]
                    lines.append(f"| {m} | {ref} | " + " | ".join(cells) + " |")
        lines.append(per_class_tables(res))
        verdict = best_baseline_lines(res)
        if verdict:
            lines.append("\nThe default against the best simple baseline, paired (95 % CI):\n\n" + verdict)
        lines.append("")
    return "\n".join(lines)


BASELINES = ("rf", "svm", "rf_smooth", "rf_ms", "rf_ms_smooth")


def per_class_tables(res: Dict, methods: Optional[Sequence[str]] = None) -> str:
    """Per-class recall and IoU (mean over seeds, %) of each method, with the training labels per class: where
    rare classes are won or lost."""
    per = res["methods"]
    methods = [m for m in (methods or per) if m in per]
    if not methods:
        return ""
    names = [c["name"] for c in per[methods[0]][0]["per_class"]]
    counts = np.mean([sp["train_per_class"] for sp in res["splits"]], axis=0)
    lines = []
    for key, title in (("recall", "recall (producer's accuracy)"), ("iou", "IoU")):
        lines.append(f"\nPer-class {title}, % (mean over seeds; training labels per class in brackets):\n")
        lines.append("| method | " + " | ".join(f"{n} ({c:g})" for n, c in zip(names, counts)) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for m in methods:
            vals = np.mean([[pc[key] for pc in r["per_class"]] for r in per[m]], axis=0)
            lines.append(f"| {m} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |")
    return "\n".join(lines)


def best_baseline_lines(res: Dict, method: str = "difflc") -> str:
    """The default against the BEST simple baseline of this scene (by mean OA and, separately, by mean mIoU),
    paired per seed, and the rare-class check: the default's mean per-class recall ≥ plain RF's on every seed."""
    per = res["methods"]
    if method not in per:
        return ""
    base = [b for b in BASELINES if b in per]
    lines = []
    for k in ("overall_accuracy", "mean_iou"):
        if not base:
            break
        best = max(base, key=lambda b: np.mean([r[k] for r in per[b]]))
        d = paired_ci([r[k] for r in per[method]], [r[k] for r in per[best]]).to_dict()
        lines.append(f"- {method} − best baseline by {SHORT[k]} ({best}): {100 * d['mean']:+.2f} "
                     f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" + (" *" if d["significant"] else ""))
    if "rf" in per:
        ours = [r["average_accuracy"] for r in per[method]]
        rf = [r["average_accuracy"] for r in per["rf"]]
        worse = [i for i, (a, b) in enumerate(zip(ours, rf)) if a < b - 1e-12]
        lines.append(f"- mean per-class recall ≥ RF's on {len(ours) - len(worse)} of {len(ours)} seeds"
                     + (f" (below on seeds {', '.join(str(res['seeds'][i]) for i in worse)})" if worse else ""))
    return "\n".join(lines)


def suite(scene: SceneData) -> List[str]:
    """The baselines and every product variant (the default and each of its parts switched), one run, same splits.

    Issue 5's feature-cache ablations (``ab_*``) and the MLP head stay runnable with ``--methods``."""
    from benchmarks.pipeline_methods import PRODUCT_METHODS

    return list(BASELINES) + [m for m in PRODUCT_METHODS if m != "difflc_mlp"]

# results of runs made before the default changed, under the variant names of the time (same code paths)
RENAMED = {"difflc": "difflc_prior", "difflc_nosmooth": "difflc_prior_nosmooth", "difflc_frozen": "difflc_prior_frozen",
           "difflc_pcaonly": "difflc_prior_pcaonly", "difflc_untrained": "difflc"}


def rename_methods(results: Dict, mapping: Dict[str, str]) -> Dict:
    """The same results under other method names (all names mapped at once, so swaps are safe)."""
    out = json.loads(json.dumps(results))
    for res in out.values():
        res["methods"] = {mapping.get(m, m): v for m, v in res["methods"].items()}
        res.pop("summary", None)
    return out


def merge_runs(runs: Sequence[Dict]) -> Dict:
    """Union of several runs' methods per scene (same seeds, hence the same splits), summaries recomputed.

    A method present in two runs must have given identical metrics on every seed (the product is deterministic
    on the CPU): that is checked, and a mismatch is an error rather than a silent choice."""
    merged: Dict = {}
    for results in runs:
        for scene, res in results.items():
            if scene not in merged:
                merged[scene] = json.loads(json.dumps(res))
                continue
            into = merged[scene]
            if into["seeds"] != res["seeds"]:
                raise ValueError(f"{scene}: runs with different seeds ({into['seeds']} vs {res['seeds']}) cannot be paired")
            for m, runs_m in res["methods"].items():
                if m in into["methods"]:
                    a = [r["overall_accuracy"] for r in into["methods"][m]]
                    b = [r["overall_accuracy"] for r in runs_m]
                    if a != b:
                        raise ValueError(f"{scene}/{m}: two runs disagree ({a} vs {b}); the product is not deterministic")
                    continue
                into["methods"][m] = runs_m
    for res in merged.values():
        res["summary"] = summarise(res["methods"])
    return merged


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", default="enmap,salinas,chip")
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 (default: the protocol's)")
    p.add_argument("--methods", default=None,
                   help="comma list (default: the whole suite: baselines, the product, every ablation)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "accuracy.json"))
    p.add_argument("--merge", default=None, metavar="A.json,B.json",
                   help="run nothing: merge earlier runs (e.g. one process per scene) into --out and print them")
    p.add_argument("--legacy", default=None, metavar="A.json,...",
                   help="with --merge: runs made before the default changed; their method names are mapped by RENAMED")
    a = p.parse_args(argv)
    if a.merge:
        runs = [json.loads(Path(path).read_text())["results"] for path in a.merge.split(",")]
        legacy = {Path(x).resolve() for x in (a.legacy or "").split(",") if x}
        runs = [rename_methods(r, RENAMED) if Path(path).resolve() in legacy else r
                for r, path in zip(runs, a.merge.split(","))]
        results = merge_runs(runs)
        Path(a.out).write_text(json.dumps({"results": results, "merged_from": a.merge.split(",")}, indent=1))
        print(markdown(results))
        print(target_verdict(results))
        return 0
    scenes = [s for s in a.scenes.split(",") if s]
    methods = [m for m in a.methods.split(",") if m] if a.methods else suite
    t0 = time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: Dict = {}
    for scene in scenes:  # written after every scene: a long run keeps what it finished
        results.update(run([scene], methods, a.seeds, log=lambda s: print(s, file=sys.stderr, flush=True)))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable({"results": results, "seconds": time.perf_counter() - t0}), indent=1))
        tmp.replace(out)
    print(markdown(results))
    print(target_verdict(results))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


TARGET_METRICS = ("overall_accuracy", "mean_iou")


def target_verdict(results: Dict, method: str = "difflc") -> str:
    """Issue 20's targets, checked on the run's own numbers against the BEST simple baseline of each scene (per
    metric): on EnMAP west and Salinas-A the paired 95 % CI of OA and mIoU above zero; on the chip mean ΔOA ≥ −0.2;
    and on every scene and seed the default's mean per-class recall ≥ plain RF's."""
    lines = [f"Target check for `{method}` (against the best baseline of {', '.join(BASELINES)}):"]
    for scene in ("enmap", "salinas", "chip"):
        per = results.get(scene, {}).get("methods", {})
        base = [b for b in BASELINES if b in per]
        if method not in per or not base:
            lines.append(f"- {scene}: not run")
            continue
        parts = []
        for k in (("overall_accuracy",) if scene == "chip" else TARGET_METRICS):
            best = max(base, key=lambda b: np.mean([r[k] for r in per[b]]))
            d = paired_ci([r[k] for r in per[method]], [r[k] for r in per[best]]).to_dict()
            if scene == "chip":
                ok = d["mean"] >= -0.002
                parts.append(f"ΔOA vs {best} {100 * d['mean']:+.2f} (needs ≥ −0.20): {'met' if ok else 'NOT met'}")
            else:
                low = float("nan") if d["low"] is None else d["low"]
                parts.append(f"Δ{SHORT[k]} vs {best} {100 * d['mean']:+.2f} [{100 * low:+.2f}, {100 * d['high']:+.2f}] "
                             f"{'met' if low > 0 else 'NOT met'}")
        if "rf" in per:
            ok = all(a >= b - 1e-12 for a, b in zip([r["average_accuracy"] for r in per[method]],
                                                    [r["average_accuracy"] for r in per["rf"]]))
            parts.append(f"mean per-class recall ≥ RF's on every seed: {'met' if ok else 'NOT met'}")
        lines.append(f"- {scene}: " + "; ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    # run through the package module so that benchmarks.pipeline_methods registers into the same registry
    from benchmarks import accuracy as _registry
    import benchmarks.pipeline_methods  # noqa: F401  (registers the product's configurations)

    sys.exit(_registry.main())

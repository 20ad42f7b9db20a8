"""Combine issue 20's runs (one process per scene and method group, same seeds → same splits) into one table.

    .venv/bin/python benchmarks/results/issue20/combine.py

The first runs' difflc / difflc_best / difflc_bandsfirst used a Brier-based feature check that was replaced
before the `*_new` runs; those three are taken from the `*_new` runs only. The runs were made under the variant
names of the time (`RUN_NAMES`): the one-standard-error rule was then the default ("difflc"), the best-score rule
"difflc_best"; after the runs the best-score rule became the default, so the names are mapped to today's
(`benchmarks/pipeline_methods.VARIANTS`: same settings, same code paths). Controls ran on seeds 0–4 and are paired
with the configuration they vary, on the same seeds.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
import numpy as np  # noqa: E402

from benchmarks.accuracy import markdown, merge_runs, rename_methods, target_verdict  # noqa: E402
from benchmarks.protocol import paired_ci  # noqa: E402

REDONE = ("difflc", "difflc_best", "difflc_bandsfirst")
RUN_NAMES = {"difflc": "difflc_1se", "difflc_best": "difflc", "difflc_bandsfirst": "difflc_1se_bandsfirst",
             "difflc_gaussian": "difflc_1se_gaussian", "difflc_noself": "difflc_1se_noself",
             "difflc_weighted": "difflc_1se_weighted"}


def load(name, rename=True):
    p = HERE / f"{name}.json"
    if not p.exists():
        return None
    res = json.loads(p.read_text())["results"]
    return rename_methods(res, RUN_NAMES) if rename else res


runs = []
for scene in ("enmap", "salinas"):
    first, new = load(scene, rename=False), load(f"{scene}_new")
    if first:
        for m in REDONE:
            first[scene]["methods"].pop(m, None)
        runs.append(first)
    if new:
        runs.append(new)
for name in ("chip", "chip_best"):
    chip = load(name)
    if chip:
        runs.append(chip)
results = merge_runs(runs)
(HERE / "accuracy.json").write_text(json.dumps({"results": results}, indent=1))
out = [markdown(results), target_verdict(results), "", "### Controls (seeds 0–4), paired with the default on the same seeds", ""]
out.append("| scene | control | vs | OA | mIoU | AA | ΔOA | ΔmIoU | ΔAA | s/seed |")
out.append("|---|---|---|---|---|---|---|---|---|---|")
for scene in ("enmap", "salinas"):
    ctl = load(f"{scene}_controls")
    if not ctl or scene not in results:
        continue
    per = results[scene]["methods"]
    for m, rows in list(ctl[scene]["methods"].items()) + [(k, [r for r in per[k] if r["seed"] < 5])
                                                           for k in ("difflc_1se", "difflc_v02") if k in per]:
        ref = "difflc_1se" if m.startswith("difflc_1se_") else "difflc"
        base = {r["seed"]: r for r in per[ref]}
        seeds = [r["seed"] for r in rows]
        cells = [f"{100 * np.mean([r[k] for r in rows]):.2f}" for k in ("overall_accuracy", "mean_iou", "average_accuracy")]
        for k in ("overall_accuracy", "mean_iou", "average_accuracy"):
            d = paired_ci([r[k] for r in rows], [base[s][k] for s in seeds]).to_dict()
            cells.append(f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" + ("*" if d["significant"] else ""))
        cells.append(f"{np.mean([r['seconds'] for r in rows]):.0f}")
        out.append(f"| {scene} | {m} | {ref} | " + " | ".join(cells) + " |")
text = "\n".join(out)
(HERE / "accuracy.md").write_text(text + "\n")
print(text)

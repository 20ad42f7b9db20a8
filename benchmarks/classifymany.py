"""Many scenes on Dask (issue 15): 1 vs 2 local workers on the same scenes, outputs checked byte for byte.

One command:
    env PYTHONPATH=. .venv/bin/python benchmarks/classifymany.py --scenes 8 --size 256 --repeats 3 \
        --out benchmarks/out/classifymany.json

1. Writes ``--scenes`` synthetic scenes (``benchmarks.scaling.write_scene``: 200-band Int16 HSI, five classes in
   warped Voronoi regions, a different noise seed per scene) into a temporary folder.
2. Trains ONE HSI-only model on the first scene with ``engine.jobs.train`` (default settings, 10 points per class,
   ``--compact-steps`` denoising steps: classify cost does not depend on them).
3. Reference: ``engine.jobs.classify`` on every scene in this process (what ``difflc:classify`` runs).
4. ``--repeats`` times, for 1 then 2 workers (interleaved, so both see the same drift of a shared machine's load):
   ``engine.jobs.batch.run_batch`` on a fresh LocalCluster into a fresh folder;
   wall time of the whole batch (cluster start-up included, and reported apart), every output compared with the
   reference byte for byte, the peak resident memory (VmHWM) of each worker process, and the load average.
5. Prints a markdown table and writes JSON.

Torch threads are the batch's defaults: cores // workers (1 worker: all cores; 2 workers: 1 thread each).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def make_scenes(folder: Path, n: int, size: int) -> list:
    from benchmarks.scaling import write_scene

    paths = []
    for i in range(n):
        sub = folder / f"s{i}"
        sub.mkdir()
        hsi, sar = write_scene(sub, size, seed=i)
        target = folder / f"scene{i:02d}.tif"
        os.replace(hsi, target)
        shutil.rmtree(sub)
        paths.append(str(target))
    return paths


def train_model(hsi: str, size: int, path: str, compact_steps: int) -> float:
    from benchmarks.scaling import training_labels
    from engine.jobs import TrainRequest, train
    from engine.settings import PipelineSettings

    settings = PipelineSettings()
    settings.backbone.compact_steps = compact_steps
    settings.device = "cpu"
    t0 = time.perf_counter()
    train(TrainRequest(hsi, None, training_labels(size), settings, model_path=path))
    return time.perf_counter() - t0


def same(folder: Path, reference: Path) -> bool:
    names = sorted(os.listdir(reference))
    if sorted(os.listdir(folder)) != names:
        return False
    return all((folder / n).read_bytes() == (reference / n).read_bytes() for n in names)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--compact-steps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/out/classifymany.json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    from engine.jobs import batch
    from engine.jobs import classify

    work = Path(tempfile.mkdtemp(prefix="difflc-many-", dir=args.workdir))
    report = {"scenes": args.scenes, "size": args.size, "bands": 200, "repeats": args.repeats, "cores":
              batch.available_cores(), "runs": [], "load_start": load()}
    try:
        scenes = make_scenes(work, args.scenes, args.size)
        model = str(work / "model.difflc")
        report["train_s"] = train_model(scenes[0], args.size, model, args.compact_steps)
        reference = work / "reference"
        reference.mkdir()
        plan = batch.plan_scenes(model, scenes, str(reference))
        t0 = time.perf_counter()
        for unit in plan.units:  # one process, default torch threads: what difflc:classify does
            classify(model, unit.hsi, None, unit.output, device="cpu")
        report["reference_s"] = time.perf_counter() - t0
        report["reference_load_end"] = load()
        print(f"reference (one process, {args.scenes} scenes): {report['reference_s']:.1f} s, load {load()}",
              flush=True)
        for rep in range(args.repeats):  # interleaved (1, 2, 1, 2, ...): both see the same drift of the load
            for n in [int(w) for w in args.workers.split(",")]:
                out = work / f"w{n}_r{rep}"
                out.mkdir()
                before = load()
                outcome = batch.run_batch(batch.plan_scenes(model, scenes, str(out)), batch.ClusterSpec(n_workers=n))
                peaks = {}
                for r in outcome.results:
                    peaks[r.worker] = max(peaks.get(r.worker, 0.0), r.peak_rss_mib)
                run = {"workers": n, "repeat": rep, "wall_s": outcome.seconds, "startup_s": outcome.startup_s,
                       "done": len(outcome.done), "identical": same(out, reference),
                       "unit_s": [r.seconds for r in outcome.results], "worker_peak_rss_mib": peaks,
                       "torch_threads": batch.local_torch_threads(n), "load_before": before, "load_after": load()}
                report["runs"].append(run)
                print(json.dumps(run), flush=True)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for n in sorted({r["workers"] for r in report["runs"]}):
        runs = [r for r in report["runs"] if r["workers"] == n]
        rows.append({"workers": n, "median_s": statistics.median(r["wall_s"] for r in runs),
                     "walls": [round(r["wall_s"], 1) for r in runs],
                     "median_startup_s": statistics.median(r["startup_s"] for r in runs),
                     "median_unit_s": statistics.median(s for r in runs for s in r["unit_s"]),
                     "peak_rss_mib": max(v for r in runs for v in r["worker_peak_rss_mib"].values()),
                     "identical": all(r["identical"] for r in runs), "torch_threads": runs[0]["torch_threads"],
                     "loads": [r["load_before"] for r in runs]})
    base = rows[0]["median_s"]
    for row in rows:
        row["speedup"] = base / row["median_s"]
    report["summary"] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\n{args.scenes} scenes of {args.size}x{args.size} px, 200 bands; reference one-process classify "
          f"{report['reference_s']:.1f} s\n")
    print("| workers | torch threads / worker | wall s, median (runs) | of which cluster start | median s per scene "
          "on a worker | speed-up | peak RSS per worker, MiB | byte-identical to classify | load avg before runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['torch_threads']} | {r['median_s']:.1f} ({', '.join(map(str, r['walls']))}) | "
              f"{r['median_startup_s']:.1f} | {r['median_unit_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['peak_rss_mib']:.0f} | {'yes' if r['identical'] else 'NO'} | {'; '.join(r['loads'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

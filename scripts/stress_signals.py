#!/usr/bin/env python3
"""Signal a real ``qgis_process`` run at evenly spread moments of its life and check what it leaves (issue 19).

One unsignalled run of ``difflc:classify`` (map + confidence, a synthetic scene) is timed first; then run i of N
gets SIGTERM (SIGINT on every fourth) ``(i + 0.5) / N`` of that time after its start — from QGIS's own start-up,
before the plugin is even loaded, to the final moves. After each run the output folder must hold either nothing
or every output complete (readable, the map's ``.qml`` beside it), never a hidden ``.difflc-*`` file, and the
inputs must be unchanged. A table (markdown) goes to stdout, the rows as JSON to ``--out``.

    .venv/bin/python scripts/stress_signals.py --runs 40 --out benchmarks/results/issue19/stress_signals.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "qgis"))
sys.path.insert(0, str(REPO / "tests"))


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith(".aux.xml")}


def _qgis_process(args, cwd: Path, profile: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    with open(log, "w") as fh:
        return subprocess.Popen([str(REPO / "scripts" / "qgis_process"), "run", *args], cwd=cwd, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)


def _check(out: Path) -> tuple:
    """(outcome, leftovers): 'empty', 'complete' or 'PARTIAL …'; hidden or temporary files found."""
    from osgeo import gdal

    names = sorted(p.name for p in out.iterdir())
    hidden = [n for n in names if n.startswith(".")]
    visible = set(n for n in names if not n.startswith("."))
    if not visible:
        return "empty", hidden
    wanted = {"map.tif", "conf.tif", "map.qml"}
    if not wanted <= visible:
        return f"PARTIAL {sorted(visible)}", hidden
    for name in ("map.tif", "conf.tif"):
        ds = gdal.Open(str(out / name))
        if ds is None or ds.ReadAsArray() is None:
            return f"PARTIAL {name} unreadable", hidden
    return "complete", hidden


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--size", type=int, default=384, help="scene side in pixels")
    ap.add_argument("--out", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)

    from helpers_rasters import scene_points, styled_layer, synthetic_scene

    work = Path(tempfile.mkdtemp(prefix="difflc-stress-"))
    profile = work / "profile"
    scene_dir = work / "scene"
    scene_dir.mkdir()
    scene = synthetic_scene(scene_dir, size=args.size)
    labels, _, _ = scene_points(scene, scene_dir / "labels.gpkg", per_class=8)
    model = work / "model.difflc"
    proc = _qgis_process(["difflc:trainclassifier", "--", f"HSI={scene.hsi}", f"SAR={scene.sar}",
                          f"LABELS={labels}", "CLASS_FIELD=class_id", f"MODEL={model}", "COMPACT_STEPS=2",
                          "STRIDE=32", "TREES=20"], work, profile, work / "train.log")
    if proc.wait(timeout=600) != 0:
        print((work / "train.log").read_text(), file=sys.stderr)
        return 2
    inputs_before = _digest(scene_dir)

    def classify(out: Path, log: Path) -> subprocess.Popen:
        out.mkdir()
        return _qgis_process(["difflc:classify", "--", f"MODEL={model}", f"HSI={scene.hsi}", f"SAR={scene.sar}",
                              f"OUTPUT={out / 'map.tif'}", f"CONFIDENCE={out / 'conf.tif'}"], work, profile, log)

    durations = []
    for k in range(2):
        t0 = time.monotonic()
        p = classify(work / f"timing{k}", work / f"timing{k}.log")
        if p.wait(timeout=600) != 0:
            print((work / f"timing{k}.log").read_text(), file=sys.stderr)
            return 2
        durations.append(time.monotonic() - t0)
    life = statistics.median(durations)
    rows = []
    for i in range(args.runs):
        signum = signal.SIGINT if i % 4 == 3 else signal.SIGTERM
        at = life * (i + 0.5) / args.runs
        out, log = work / f"run{i:02d}", work / f"run{i:02d}.log"
        t0 = time.monotonic()
        p = classify(out, log)
        time.sleep(max(0.0, at - (time.monotonic() - t0)))
        p.send_signal(signum)
        rc = p.wait(timeout=600)
        outcome, hidden = _check(out)
        text = log.read_text(errors="replace")
        said = "signal named" if signal.Signals(signum).name in text else ""
        rows.append({"run": i, "signal": signal.Signals(signum).name, "at_s": round(at, 2),
                     "at_fraction": round((i + 0.5) / args.runs, 3), "rc": rc, "outcome": outcome,
                     "hidden_left": hidden, "message": said})
        print(f"run {i:2d} {signal.Signals(signum).name:7s} at {at:5.2f} s: rc {rc:4d} {outcome:9s} "
              f"hidden {hidden or '-'} {said}", file=sys.stderr, flush=True)
    inputs_changed = _digest(scene_dir) != inputs_before

    print(f"\nclassify of a {args.size}×{args.size} scene through qgis_process: {life:.1f} s unsignalled "
          f"(median of {len(durations)}); {args.runs} runs, signal at (i + 0.5)/{args.runs} of that\n")
    print("| moment (fraction of the run) | signal | exit | folder | hidden files left |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['at_fraction']:.3f} ({r['at_s']:.2f} s) | {r['signal']} | {r['rc']} | {r['outcome']} | "
              f"{len(r['hidden_left'])} |")
    leftovers = sum(len(r["hidden_left"]) for r in rows)
    partial = sum(r["outcome"].startswith("PARTIAL") for r in rows)
    summary = {"runs": args.runs, "life_s": round(life, 2), "hidden_left": leftovers, "partial": partial,
               "inputs_changed": inputs_changed,
               "outcomes": {k: sum(r["outcome"] == k for r in rows) for k in ("empty", "complete")},
               "exit_codes": sorted({r["rc"] for r in rows})}
    print(f"\nhidden files left: {leftovers}; partial folders: {partial}; inputs changed: {inputs_changed}; "
          f"exit codes {summary['exit_codes']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if leftovers == 0 and partial == 0 and not inputs_changed else 1


if __name__ == "__main__":
    sys.exit(main())

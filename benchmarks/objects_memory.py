"""Memory and time of object classification against the number of polygons (issue 21, items 2 and 4).

One synthetic scene (6 bands, constant fields + noise, a UTM grid), one object model trained on a 1,000-cell grid
of polygons (one cell in ten labelled from the scene's truth), then ``classifyobjects``' job on grids of N polygons
covering the same scene, each in a fresh process so its peak resident memory is its own. The accumulators are
[N, features] float64; everything else (the id raster, the windows, the copy) is streamed.

    nice -n 10 .venv/bin/python -m benchmarks.objects_memory --size 512 --polygons 1000 10000 100000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EPSG = 32633


def write_scene(folder: Path, size: int, seed: int = 0):
    from osgeo import gdal, osr

    rng = np.random.default_rng(seed)
    fields = 8
    truth = ((np.arange(size)[:, None] * fields // size) + (np.arange(size)[None, :] * fields // size)) % 3 + 1
    spectra = np.array([[0.08, 0.07, 0.05, 0.03, 0.02, 0.01], [0.04, 0.08, 0.05, 0.20, 0.35, 0.18],
                        [0.12, 0.14, 0.16, 0.20, 0.24, 0.28]], np.float32)
    hsi = spectra[truth - 1].transpose(2, 0, 1) + rng.normal(0, 0.01, (6, size, size)).astype(np.float32)
    path = folder / "scene.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 6, gdal.GDT_Float32, ["TILED=YES"])
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    for b, w in enumerate((460, 550, 640, 710, 840, 1610)):
        band = ds.GetRasterBand(b + 1)
        band.SetMetadataItem("wavelength", str(w))
        band.SetMetadataItem("wavelength_units", "Nanometers")
        band.WriteArray(hsi[b])
    ds = None
    return str(path), truth


def write_grid(path: Path, size: int, n: int, truth: np.ndarray, label_every: int = 0) -> int:
    """About ``n`` square cells covering the scene; with ``label_every`` each k-th cell gets the truth's majority."""
    from osgeo import ogr, osr

    k = max(1, int(round(math.sqrt(n))))
    edges = np.linspace(0, size, k + 1)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer(path.stem, srs=srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("landcover", ogr.OFTInteger))
    layer.StartTransaction()
    count = 0
    for i in range(k):
        for j in range(k):
            r0, r1, c0, c1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
            f = ogr.Feature(layer.GetLayerDefn())
            if label_every and count % label_every == 0:
                cell = truth[int(r0):max(int(r1), int(r0) + 1), int(c0):max(int(c1), int(c0) + 1)]
                f.SetField("landcover", int(np.bincount(cell.ravel()).argmax()))
            x0, x1 = 500000.0 + c0 * 10, 500000.0 + c1 * 10
            y0, y1 = 5800000.0 - r0 * 10, 5800000.0 - r1 * 10
            f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"))
            layer.CreateFeature(f)
            count += 1
    layer.CommitTransaction()
    ds = None
    return count


def _settings():
    from engine.settings import PipelineSettings

    s = PipelineSettings()
    s.backbone.source = "untrained"
    s.device = "cpu"
    s.head.trees = 100
    return s


def child(model: str, scene: str, grid: str, out: str) -> None:
    from engine.jobs.objects import PolygonInput, classify_objects

    t0 = time.perf_counter()
    result = classify_objects(model, scene, None, PolygonInput(grid, Path(grid).stem), out, device="cpu")
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "null": result.null_objects}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--polygons", type=int, nargs="+", default=[1000, 100000])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    from engine.jobs.objects import ObjectTrainRequest, PolygonInput, train_objects

    folder = Path(tempfile.mkdtemp(prefix="difflc-objmem-"))
    scene, truth = write_scene(folder, args.size)
    train_grid = folder / "train.gpkg"
    write_grid(train_grid, args.size, 1000, truth, label_every=10)
    model = str(folder / "model.difflc")
    t0 = time.perf_counter()
    train_objects(ObjectTrainRequest(scene, None, PolygonInput(str(train_grid), "train", "landcover"), _settings(),
                                     model_path=model))
    print(f"trained in {time.perf_counter() - t0:.1f} s on a {args.size}x{args.size} scene")
    rows = []
    for n in args.polygons:
        grid = folder / f"grid_{n}.gpkg"
        count = write_grid(grid, args.size, n, truth)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.objects_memory", "--child", model, scene, str(grid),
                               str(folder / f"out_{n}.gpkg")], capture_output=True, text=True, env=env,
                              cwd=str(Path(__file__).resolve().parents[1]))
        if proc.returncode:
            print(proc.stderr[-2000:])
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((count, r))
        print(f"{count:>8,} polygons: {r['seconds']:.1f} s ({1e3 * r['seconds'] / count:.3f} ms/polygon), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['null']} NULL")
    base = rows[0][1]["peak_rss_mb"]
    for count, r in rows[1:]:
        print(f"peak RSS {count:,} / {rows[0][0]:,} polygons: {r['peak_rss_mb'] / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Draw sparse training points from a dense label raster (stratified per class) into a GeoPackage.

Example (the flood chip, 0.5 % of labelled pixels):
    scripts/make_demo_points.py --labels ../shared/data/sen1floods11_spain_7370579/Spain_7370579_LabelHand.tif \
        --fraction 0.005 --seed 0 --ignore -1 --names 0=not-water,1=water --out points.gpkg
Points sit at pixel centres in the raster's CRS, with integer field ``class_id`` and text ``class_name``.
Every labelled pixel that is not a point is the evaluation set (the accuracy step reads this file).
"""
from __future__ import annotations

import argparse
import re
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from osgeo import gdal, ogr  # noqa: E402

from engine.data.labels import stratified_sample  # noqa: E402

gdal.UseExceptions()
ogr.UseExceptions()


def parse_names(text):
    """'0=not water #d8c48a,1=water #1f78b4' → ({0: 'not water', 1: 'water'}, {0: '#d8c48a', 1: '#1f78b4'})."""
    names, colors = {}, {}
    for item in (t for t in text.split(",") if t.strip()):
        key, _, rest = item.partition("=")
        m = re.fullmatch(r"\s*(.*?)\s*(#[0-9a-fA-F]{6})?\s*", rest)
        names[int(key)] = m.group(1)
        if m.group(2):
            colors[int(key)] = m.group(2)
    return names, colors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, help="label raster (one band of integer classes)")
    ap.add_argument("--fraction", type=float, default=0.005, help="share of each class's pixels (min 2 each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ignore", type=int, action="append", default=None,
                    help="label value(s) that are not classes (repeatable; default: 0 and -1; the band nodata is always ignored)")
    ap.add_argument("--names", default="", help="class names and optional colours, e.g. '0=not water #d8c48a,1=water #1f78b4'")
    ap.add_argument("--out", required=True, help="output GeoPackage")
    args = ap.parse_args(argv)

    ds = gdal.Open(args.labels)
    band = ds.GetRasterBand(1)
    labels = band.ReadAsArray()
    ignore = list(args.ignore) if args.ignore is not None else [0, -1]
    nodata = band.GetNoDataValue()
    if nodata is not None:
        ignore.append(int(nodata))
    rows, cols, values = stratified_sample(labels, args.fraction, args.seed, ignore_values=ignore)
    names, colors = parse_names(args.names)
    gt = ds.GetGeoTransform()
    xs = gt[0] + (cols + 0.5) * gt[1] + (rows + 0.5) * gt[2]
    ys = gt[3] + (cols + 0.5) * gt[4] + (rows + 0.5) * gt[5]

    if os.path.exists(args.out):
        ogr.GetDriverByName("GPKG").DeleteDataSource(args.out)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(args.out)
    srs = ds.GetSpatialRef()
    layer = out.CreateLayer("points", srs=srs, geom_type=ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    if colors:
        layer.CreateField(ogr.FieldDefn("class_color", ogr.OFTString))
    layer.StartTransaction()
    for x, y, v in zip(xs, ys, values):
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField("class_id", int(v))
        feat.SetField("class_name", names.get(int(v), f"class {int(v)}"))
        if int(v) in colors:
            feat.SetField("class_color", colors[int(v)])
        pt = ogr.Geometry(ogr.wkbPoint)
        pt.AddPoint_2D(float(x), float(y))
        feat.SetGeometry(pt)
        layer.CreateFeature(feat)
    layer.CommitTransaction()
    out = None
    uniq, counts = np.unique(values, return_counts=True)
    print(f"{len(values)} points written to {args.out}")
    for u, c in zip(uniq, counts):
        print(f"  class {int(u)} ({names.get(int(u), f'class {int(u)}')}): {int(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

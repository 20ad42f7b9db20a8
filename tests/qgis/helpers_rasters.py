"""Synthetic data builders for the Processing-algorithm tests: small rasters and label layers.

A scene is a projected (EPSG:32633, 10 m) square with two spectrally and radiometrically separable classes
(a disk of "Forest" in "Water"), a 6-band HSI carrying GDAL band metadata ``wavelength``/``wavelength_units``
and a 2-band dual-pol SAR in dB. Tiny on purpose: every pipeline run in the tests must take seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

EPSG = 32633
ORIGIN = (500000.0, 5800000.0)
PIXEL = 10.0
WAVELENGTHS_NM = (460.0, 550.0, 640.0, 710.0, 840.0, 1610.0)
HSI_NODATA = -9999.0
SAR_NODATA = -99.0
# reflectance spectra of the two classes at WAVELENGTHS_NM (1 = water, 2 = forest)
SPECTRA = {1: (0.08, 0.07, 0.05, 0.03, 0.02, 0.01), 2: (0.04, 0.08, 0.05, 0.20, 0.35, 0.18)}
SAR_DB = {1: (-21.0, -27.0), 2: (-8.0, -14.0)}  # (VV, VH)
CLASS_STYLE = {1: ("Water", "#1f78b4"), 2: ("Forest", "#33a02c")}


@dataclass
class Scene:
    hsi: str
    sar: str
    truth: np.ndarray  # [H, W] class values 1/2
    geotransform: Tuple[float, ...]
    epsg: int = EPSG

    @property
    def shape(self) -> Tuple[int, int]:
        return self.truth.shape

    def pixel_centre(self, row, col):
        gt = self.geotransform
        return gt[0] + (np.asarray(col) + 0.5) * gt[1], gt[3] + (np.asarray(row) + 0.5) * gt[5]


def write_raster(path, data: np.ndarray, geotransform, epsg: Optional[int] = EPSG, nodata: Optional[float] = None,
                 wavelengths_nm: Optional[Sequence[float]] = None, descriptions: Optional[Sequence[str]] = None,
                 dtype=None) -> str:
    """A GeoTIFF of ``data`` [bands, rows, cols] (or [rows, cols]) with the given grid and band metadata."""
    from osgeo import gdal, gdal_array, osr

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    gdt = dtype if dtype is not None else gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], gdt)
    ds.SetGeoTransform(tuple(geotransform))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for b in range(data.shape[0]):
        band = ds.GetRasterBand(b + 1)
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        if wavelengths_nm is not None:
            band.SetMetadataItem("wavelength", f"{wavelengths_nm[b]:g}")
            band.SetMetadataItem("wavelength_units", "Nanometers")
        if descriptions is not None:
            band.SetDescription(descriptions[b])
        band.WriteArray(data[b])
    ds.FlushCache()
    ds = None
    return str(path)


def disk_truth(size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    centre, radius = size * 0.45, size * 0.3
    return np.where((yy - centre) ** 2 + (xx - size * 0.55) ** 2 < radius ** 2, 2, 1).astype(np.int64)


def synthetic_scene(folder, size: int = 96, bands: int = 6, seed: int = 0, hole: Optional[Tuple[slice, slice]] = None,
                    name: str = "scene", sar_hole: Optional[Tuple[slice, slice]] = None) -> Scene:
    """HSI (Float32 reflectance, nodata -9999, wavelengths) + SAR (VV/VH dB) of a two-class disk scene.

    ``hole``/``sar_hole``: a (rows, cols) slice pair set to nodata in every HSI / SAR band.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    truth = disk_truth(size)
    gt = (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL)
    waves = WAVELENGTHS_NM[:bands] if bands <= len(WAVELENGTHS_NM) else np.linspace(450, 2400, bands)
    spectra = {c: np.interp(waves, WAVELENGTHS_NM, s) for c, s in SPECTRA.items()}
    hsi = np.empty((bands, size, size), np.float32)
    for c, s in spectra.items():
        hsi[:, truth == c] = np.asarray(s, np.float32)[:, None]
    hsi += rng.normal(scale=0.01, size=hsi.shape).astype(np.float32)
    if hole is not None:
        hsi[:, hole[0], hole[1]] = HSI_NODATA
    sar = np.empty((2, size, size), np.float32)
    for c, s in SAR_DB.items():
        sar[:, truth == c] = np.asarray(s, np.float32)[:, None]
    sar += rng.normal(scale=1.0, size=sar.shape).astype(np.float32)
    if sar_hole is not None:
        sar[:, sar_hole[0], sar_hole[1]] = SAR_NODATA
    hsi_path = write_raster(folder / f"{name}_hsi.tif", hsi, gt, nodata=HSI_NODATA, wavelengths_nm=waves)
    sar_path = write_raster(folder / f"{name}_sar.tif", sar, gt, descriptions=["VV", "VH"],
                            nodata=SAR_NODATA if sar_hole is not None else None)
    return Scene(hsi_path, sar_path, truth, gt)


def sample_pixels(truth: np.ndarray, per_class: int, seed: int = 0, margin: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """``per_class`` random pixels of every class, at least ``margin`` pixels inside its area (rows, cols)."""
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for c in np.unique(truth):
        core = binary_erosion(truth == c, iterations=margin)
        idx = rng.choice(np.flatnonzero(core), per_class, replace=False)
        r, k = np.unravel_index(idx, truth.shape)
        rows.append(r)
        cols.append(k)
    return np.concatenate(rows), np.concatenate(cols)


def write_points(path, xs: Iterable[float], ys: Iterable[float], values: Sequence, epsg: int = EPSG,
                 field: str = "class_id", text: bool = False, extra: Optional[Dict[str, Sequence]] = None) -> str:
    """A GeoPackage point layer (OGR, no QGIS needed) with one class field (integer or text)."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer(Path(path).stem, srs=srs, geom_type=ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString if text else ogr.OFTInteger))
    for name in (extra or {}):
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    for i, (x, y, v) in enumerate(zip(xs, ys, values)):
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField(field, str(v) if text else int(v))
        for name, vals in (extra or {}).items():
            feat.SetField(name, str(vals[i]))
        feat.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x!r} {y!r})"))
        layer.CreateFeature(feat)
    ds = None
    return str(path)


def scene_points(scene: Scene, path, per_class: int = 8, seed: int = 0, text_names: Optional[Dict[int, str]] = None,
                 field: str = "class_id") -> Tuple[str, np.ndarray, np.ndarray]:
    """Training points on ``scene`` (pixel centres), integer values or the texts of ``text_names``."""
    rows, cols = sample_pixels(scene.truth, per_class, seed)
    xs, ys = scene.pixel_centre(rows, cols)
    values = scene.truth[rows, cols]
    if text_names is not None:
        values = [text_names[int(v)] for v in values]
    return write_points(path, xs, ys, values, scene.epsg, field=field, text=text_names is not None), rows, cols


def styled_layer(path, field: str = "class_id", styles: Optional[Dict[int, Tuple[str, str]]] = None, name="labels"):
    """The point layer opened in QGIS with a categorized renderer on ``field`` (names/colours per value)."""
    from qgis.core import (QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol, QgsVectorLayer,
                           QgsWkbTypes)
    from qgis.PyQt.QtGui import QColor

    layer = QgsVectorLayer(str(path), name, "ogr")
    assert layer.isValid(), path
    categories: List = []
    for value, (label, colour) in (styles or CLASS_STYLE).items():
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PointGeometry)
        symbol.setColor(QColor(colour))
        categories.append(QgsRendererCategory(value, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    return layer


def rectangle_layer(path, scene_or_geotransform, rows, cols, epsg: int = EPSG) -> str:
    """A GeoPackage with one rectangle covering pixel rows[0]..rows[1]-1, cols[0]..cols[1]-1 of a scene (or of a
    geotransform)."""
    from osgeo import ogr, osr

    gt = getattr(scene_or_geotransform, "geotransform", scene_or_geotransform)
    x0, x1 = gt[0] + cols[0] * gt[1], gt[0] + cols[1] * gt[1]
    y0, y1 = gt[3] + rows[0] * gt[5], gt[3] + rows[1] * gt[5]
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("area", srs=srs, geom_type=ogr.wkbPolygon)
    feat = ogr.Feature(layer.GetLayerDefn())
    feat.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"))
    layer.CreateFeature(feat)
    ds = None
    return str(path)


def read_array(path) -> Tuple[np.ndarray, dict]:
    """All bands of a raster and a few facts about its first band."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    ct = band.GetColorTable()
    facts = {"dtype": gdal.GetDataTypeName(band.DataType), "nodata": band.GetNoDataValue(),
             "bands": ds.RasterCount, "categories": band.GetCategoryNames(), "size": (ds.RasterYSize, ds.RasterXSize),
             "colors": {i: ct.GetColorEntry(i) for i in range(ct.GetCount())} if ct is not None else None,
             "geotransform": ds.GetGeoTransform(), "wkt": ds.GetProjection()}
    return ds.ReadAsArray(), facts


# ------------------------------------------------------------------------------------------------ real data

def shared_data() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


CHIP = "sen1floods11_spain_7370579"


def real_chip_crop(folder, row: int = 128, col: int = 256, size: int = 128) -> Dict[str, str]:
    """A ``size`` crop of the Sen1Floods11 chip (S2 13 bands, S1 VV/VH dB, labels -1/0/1) copied into ``folder``."""
    from osgeo import gdal

    folder = Path(folder)
    src = shared_data() / CHIP
    out = {}
    for key, name in (("s2", "S2Hand"), ("s1", "S1Hand"), ("labels", "LabelHand")):
        path = folder / f"chip_{name}.tif"
        ds = gdal.Translate(str(path), str(src / f"Spain_7370579_{name}.tif"), srcWin=[col, row, size, size])
        ds = None
        out[key] = str(path)
    return out


def label_points_from_raster(label_path, out_path, per_class: int, seed: int = 0, ignore=(-1,),
                             field: str = "class_id") -> Tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Random training points (pixel centres, the raster's CRS) drawn per class from a label raster.

    Returns (layer path, label array, rows, cols).
    """
    from osgeo import gdal, osr

    ds = gdal.Open(str(label_path))
    labels = ds.GetRasterBand(1).ReadAsArray()
    gt = ds.GetGeoTransform()
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    srs.AutoIdentifyEPSG()
    epsg = int(srs.GetAuthorityCode(None))
    ds = None
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for value in sorted(set(np.unique(labels).tolist()) - set(ignore)):
        idx = rng.choice(np.flatnonzero(labels.ravel() == value), per_class, replace=False)
        r, c = np.unravel_index(idx, labels.shape)
        rows.append(r)
        cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    xs = gt[0] + (cols + 0.5) * gt[1]
    ys = gt[3] + (rows + 0.5) * gt[5]
    path = write_points(out_path, xs, ys, labels[rows, cols], epsg=epsg, field=field)
    return path, labels, rows, cols


def needs_real_data(test):
    """Skip marker for tests that read ../shared/data (present on the development machine; see its README)."""
    import pytest

    return pytest.mark.real_data(
        pytest.mark.skipif(not (shared_data() / CHIP).is_dir(), reason="shared real data not present")(test))

"""GDAL raster I/O: metadata, windowed float reads, on-the-fly warp onto the HSI grid, classified output.

Readers return float32 [bands, rows, cols] with nodata → NaN and band scale/offset applied, so the rest of
the engine never sees a raw integer or a nodata sentinel. The classified writer streams window by window into
a temporary file beside the target and moves it into place only on success, so a failed or cancelled run
never leaves a half-written map (or destroys the previous one).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from .. import files
from .gdal_scope import scope_module
from ..errors import (NO_FILE, NO_PERMISSION, NO_SPACE, CorruptFileError, OutputWriteError, UserInputError, io_cause,
                      size_text)
from .readers import sample_valid_pixels  # noqa: F401  (re-exported: the streaming sampler lives there)


_UNIT_NM = {"nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1000.0, "micrometer": 1000.0,
            "micrometres": 1000.0, "microns": 1000.0, "micron": 1000.0, "um": 1000.0, "µm": 1000.0,
            "μm": 1000.0, "millimeters": 1e6, "mm": 1e6}
_DESC_WAVE = re.compile(r"\(\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*([A-Za-zµμ]+)\s*\)")


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    geotransform: Tuple[float, ...]
    crs_wkt: str
    epsg: Optional[int]
    nodata: List[Optional[float]]
    scale: List[float]
    offset: List[float]
    wavelengths_nm: Optional[List[float]]
    fwhm_nm: Optional[List[float]]
    bad_bands: List[int]  # 0-based
    descriptions: List[str]
    units: List[str]
    dtype: str

    @property
    def pixel_size(self) -> Tuple[float, float]:
        return abs(self.geotransform[1]), abs(self.geotransform[5])

    def extent(self) -> Tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the raster's CRS."""
        gt = self.geotransform
        xs = [gt[0] + gt[1] * c + gt[2] * r for c in (0, self.width) for r in (0, self.height)]
        ys = [gt[3] + gt[4] * c + gt[5] * r for c in (0, self.width) for r in (0, self.height)]
        return min(xs), min(ys), max(xs), max(ys)

    def crs_label(self) -> str:
        return f"EPSG:{self.epsg}" if self.epsg else ("a custom CRS" if self.crs_wkt else "no CRS")

    def meta(self):
        """What :func:`engine.data.representations.fit_representations` reads (``BandMeta``)."""
        from .representations import BandMeta

        return BandMeta(self.band_count, self.wavelengths_nm, tuple(self.bad_bands), tuple(self.descriptions),
                        tuple(self.units), self.fwhm_nm)


def _to_nm(value: float, unit: Optional[str]) -> float:
    if unit:
        factor = _UNIT_NM.get(unit.strip().lower())
        if factor is not None:
            return value * factor
    return value * 1000.0 if value < 30.0 else value  # no/unknown unit: µm if it looks like µm


def _envi_list(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    return [t.strip() for t in text.strip().strip("{}").split(",") if t.strip()]


def _band_metadata(band) -> dict:
    return {k.lower(): v for k, v in (band.GetMetadata() or {}).items()}


_GDAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")  # NETCDF:"f.nc":var, HDF5:..., GPKG:f.gpkg:table (not C:\\)


def is_gdal_name(path: str) -> bool:
    """A raster GDAL opens by a name that is not a plain file path: a subdataset (``NETCDF:"f.nc":Band1``) or a
    virtual file system path (``/vsizip/...``). Path checks (exists, is a folder, output collisions) skip these."""
    text = str(path)
    return text.startswith("/vsi") or bool(_GDAL_NAME.match(text))


def _subdataset_problem(ds, path: str) -> Optional[str]:
    """Why a file with subdatasets (netCDF, HDF, a GeoPackage with several rasters) cannot be given as it is."""
    subs = ds.GetSubDatasets() or []
    if not subs:
        return None
    names = [name for name, _ in subs]
    shown = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
    return (f"{path} holds {len(names)} subdataset(s) and no raster of its own: give one of them as the raster, "
            f"e.g. {names[0]} (subdatasets: {shown})")


def _missing_vrt_sources(ds, path: str) -> List[str]:
    """Source files a VRT refers to that are not there (GDAL's file list silently leaves them out)."""
    if ds.GetDriver().ShortName != "VRT" or is_gdal_name(path):
        return []
    try:
        root = ET.fromstring((ds.GetMetadata("xml:VRT") or [""])[0])
    except ET.ParseError:
        return []
    folder = os.path.dirname(os.path.abspath(str(path)))
    missing = []
    for node in root.iter("SourceFilename"):
        name = (node.text or "").strip()
        if not name or is_gdal_name(name):
            continue
        full = os.path.join(folder, name) if node.get("relativeToVRT") == "1" else name
        if not os.path.exists(full) and full not in missing:
            missing.append(full)
    return missing


def raster_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be used as an input raster (folder, missing, not GDAL's, only subdatasets, a VRT whose
    sources are gone), or None: the check before any work, and what :func:`read_info` raises."""
    _, problem = _open_raster(path)
    return str(problem) if problem is not None else None


def _open_raster(path: str):
    """(the opened dataset, None), or (None, why it cannot be used)."""
    text = str(path)
    plain = not is_gdal_name(text)
    if plain and os.path.isdir(text):
        try:
            opened = gdal.OpenEx(text, gdal.OF_RASTER) is not None  # a few formats are folders (Arc/Info grid)
        except RuntimeError:
            opened = False
        if not opened:
            return None, UserInputError(f"{text} is a folder, not a raster file: choose the raster file inside it")
    if plain and not os.path.exists(text):
        return None, UserInputError(f"the raster {text} does not exist: check the path")
    try:
        ds = gdal.Open(text)
    except RuntimeError as exc:
        if plain:
            return None, UserInputError(f"{text} exists but is not a raster GDAL can read ({exc}): choose a GeoTIFF, "
                                        "ENVI or another GDAL raster, or export it again")
        return None, UserInputError(f"GDAL cannot open the raster {text} ({exc}): check the name (e.g. "
                                    'NETCDF:"file.nc":variable)')
    if ds is None:
        return None, UserInputError(f"GDAL cannot open the raster {text}: check the path")
    if ds.RasterCount == 0:
        return None, UserInputError(_subdataset_problem(ds, text) or
                                    f"{text} has no raster bands: choose an image file")
    missing = _missing_vrt_sources(ds, text)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return None, CorruptFileError(f"the VRT {text} refers to the source file {missing[0]}{more}, which does not "
                                      "exist (moved or deleted): put it back, or build the VRT again from the files "
                                      "where they are now")
    return ds, None


def read_info(path: str) -> RasterInfo:
    """Metadata of a raster; a clear ``UserInputError`` (:func:`raster_problem`) when it cannot be used."""
    ds, problem = _open_raster(path)
    if problem is not None:
        raise problem
    n = ds.RasterCount
    envi = {k.lower(): v for k, v in (ds.GetMetadata("ENVI") or {}).items()}
    envi_waves = _envi_list(envi.get("wavelength"))
    envi_fwhm = _envi_list(envi.get("fwhm"))
    envi_bbl = _envi_list(envi.get("bbl"))
    envi_unit = envi.get("wavelength_units")
    waves, fwhm, bad, desc, nodata, scale, offset, units = [], [], [], [], [], [], [], []
    for i in range(1, n + 1):
        band = ds.GetRasterBand(i)
        md = _band_metadata(band)
        imagery = {k.lower(): v for k, v in (band.GetMetadata("IMAGERY") or {}).items()}
        d = band.GetDescription() or ""
        desc.append(d)
        nodata.append(band.GetNoDataValue())
        scale.append(band.GetScale() if band.GetScale() not in (None, 0) else 1.0)
        offset.append(band.GetOffset() or 0.0)
        units.append(band.GetUnitType() or md.get("units", "") or "")
        unit = md.get("wavelength_units") or md.get("wavelength_unit") or envi_unit
        w = f = None
        if "wavelength" in md:
            w = _to_nm(float(md["wavelength"]), unit)
        elif envi_waves and len(envi_waves) == n:
            w = _to_nm(float(envi_waves[i - 1]), envi_unit)
        elif "central_wavelength_um" in imagery:
            w = float(imagery["central_wavelength_um"]) * 1000.0
        else:
            m = _DESC_WAVE.search(d)
            if m and m.group(2).lower() in _UNIT_NM:
                w = _to_nm(float(m.group(1)), m.group(2))
        if "fwhm" in md:
            f = _to_nm(float(md["fwhm"]), unit)
        elif envi_fwhm and len(envi_fwhm) == n:
            f = _to_nm(float(envi_fwhm[i - 1]), envi_unit)
        elif "fwhm_um" in imagery:
            f = float(imagery["fwhm_um"]) * 1000.0
        waves.append(w)
        fwhm.append(f)
        bbl = md.get("bbl")
        if bbl is None and envi_bbl and len(envi_bbl) == n:
            bbl = envi_bbl[i - 1]
        if bbl is not None and float(bbl) == 0:
            bad.append(i - 1)
    srs = ds.GetSpatialRef()
    epsg = None
    if srs is not None:
        try:
            srs.AutoIdentifyEPSG()
        except RuntimeError:
            pass
        code = srs.GetAuthorityCode(None)
        epsg = int(code) if code and code.isdigit() else None
    return RasterInfo(
        path=str(path), width=ds.RasterXSize, height=ds.RasterYSize, band_count=n,
        geotransform=tuple(ds.GetGeoTransform()), crs_wkt=srs.ExportToWkt() if srs is not None else "",
        epsg=epsg, nodata=nodata, scale=scale, offset=offset,
        wavelengths_nm=waves if all(w is not None for w in waves) else None,
        fwhm_nm=fwhm if all(f is not None for f in fwhm) else None, bad_bands=bad, descriptions=desc,
        units=units, dtype=gdal.GetDataTypeName(ds.GetRasterBand(1).DataType))


# -------------------------------------------------------------------------------------------------------
# reading

def _same_crs(a: RasterInfo, b: RasterInfo) -> bool:
    if not a.crs_wkt or not b.crs_wkt:
        return a.crs_wkt == b.crs_wkt
    sa, sb = osr.SpatialReference(wkt=a.crs_wkt), osr.SpatialReference(wkt=b.crs_wkt)
    return bool(sa.IsSame(sb))


def same_grid(a: RasterInfo, b: RasterInfo, tol: float = 1e-6) -> bool:
    if (a.width, a.height) != (b.width, b.height) or not _same_crs(a, b):
        return False
    scale = max(abs(a.geotransform[1]), abs(a.geotransform[5]), 1e-12)
    return all(abs(x - y) <= tol * scale for x, y in zip(a.geotransform, b.geotransform))


def _extent_in(info: RasterInfo, target_wkt: str) -> Tuple[float, float, float, float]:
    src = osr.SpatialReference(wkt=info.crs_wkt)
    dst = osr.SpatialReference(wkt=target_wkt)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    xmin, ymin, xmax, ymax = info.extent()
    return tuple(ct.TransformBounds(xmin, ymin, xmax, ymax, 21))


def _fmt_extent(e) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in e) + ")"


_FLUSH_BYTES = 64 * 2**20  # drop a reader's cached GDAL blocks after about this much data read


class RasterReader:
    """Windowed float32 reads; with ``ref`` on another grid, reads through a bilinear warped VRT onto it."""

    def __init__(self, path: str, ref: Optional[RasterInfo] = None, log: Optional[Callable[[str], None]] = None,
                 name: str = "SAR", ref_name: str = "HSI", resample: str = "bilinear", complex_amplitude: bool = False):
        """``complex_amplitude``: a complex band (a SAR SLC) is read as its amplitude |z| (logged); without it a
        complex band is refused, naming the band (its amplitude means nothing for an optical image or a map)."""
        self.info = read_info(path)
        self._src = _real_valued(gdal.Open(str(path)), str(path), name, complex_amplitude, log)
        self.name, self._log, self._inf_bands = name, log, set()
        self.warped = False
        ds = self._src
        if ref is not None and not same_grid(self.info, ref):
            if not self.info.crs_wkt or not ref.crs_wkt:
                raise ValueError(f"the {name} raster {path} and the {ref_name} raster need a CRS each to be "
                                 "aligned: assign one (Raster ▸ Projections ▸ Assign Projection)")
            ext = _extent_in(self.info, ref.crs_wkt)
            rx = ref.extent()
            if ext[0] >= rx[2] or ext[2] <= rx[0] or ext[1] >= rx[3] or ext[3] <= rx[1]:
                raise ValueError(
                    f"the {name} raster {os.path.basename(str(path))} ({self.info.crs_label()}, extent "
                    f"{_fmt_extent(self.info.extent())}, i.e. {_fmt_extent(ext)} in the {ref_name} CRS) does not "
                    f"overlap the {ref_name} raster {os.path.basename(ref.path)} ({ref.crs_label()}, extent "
                    f"{_fmt_extent(rx)}): choose layers that cover the same area")
            src_nodata = [v for v in self.info.nodata if v is not None]
            ds = gdal.Warp("", self._src, format="VRT", dstSRS=ref.crs_wkt,
                           outputBounds=rx, width=ref.width, height=ref.height, resampleAlg=resample,
                           outputType=gdal.GDT_Float32, dstNodata=float("nan"),
                           srcNodata=src_nodata[0] if src_nodata else None, multithread=False)
            # exact ref geotransform (outputBounds can differ in the last bit)
            ds.SetGeoTransform(ref.geotransform)
            self.warped = True
            if log is not None:
                sx, sy = self.info.pixel_size
                rx_, ry_ = ref.pixel_size
                log(f"{name} resampled onto the {ref_name} grid ({self.info.crs_label()} → {ref.crs_label()}, "
                    f"{sx:.6g}×{sy:.6g} → {rx_:.6g}×{ry_:.6g} pixels, {self.info.width}×{self.info.height} → "
                    f"{ref.width}×{ref.height}, {resample})")
        self._ds = ds
        self._bytes_since_flush = 0
        self.width, self.height = ds.RasterXSize, ds.RasterYSize
        self.band_count = ds.RasterCount
        self._scale = np.asarray(self.info.scale, dtype=np.float32)[:, None, None]
        self._offset = np.asarray(self.info.offset, dtype=np.float32)[:, None, None]

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        if row < 0 or col < 0 or row + rows > self.height or col + cols > self.width:
            raise ValueError(f"window ({row}, {col}, {rows}, {cols}) leaves the {self.width}x{self.height} raster")
        try:
            raw = self._ds.ReadAsArray(int(col), int(row), int(cols), int(rows))
        except RuntimeError as exc:
            detail = str(exc).replace(f"{self.info.path}, ", "").rstrip(". ")
            cause = io_cause(exc)
            if cause == NO_FILE:
                raise UserInputError(
                    f"the {self.name} raster {self.info.path} (or a file it refers to) was deleted or moved while the "
                    f"run was reading it ({detail}): put it back and run again") from None
            if cause == NO_PERMISSION:
                raise UserInputError(
                    f"the {self.name} raster {self.info.path} can no longer be read ({detail}): give read permission "
                    "back (or copy it somewhere readable) and run again") from None
            raise CorruptFileError(
                f"the {self.name} raster {self.info.path} cannot be read (rows {row + 1}-{row + rows}: {detail}); "
                "the file is damaged or truncated: copy or export it again") from None
        raw = raw.reshape(self.band_count, rows, cols)
        self._bytes_since_flush += raw.nbytes
        if self._bytes_since_flush > _FLUSH_BYTES:
            # GDAL keeps every block read until GDAL_CACHEMAX (often > 1 GB); a streamed pass never re-reads
            # old rows, so drop this dataset's blocks now and then to keep memory flat with scene size
            for ds in {id(self._ds): self._ds, id(self._src): self._src}.values():
                ds.FlushCache()
            self._bytes_since_flush = 0
        out = raw.astype(np.float32)
        if not self.warped:
            for b, nd in enumerate(self.info.nodata):
                if nd is not None:
                    out[b][np.isnan(out[b]) if math.isnan(nd) else raw[b] == nd] = np.nan
        if np.any(self._scale != 1) or np.any(self._offset != 0):
            out = out * self._scale + self._offset
        infinite = np.isinf(out)
        if infinite.any():  # ±Inf is no measurement: nodata, like NaN (PCA and stretches need finite values)
            bands = [b for b in np.flatnonzero(infinite.any(axis=(1, 2))).tolist() if b not in self._inf_bands]
            out[infinite] = np.nan
            if bands and self._log is not None:
                self._log(f"{self.name} band(s) {', '.join(str(b + 1) for b in bands)} of "
                          f"{os.path.basename(self.info.path)} hold ±Inf values: treated as nodata")
            self._inf_bands.update(bands)
        return out


def _real_valued(ds, path: str, name: str, amplitude: bool, log: Optional[Callable[[str], None]]):
    """``ds`` itself, or for complex bands (CInt16/CFloat32, a SAR SLC) a VRT reading their amplitude |z| (GDAL's
    ``mod`` pixel function), so neither a read nor a warp silently keeps only the real part."""
    bands = [i for i in range(1, ds.RasterCount + 1) if gdal.DataTypeIsComplex(ds.GetRasterBand(i).DataType)]
    if not bands:
        return ds
    kind = gdal.GetDataTypeName(ds.GetRasterBand(bands[0]).DataType)
    listed = ", ".join(str(b) for b in bands)
    base = os.path.basename(path)
    if not amplitude:
        raise UserInputError(
            f"{name} band {bands[0]} of {base} is complex ({kind}): the {name} must hold real values; give a real "
            "image (a complex SAR image such as an SLC belongs in SAR, where its amplitude is used), or convert the "
            "band first (e.g. its amplitude with the Raster Calculator)")
    xml = (gdal.Translate("", ds, format="VRT").GetMetadata("xml:VRT") or [""])[0]

    def derived(match):
        band = int(match.group(2))
        if band not in bands:
            return match.group(0)
        return (f'<VRTRasterBand dataType="Float32" band="{band}" subClass="VRTDerivedRasterBand">'
                "<PixelFunctionType>mod</PixelFunctionType><SourceTransferType>CFloat64</SourceTransferType>")

    xml = re.sub(r'<VRTRasterBand dataType="(\w+)" band="(\d+)"[^>]*>', derived, xml)
    vrt = gdal.Open(xml)
    if log is not None:
        log(f"{name} band {listed} of {base} is complex ({kind}): its amplitude |z| is used" if len(bands) == 1 else
            f"{name} bands {listed} of {base} are complex ({kind}): their amplitude |z| is used")
    return vrt


class PolygonMask:
    """Polygons (WKB in the CRS of ``ref``) as a one-band reader on the grid of ``ref``: 1 where a pixel centre lies
    inside a polygon, NaN elsewhere. Burnt with GDAL one band of ``block_rows`` full-width rows at a time (the
    last band is kept), so memory does not grow with the scene."""

    def __init__(self, wkb_list: Sequence[bytes], ref: RasterInfo, block_rows: int = 256):
        from osgeo import ogr

        if not len(wkb_list):
            raise UserInputError("the mask layer has no polygon: draw the area to classify, or leave MASK empty")
        from .readers import rows_per_block

        self.ref, self.block_rows = ref, rows_per_block(ref.width, itemsize=1, max_rows=block_rows)  # Byte band
        self.height, self.width, self.band_count = ref.height, ref.width, 1
        self._srs = osr.SpatialReference(wkt=ref.crs_wkt) if ref.crs_wkt else None
        self._vds = ogr.GetDriverByName("Memory").CreateDataSource("")
        self._layer = self._vds.CreateLayer("mask", srs=self._srs, geom_type=ogr.wkbUnknown)
        for w in wkb_list:
            feat = ogr.Feature(self._layer.GetLayerDefn())
            feat.SetGeometry(ogr.CreateGeometryFromWkb(bytes(w)))
            self._layer.CreateFeature(feat)
        self._start, self._band = -1, None

    def _burn(self, start: int) -> np.ndarray:
        rows = min(self.block_rows, self.height - start)
        gt = self.ref.geotransform
        mem = gdal.GetDriverByName("MEM").Create("", self.width, rows, 1, gdal.GDT_Byte)
        mem.SetGeoTransform((gt[0] + start * gt[2], gt[1], gt[2], gt[3] + start * gt[5], gt[4], gt[5]))
        if self.ref.crs_wkt:
            mem.SetProjection(self.ref.crs_wkt)
        gdal.RasterizeLayer(mem, [1], self._layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray().astype(bool)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        out = np.full((1, rows, cols), np.nan, np.float32)
        r = row
        while r < row + rows:
            start = (r // self.block_rows) * self.block_rows
            if start != self._start:
                self._start, self._band = start, self._burn(start)
            r1 = min(row + rows, start + self.block_rows)
            inside = self._band[r - start:r1 - start, col:col + cols]
            out[0, r - row:r1 - row][inside] = 1.0
            r = r1
        return out


def mask_reader(ref: RasterInfo, raster: Optional[str] = None, polygons_wkb: Sequence[bytes] = (),
                log: Optional[Callable[[str], None]] = None):
    """The MASK on the grid of ``ref`` as a one-band reader (nonzero = inside): a raster (its first band, warped
    by nearest neighbour when on another grid) or polygons (:class:`PolygonMask`)."""
    if raster:
        return _RasterMask(RasterReader(raster, ref=ref, log=log, name="mask", resample="near"))
    return PolygonMask(polygons_wkb, ref)


class _RasterMask:
    """First band of a mask raster as 1 (nonzero) / NaN (zero or nodata)."""

    def __init__(self, reader: RasterReader):
        self.reader, self.height, self.width, self.band_count = reader, reader.height, reader.width, 1

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        band = self.reader.read(row, col, rows, cols)[:1]
        return np.where(np.nan_to_num(band, nan=0.0) != 0, 1.0, np.nan).astype(np.float32)


def scan_bad_bands(reader, progress=None, block_rows: int = 256) -> List[int]:
    """0-based bands with no valid pixel anywhere (measured by streaming the raster in capped row blocks)."""
    from .readers import row_blocks

    seen = np.zeros(reader.band_count, dtype=bool)
    for row, rows in row_blocks(reader.height, reader.width, reader.band_count, max_rows=block_rows):
        block = reader.read(row, 0, rows, reader.width)
        seen |= ~np.isnan(block).all(axis=(1, 2))
        if progress is not None:
            progress.step((row + rows) / reader.height)
        if seen.all():
            break
    return [int(b) for b in np.flatnonzero(~seen)]




# -------------------------------------------------------------------------------------------------------
# classified output

def write_qml(path: str, classes, band: int = 1) -> None:
    """A QGIS paletted-renderer style (``<raster>.qml`` is applied automatically when the layer loads).

    It carries :data:`files.SIDECAR_MARKER`, so a later run may replace it but never a style the user made.
    """
    root = ET.Element("qgis", {"version": "3.22.0", "styleCategories": "AllStyleCategories"})
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {"type": "paletted", "band": str(band), "opacity": "1",
                                                      "alphaBand": "-1", "nodataColor": ""})
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(palette, "paletteEntry", {"value": str(int(c.value)), "color": c.color.lower(),
                                                "alpha": "255", "label": c.name})
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "huesaturation", {"saturation": "0", "grayscaleMode": "0", "colorizeOn": "0",
                                          "colorizeRed": "255", "colorizeGreen": "128", "colorizeBlue": "128",
                                          "colorizeStrength": "100", "invertColors": "0"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    tree = ET.ElementTree(root)
    ET.indent(tree)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
        fh.write(f"<!-- {files.SIDECAR_MARKER}: replaced by its next run; edit a copy to keep your own -->\n")
        tree.write(fh, encoding="unicode")


def _hex_rgb(color: str) -> Tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


_CREATE = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
WRITER_KEY = "DIFFLC_WRITER"  # dataset metadata (inside the TIFF) marking a raster this plugin wrote


_OWN_FIRST_BANDS = ("class", "confidence (winning class probability)", "red", "PC1", "Pauli R")


def written_by_plugin(path: str) -> bool:
    """The marker, or (outputs written before it existed) the first band description our writers give."""
    try:
        ds = gdal.Open(str(path))
        if ds is None:
            return False
        return bool(ds.GetMetadataItem(WRITER_KEY)) or ds.GetRasterBand(1).GetDescription() in _OWN_FIRST_BANDS
    except RuntimeError:
        return False


def raster_sidecar_problem(path: str) -> Optional[str]:
    """Why writing the GeoTIFF ``path`` would replace a ``.aux.xml`` the plugin did not write, else None.

    GDAL keeps category names (and QGIS statistics) in ``<path>.aux.xml``; the new map needs its own, so an
    existing one may only go when it belongs to an earlier output of this plugin.
    """
    aux = f"{path}.aux.xml"
    if not os.path.exists(aux) or (os.path.exists(path) and written_by_plugin(path)):
        return None
    return (f"{aux} exists and was not written by this plugin (GDAL would replace it with the new map's): "
            "move it away or choose another output name")


def _create_tiff(path: str, ref: "RasterInfo", bands: int, dtype):
    try:
        ds = gdal.GetDriverByName("GTiff").Create(path, ref.width, ref.height, bands, dtype, _CREATE)
    except RuntimeError as exc:
        files.discard(path)
        raise files.OutputPathError(f"cannot create {path}: {exc}") from None
    ds.SetGeoTransform(ref.geotransform)
    if ref.crs_wkt:
        ds.SetProjection(ref.crs_wkt)
    ds.SetMetadataItem(WRITER_KEY, "diffusion_landcover")
    return ds


def _need_text(ref: "RasterInfo", bands: int, dtype) -> Tuple[int, str]:
    """(bytes, how they add up) of one uncompressed output on the grid of ``ref``: the most its file needs."""
    per_pixel = gdal.GetDataTypeSize(dtype) // 8
    need = int(ref.width) * int(ref.height) * int(bands) * per_pixel
    return need, (f"{ref.width}×{ref.height} pixels × {bands} band(s) × {per_pixel} byte(s) "
                  f"({gdal.GetDataTypeName(dtype)}), before compression")


def _free_bytes(folder: str) -> float:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no such folder, or not POSIX
        return float("inf")
    return float(st.f_bavail) * st.f_frsize


def write_failure(exc: BaseException, path: str, ref: "RasterInfo", bands: int, dtype) -> UserInputError:
    """A GDAL write that failed half-way (GDAL's RuntimeError text), as the one line the user reads: disk full,
    folder made read-only or removed, naming the output, its folder and how much it needs."""
    folder = os.path.dirname(os.path.abspath(str(path))) or "."
    base = os.path.basename(str(path))
    parts = [part.strip().rstrip(".") for part in str(exc).split("; ") if part.strip()] or ["unknown error"]
    cause = io_cause(exc)
    detail = next((part for part in parts if cause and io_cause(part) == cause), parts[-1])
    need, how = _need_text(ref, bands, dtype)
    if not cause and _free_bytes(folder) < max(need, 1 << 20):  # GDAL often says only "Write error at scanline 0"
        cause = NO_SPACE
    if cause == NO_SPACE:
        return OutputWriteError(
            f"no space left on the disk of {folder} while writing {base}: it needs up to {size_text(need)} ({how}): "
            "free that much space there, or choose an output folder on another disk")
    if cause == NO_PERMISSION:
        return OutputWriteError(
            f"the folder {folder} stopped taking files while {base} was written ({detail}): make it writable again, "
            "or choose another output folder")
    if cause == NO_FILE:
        return OutputWriteError(
            f"the folder {folder} was removed or moved while {base} was written: choose an output folder that stays "
            "in place")
    return OutputWriteError(f"writing {base} in {folder} failed ({detail}): check that disk, or choose another "
                            "output folder")


def _recorder(record: list):
    """A GDAL error handler that keeps the failures' texts in ``record`` (and prints nothing)."""
    def handler(error_class, _number, message):
        if error_class >= gdal.CE_Failure:
            record.append(str(message))
    return handler


def _writing(path: str, ref: "RasterInfo", bands: int, dtype, write: Callable[[], None]) -> None:
    """``write()`` (GDAL writes or a flush of one output); a failure leaves as :func:`write_failure` (GDAL's own
    text, e.g. '_tiffWriteProc:No space left on device', does not name the file).

    A plain function, not a context manager: the failure is raised outside the handler, so it carries no
    ``__context__``; GDAL's error and its traceback (which holds the band, so the dataset) are gone and the dataset
    closes when the writer drops it."""
    failure, said = None, []
    gdal.PushErrorHandler(_recorder(said))  # every message: the exception carries only the last one ('IO error
    try:                                    # writing tag data'), the cause ('No space left on device') came before
        write()
    except RuntimeError as exc:
        failure = write_failure(RuntimeError("; ".join(dict.fromkeys(said + [str(exc)]))), path, ref, bands, dtype)
    finally:
        gdal.PopErrorHandler()
    if failure is not None:
        write = None  # noqa: F841 - the traceback keeps this frame: not the dataset ``write`` refers to
        raise failure


_UNRAISABLE_LOCK = threading.Lock()


@contextlib.contextmanager
def _closing_errors(record: list):
    """GDAL errors while a dataset is closed, recorded in ``record``, neither printed nor lost: GDAL writes its last
    blocks and the TIFF directory in the destructor, where an error can only reach Python's unraisable hook (stderr
    "Exception ignored in delete_Dataset"); warnings (a sidecar not saved) stay quiet too."""
    me = threading.get_ident()
    with _UNRAISABLE_LOCK:  # one swap at a time, so two runs closing files at once restore the hook in order
        previous = sys.unraisablehook

        def hook(unraisable):
            if threading.get_ident() == me:
                record.append(str(unraisable.exc_value))
            else:  # another thread's (another plugin's) report goes where it went before
                previous(unraisable)

        sys.unraisablehook = hook
        gdal.PushErrorHandler(_recorder(record))
        try:
            yield
        finally:
            gdal.PopErrorHandler()
            sys.unraisablehook = previous


def _close_outputs(datasets: list) -> Optional[UserInputError]:
    """Flush and close a list of (path, ref, bands, dtype, dataset) outputs (emptied: the list held the last
    references); the first write failure, or None. GDAL writes the last blocks and the TIFF directory only here,
    so a disk that fills at the end is caught here too."""
    failure = None
    for i in range(len(datasets)):
        path, ref, bands, dtype, ds = datasets[i]
        datasets[i] = None  # ds is now the dataset's last reference
        if ds is None:
            continue
        try:
            # a closure, not the bound ds.FlushCache: the failure's traceback keeps the call's arguments (the
            # gdal_scope wrapper's frame), and a bound method would keep the dataset open past the ``del`` below
            _writing(path, ref, bands, dtype, lambda: ds.FlushCache())
        except UserInputError as exc:
            failure = failure or exc
        closing: list = []
        with _closing_errors(closing):
            del ds  # GDAL closes the file
        if closing and failure is None:
            failure = write_failure(RuntimeError("; ".join(dict.fromkeys(closing))), path, ref, bands, dtype)
    return failure


class ClassifiedWriter:
    """Streams a classified GeoTIFF (+ optional Float32 confidence) into place on success only.

    Byte (UInt16 when a class value exceeds 254), tiled, DEFLATE, colour table, category names, ``.qml``
    (unless the user's own ``.qml`` is there: it is kept and ``log`` says so). Nodata is 0 unless 0 is itself
    a class value; then it is 255 (Byte) / 65535 (UInt16). Pixels the caller marks with a negative value are
    written as nodata. Confidence nodata is −1 (NaN is written as −1). ``probabilities_path``: a Float32 raster
    with one band per class (descriptions = class names), nodata −1 like the confidence.
    """

    def __init__(self, path: str, ref: RasterInfo, classes, confidence_path: Optional[str] = None,
                 finish: Optional[Callable[[str], None]] = None, log: Optional[Callable[[str], None]] = None,
                 probabilities_path: Optional[str] = None):
        self.path, self.ref, self.classes = str(path), ref, list(classes)
        self.probabilities_path = str(probabilities_path) if probabilities_path else None
        self._prob = self._tmp_prob = None
        self.finish = finish  # called with the complete, closed temporary map before it moves (e.g. the clean-up)
        self.confidence_path = str(confidence_path) if confidence_path else None
        self.log = log or (lambda message: None)
        values = [int(c.value) for c in self.classes]
        if not values:
            raise ValueError("no classes to write")
        if min(values) < 0:
            raise ValueError(f"class values must be 0 or positive, got {min(values)}")
        big = max(values) >= 255 or (0 in values and max(values) >= 254)
        self.dtype = gdal.GDT_UInt16 if big else gdal.GDT_Byte
        if max(values) > 65534:
            raise ValueError(f"class value {max(values)} is too large for a UInt16 map (max 65534)")
        self.nodata = 0 if 0 not in values else (65535 if big else 255)
        self._ds = self._conf = None
        self._tmp = self._tmp_conf = None

    def __enter__(self) -> "ClassifiedWriter":
        try:
            return self._open()
        except BaseException:  # __exit__ is not called when __enter__ fails: close, then remove, here
            self._close()
            files.discard(self._tmp, self._tmp_conf, self._tmp_prob)
            raise

    def _close(self) -> Optional[UserInputError]:
        """Drop the datasets (GDAL writes their data and ``.aux.xml`` now, not later beside a removed file); the
        first write failure (:func:`write_failure`: disk full, folder read-only) or None."""
        outputs = [(self.path, self.ref, 1, self.dtype, self._ds),
                   (self.confidence_path, self.ref, 1, gdal.GDT_Float32, self._conf),
                   (self.probabilities_path, self.ref, len(self.classes), gdal.GDT_Float32, self._prob)]
        self._ds = self._conf = self._prob = None
        return _close_outputs(outputs)

    def _open(self) -> "ClassifiedWriter":
        self._tmp = files.temp_beside(self.path, ".tif")
        self._ds = _create_tiff(self._tmp, self.ref, 1, self.dtype)
        band = self._ds.GetRasterBand(1)
        band.SetNoDataValue(self.nodata)
        top = max(max(c.value for c in self.classes), self.nodata if self.nodata < 65535 else 0)
        ct = gdal.ColorTable()
        names = [""] * (int(max(c.value for c in self.classes)) + 1)  # nodata is not a category
        for v in range(int(top) + 1):
            ct.SetColorEntry(v, (0, 0, 0, 0))
        for c in self.classes:
            ct.SetColorEntry(int(c.value), (*_hex_rgb(c.color), 255))
            names[int(c.value)] = c.name
        band.SetRasterColorTable(ct)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(names)
        band.SetDescription("class")
        if self.confidence_path:
            self._tmp_conf = files.temp_beside(self.confidence_path, ".tif")
            self._conf = _create_tiff(self._tmp_conf, self.ref, 1, gdal.GDT_Float32)
            cb = self._conf.GetRasterBand(1)
            cb.SetNoDataValue(-1.0)
            cb.SetDescription("confidence (winning class probability)")
        if self.probabilities_path:
            self._tmp_prob = files.temp_beside(self.probabilities_path, ".tif")
            self._prob = _create_tiff(self._tmp_prob, self.ref, len(self.classes), gdal.GDT_Float32)
            for b, c in enumerate(self.classes, start=1):
                pb = self._prob.GetRasterBand(b)
                pb.SetNoDataValue(-1.0)
                pb.SetDescription(c.name)
        return self

    def write(self, row: int, col: int, class_values: np.ndarray, confidence: Optional[np.ndarray] = None,
              probabilities: Optional[np.ndarray] = None) -> None:
        v = np.asarray(class_values)
        out = np.where(v < 0, self.nodata, v).astype(np.uint16 if self.dtype == gdal.GDT_UInt16 else np.uint8)
        _writing(self.path, self.ref, 1, self.dtype,
                 lambda: self._ds.GetRasterBand(1).WriteArray(out, int(col), int(row)))
        if self._conf is not None:
            if confidence is None:
                raise ValueError("a confidence raster was requested: pass confidence to write()")
            conf = np.asarray(confidence, dtype=np.float32).copy()
            conf[np.isnan(conf) | (v < 0)] = -1.0
            _writing(self.confidence_path, self.ref, 1, gdal.GDT_Float32,
                     lambda: self._conf.GetRasterBand(1).WriteArray(conf, int(col), int(row)))
        if self._prob is not None:
            if probabilities is None:
                raise ValueError("a probabilities raster was requested: pass probabilities to write()")
            probs = np.asarray(probabilities, dtype=np.float32).copy()
            probs[np.isnan(probs) | (v < 0)[None]] = -1.0
            def write_probabilities():
                for b in range(probs.shape[0]):
                    self._prob.GetRasterBand(b + 1).WriteArray(probs[b], int(col), int(row))

            _writing(self.probabilities_path, self.ref, len(self.classes), gdal.GDT_Float32, write_probabilities)

    def __exit__(self, exc_type, exc, tb) -> bool:
        failure = self._close()  # closes the files
        if exc_type is not None or failure is not None:
            files.discard(self._tmp, self._tmp_conf, self._tmp_prob)
            if exc_type is None:
                raise failure
            return False
        try:
            if self.finish is not None:
                self.finish(self._tmp)
            qml = f"{os.path.splitext(self.path)[0]}.qml"
            if files.is_own_sidecar(qml):
                write_qml(f"{self._tmp}.qml", self.classes)
            else:
                self.log(f"{qml} was not written by this plugin: kept as it is (the map's colour table and "
                         "category names still carry the classes)")
            # confidence and probabilities first: a present map means its run's rasters are all complete
            move_into_place((self._tmp_conf, self.confidence_path), (self._tmp_prob, self.probabilities_path),
                             (self._tmp, self.path))
        except BaseException:
            files.discard(self._tmp, self._tmp_conf, self._tmp_prob)
            raise
        return False


def move_into_place(*moves: Tuple[Optional[str], Optional[str]]) -> None:
    """Replace each ``path`` and its sidecars by ``tmp`` and its sidecars, all in one uninterrupted step
    (the writer's own temporaries, or a batch worker's staged files).

    A stale ``.aux.xml`` of an earlier output of ours is removed; a ``.qml`` is only touched when ``tmp``
    brings one, and never replaces a style the user made. Pairs with no temporary are skipped.
    """
    with files.uninterrupted():
        pairs = []
        for tmp, path in moves:
            if not tmp:
                continue
            base = os.path.splitext(path)[0]
            aux_src, aux_dst = f"{tmp}.aux.xml", f"{path}.aux.xml"
            if os.path.exists(aux_src):
                pairs.append((aux_src, aux_dst))
            elif os.path.exists(aux_dst) and written_by_plugin(path):
                os.remove(aux_dst)
            # the writer's temporary carries 'x.tif.qml', a staged batch file 'x.qml'
            qml_src = next((q for q in (f"{tmp}.qml", f"{os.path.splitext(tmp)[0]}.qml") if os.path.exists(q)), None)
            if qml_src is not None:
                if files.is_own_sidecar(f"{base}.qml"):
                    pairs.append((qml_src, f"{base}.qml"))
                else:
                    os.remove(qml_src)
            pairs.append((tmp, path))
        files.commit_all(pairs)


# -------------------------------------------------------------------------------------------------------
# float images (representations for inspection) and small helpers for the jobs


class ImageWriter:
    """A multi-band Float32 GeoTIFF on the grid of ``ref``, written by row blocks into a temp file.

    ``commit()`` moves it into place; ``discard()`` removes it (an existing output stays untouched).
    """

    def __init__(self, path: str, ref: RasterInfo, band_names: Sequence[str]):
        self.path, self._ref, self._bands = str(path), ref, len(band_names)
        self._tmp, self._ds = None, None
        try:
            self._tmp = files.temp_beside(self.path, ".tif")
            self._ds = _create_tiff(self._tmp, ref, len(band_names), gdal.GDT_Float32)
            for b, name in enumerate(band_names, start=1):
                band = self._ds.GetRasterBand(b)
                band.SetNoDataValue(float("nan"))
                band.SetDescription(name)
        except BaseException:  # nobody holds this writer yet to call discard()
            self.discard()
            raise

    def write(self, row: int, block: np.ndarray) -> None:
        def write_bands():
            for b in range(block.shape[0]):
                self._ds.GetRasterBand(b + 1).WriteArray(np.asarray(block[b], dtype=np.float32), 0, int(row))

        _writing(self.path, self._ref, self._bands, gdal.GDT_Float32, write_bands)

    def read(self, row: int, rows: int) -> np.ndarray:
        """Rows already written, read back (e.g. a score thresholded once the whole scene is known)."""
        self._ds.FlushCache()
        return self._ds.ReadAsArray(0, int(row), self._ds.RasterXSize, int(rows)).reshape(
            self._ds.RasterCount, int(rows), self._ds.RasterXSize)

    def commit(self) -> None:
        outputs = [(self.path, self._ref, self._bands, gdal.GDT_Float32, self._ds)]
        self._ds = None
        failure = _close_outputs(outputs)
        if failure is not None:
            files.discard(self._tmp)
            raise failure
        move_into_place((self._tmp, self.path))

    def discard(self) -> None:
        outputs = [(self.path, self._ref, self._bands, gdal.GDT_Float32, self._ds)]
        self._ds = None
        _close_outputs(outputs)  # closed before its file is removed; a failure to write it no longer matters
        files.discard(self._tmp)


class ClassBandEditor:
    """Band 1 of a classified GeoTIFF opened for update, for the clean-up (engine.tasks.cleanup.ClassBand).

    Rows come as int64 with -1 at nodata and go back with -1 written as the band's nodata value.
    """

    def __init__(self, path: str):
        self._ds = gdal.Open(str(path), gdal.GA_Update)
        self._band = self._ds.GetRasterBand(1)
        self.height, self.width = self._ds.RasterYSize, self._ds.RasterXSize
        nodata = self._band.GetNoDataValue()
        self.nodata = None if nodata is None or math.isnan(nodata) else int(nodata)

    def read(self, row: int, rows: int) -> np.ndarray:
        raw = self._band.ReadAsArray(0, int(row), self.width, int(rows)).astype(np.int64)
        if self.nodata is not None:
            raw[raw == self.nodata] = -1
        return raw

    def write(self, row: int, values: np.ndarray) -> None:
        if self.nodata is None and (values < 0).any():
            raise ValueError("the map has no nodata value to write")
        out = np.where(values < 0, self.nodata if self.nodata is not None else 0, values)
        self._band.WriteArray(out.astype(gdal_array_type(self._band.DataType)), 0, int(row))

    def sieve(self, threshold: int, connectivity: int, progress) -> None:
        """GDAL's sieve in place on the whole band; nodata (the band's mask) is never a patch nor merged into."""
        def callback(fraction, _message, _data):
            if progress.is_canceled():
                return 0
            progress.report(fraction)
            return 1

        result = gdal.SieveFilter(self._band, self._band.GetMaskBand(), self._band, int(threshold), int(connectivity),
                                  callback=callback)
        progress.check()  # a cancelled sieve returns an error code: say why
        if result not in (0, None):
            raise ValueError(f"GDAL's sieve failed (error {result})")

    def counts(self, block_rows: int = 256) -> dict:
        """{class value: pixels}, streamed."""
        from .readers import row_blocks

        total: dict = {}
        for row, rows in row_blocks(self.height, self.width, itemsize=8, max_rows=block_rows):  # read as int64
            block = self.read(row, rows)
            values, n = np.unique(block[block >= 0], return_counts=True)
            for v, c in zip(values.tolist(), n.tolist()):
                total[v] = total.get(v, 0) + c
        return total

    def close(self) -> None:
        if self._ds is not None:
            self._ds.FlushCache()
        self._band = self._ds = None


def gdal_array_type(gdal_type) -> type:
    return {gdal.GDT_Byte: np.uint8, gdal.GDT_UInt16: np.uint16, gdal.GDT_Int16: np.int16,
            gdal.GDT_UInt32: np.uint32, gdal.GDT_Int32: np.int32}.get(gdal_type, np.int64)


def class_styles(path: str) -> List[Tuple[int, str, Optional[str]]]:
    """(value, name, '#rrggbb' or None) of a classified raster: its ``.qml`` palette (what QGIS shows) when there is
    one, else its category names with the colour table's colours."""
    base = os.path.splitext(str(path))[0]
    for qml in (f"{base}.qml", f"{path}.qml"):
        if os.path.isfile(qml):
            try:
                entries = ET.parse(qml).getroot().iter("paletteEntry")
                found = [(int(float(e.get("value"))), e.get("label") or e.get("value"), e.get("color"))
                         for e in entries]
            except (ET.ParseError, TypeError, ValueError):
                found = []
            if found:
                return found
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    ct = band.GetColorTable()
    out = []
    for value, name in category_names(path).items():
        color = None
        if ct is not None and value < ct.GetCount():
            r, g, b = ct.GetColorEntry(value)[:3]
            color = f"#{r:02x}{g:02x}{b:02x}"
        out.append((value, name, color))
    return out


def category_names(path: str) -> dict:
    """{class value: name} from a classified raster's category names (the nodata entry left out)."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()  # first: GDAL 3.6 GTiff loads the .aux.xml (names) lazily, not for names alone
    names = band.GetCategoryNames() or []
    return {i: n for i, n in enumerate(names) if n and (nodata is None or i != int(nodata))}


def gdal_version() -> str:
    return gdal.__version__


@dataclass(frozen=True)
class PixelArea:
    """Ground area of one pixel in each row, and how it was worked out (said in the accuracy report)."""

    row_area: Optional[np.ndarray]  # [height] m² per pixel; None when the raster has no CRS (areas in pixels)
    unit: str  # "m2" or "pixels"
    note: str


def _authalic_q(phi: np.ndarray, e: float) -> np.ndarray:
    s = np.sin(phi)
    if e < 1e-12:
        return 2.0 * s
    return (1 - e * e) * (s / (1 - (e * s) ** 2) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))


def pixel_area(info: RasterInfo) -> PixelArea:
    """Pixel areas: constant in a projected CRS (its linear unit converted to metres); in a geographic CRS each
    row's pixels are the ellipsoidal quadrangles between their latitudes (exact: A = a² Δλ |q(φ1) − q(φ2)| / 2 with
    the authalic q of the CRS's ellipsoid), so a degree grid gets true areas at every latitude."""
    gt = info.geotransform
    if not info.crs_wkt:
        return PixelArea(None, "pixels", "the map has no CRS: areas are counted in pixels")
    srs = osr.SpatialReference(wkt=info.crs_wkt)
    if srs.IsProjected():
        metres = srs.GetLinearUnits()
        area = abs(gt[1] * gt[5] - gt[2] * gt[4]) * metres * metres
        unit_name = srs.GetLinearUnitsName() or "metre"
        return PixelArea(np.full(info.height, area), "m2",
                         f"projected CRS ({info.crs_label()}, unit {unit_name}): one pixel = {area:.6g} m²")
    if srs.IsGeographic():
        if gt[2] or gt[4]:
            raise ValueError(f"the map is in a geographic CRS ({info.crs_label()}) with a rotated grid: reproject it "
                             "to an equal-area or projected CRS to estimate areas")
        rad = srs.GetAngularUnits()  # radians per CRS unit
        a, inv_f = srs.GetSemiMajor(), srs.GetInvFlattening()
        f = 1.0 / inv_f if inv_f else 0.0
        e = math.sqrt(f * (2 - f))
        top = (gt[3] + np.arange(info.height) * gt[5]) * rad
        bottom = top + gt[5] * rad
        top, bottom = np.clip(top, -math.pi / 2, math.pi / 2), np.clip(bottom, -math.pi / 2, math.pi / 2)
        rows = 0.5 * a * a * abs(gt[1] * rad) * np.abs(_authalic_q(top, e) - _authalic_q(bottom, e))
        return PixelArea(rows, "m2", f"geographic CRS ({info.crs_label()}): pixel areas computed row by row on its "
                                     f"ellipsoid (a = {a:.3f} m, 1/f = {inv_f:.6g}), from {rows.min():.6g} to "
                                     f"{rows.max():.6g} m²")
    return PixelArea(None, "pixels", f"the map's CRS ({info.crs_label()}) is neither projected nor geographic: "
                                     "areas are counted in pixels")


scope_module(globals())  # GDAL raises inside this module's calls only (gdal_scope)

"""OGR side of the objects route (issue 21): polygon layers in, polygon layers out, id rasters between them.

- :func:`polygonize_ids`: a streamed object-id raster → a GeoPackage of one valid polygon per object
  (``gdal.Polygonize`` reads the raster line by line).
- :class:`PolygonSource`: the user's polygon layer (any CRS, any OGR format) read once, in feature order:
  geometries repaired where invalid (``MakeValid``), transformed to the raster's CRS and burnt as ids 1..n into an
  id raster on the raster grid (``gdal.RasterizeLayer`` into a GeoTIFF, so the scene is never one array).
- :func:`write_classified_copy`: the layer copied feature by feature with the predictions, plus its categorized
  style, both as a ``.qml`` and in the GeoPackage's ``layer_styles`` table (QGIS loads it as the default style).
Only this module, ``raster_io``, ``labels`` and ``gdal_scope`` import osgeo.
"""
from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .. import files
from ..errors import UserInputError
from .gdal_scope import scope_module

OBJECT_ID = "object_id"
_CREATE = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]


def _srs(wkt: str):
    if not wkt:
        return None
    srs = osr.SpatialReference(wkt=wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _to_raster_crs(layer, crs_wkt: str):
    """(the raster's SRS, a transformation from ``layer``'s SRS to it, or None when they agree or one is unknown)."""
    src_srs = layer.GetSpatialRef()
    dst_srs = _srs(crs_wkt)
    if src_srs is not None:
        src_srs = src_srs.Clone()
        src_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = (osr.CoordinateTransformation(src_srs, dst_srs)
                 if src_srs is not None and dst_srs is not None and not src_srs.IsSame(dst_srs) else None)
    return dst_srs, transform


def id_raster(path: str, ref, write_rows: Callable) -> None:
    """Create an Int32 one-band GeoTIFF on the grid of ``ref`` (nodata 0) and let ``write_rows(band)`` fill it
    with ``band.WriteArray(block, 0, row)`` calls (the segmentation streams into it)."""
    ds = gdal.GetDriverByName("GTiff").Create(path, ref.width, ref.height, 1, gdal.GDT_Int32, _CREATE)
    ds.SetGeoTransform(tuple(ref.geotransform))
    if ref.crs_wkt:
        ds.SetProjection(ref.crs_wkt)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(0)
    write_rows(band)
    band.FlushCache()
    ds = None


class IdReader:
    """An id raster as a one-band block reader; ``read`` gives float64, exact for every Int32 id."""

    def __init__(self, path: str):
        self.ds = gdal.Open(path)
        self.band = self.ds.GetRasterBand(1)
        self.height, self.width, self.band_count = self.ds.RasterYSize, self.ds.RasterXSize, 1

    def read_ids(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        return self.band.ReadAsArray(col, row, cols, rows).astype(np.int64)

    def read(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        return self.read_ids(row, col, rows, cols)[None].astype(np.float64)

    def close(self) -> None:
        self.band = self.ds = None


@dataclass
class PolygonizeStats:
    polygons: int
    repaired: int  # rings GDAL's polygonize left invalid, repaired with MakeValid


def polygonize_ids(ids_path: str, out_path: str, layer_name: str, pixels: np.ndarray, areas: Optional[np.ndarray],
                   progress=None) -> PolygonizeStats:
    """One polygon per object id of ``ids_path`` into a new GeoPackage ``out_path`` (fields object_id, pixels,
    area_m2, area_ha; ``areas`` in m², None without a CRS). Invalid rings are repaired with ``MakeValid``."""
    src = gdal.Open(ids_path)
    band = src.GetRasterBand(1)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(out_path)
    layer = ds.CreateLayer(layer_name, srs=_srs(src.GetProjection()), geom_type=ogr.wkbPolygon,
                           options=["FID=fid", "SPATIAL_INDEX=YES"])
    layer.CreateField(ogr.FieldDefn(OBJECT_ID, ogr.OFTInteger64))
    callback = None
    if progress is not None:
        def callback(fraction, _msg, _data):  # a cancel is honoured right after (GDAL's own abort is a bare error)
            progress.report(0.8 * fraction)
            return 1
    gdal.Polygonize(band, band, layer, 0, [], callback=callback)  # band as its own mask: 0 = no object
    if progress is not None:
        progress.check()
    for name, kind in (("pixels", ogr.OFTInteger64), ("area_m2", ogr.OFTReal), ("area_ha", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    repaired = polygons = 0
    layer.StartTransaction()
    layer.ResetReading()
    total = max(layer.GetFeatureCount(), 1)
    for feat in layer:
        oid = int(feat.GetField(OBJECT_ID))
        feat.SetField("pixels", int(pixels[oid - 1]))
        if areas is not None:
            feat.SetField("area_m2", float(areas[oid - 1]))
            feat.SetField("area_ha", float(areas[oid - 1]) * 1e-4)
        geom = feat.GetGeometryRef()
        if not geom.IsValid():
            feat.SetGeometry(_valid(geom))
            repaired += 1
        layer.SetFeature(feat)
        polygons += 1
        if progress is not None and polygons % 2000 == 0:
            progress.step(0.8 + 0.2 * polygons / total)
    layer.CommitTransaction()
    ds = src = None
    return PolygonizeStats(polygons, repaired)


def _valid(geom):
    """A valid (multi)polygon for ``geom`` (GEOS MakeValid; a buffer(0) where MakeValid is missing)."""
    fixed = geom.MakeValid() if hasattr(geom, "MakeValid") else geom.Buffer(0)
    if fixed is not None and fixed.GetGeometryType() == ogr.wkbGeometryCollection:  # keep the areal parts
        out = ogr.Geometry(ogr.wkbMultiPolygon)
        for i in range(fixed.GetGeometryCount()):
            part = fixed.GetGeometryRef(i)
            if ogr.GT_Flatten(part.GetGeometryType()) == ogr.wkbPolygon:
                out.AddGeometry(part)
            elif ogr.GT_Flatten(part.GetGeometryType()) == ogr.wkbMultiPolygon:
                for j in range(part.GetGeometryCount()):
                    out.AddGeometry(part.GetGeometryRef(j))
        fixed = out
    return fixed


# ---------------------------------------------------------------------------------------------------------
# the user's polygons

def split_source(source: str) -> Tuple[str, Optional[str]]:
    """'file.gpkg|layername=parcels' (a QGIS source) → (file, layer name or None)."""
    path, _, rest = str(source).partition("|")
    match = re.search(r"layername=([^|]+)", rest)
    return path, (match.group(1) if match else None)


def _open_layer(source: str, what: str):
    path, name = split_source(source)
    ds = ogr.Open(path)
    if ds is None:
        raise UserInputError(f"the {what} {path} is not a vector file OGR can read: give a GeoPackage or shapefile")
    layer = ds.GetLayerByName(name) if name else ds.GetLayer(0)
    if layer is None:
        raise UserInputError(f"the {what} {path} has no layer '{name}'")
    return ds, layer


def _kind(layer) -> str:
    flat = ogr.GT_Flatten(layer.GetGeomType())
    if flat in (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
        return "polygons"
    if flat in (ogr.wkbPoint, ogr.wkbMultiPoint):
        return "points"
    if flat in (ogr.wkbLineString, ogr.wkbMultiLineString):
        return "lines"
    if flat == ogr.wkbNone:
        return "no geometry"
    return "mixed"


@dataclass
class PolygonSource:
    """The user's polygons, burnt on a raster grid: ids 1..n = feature order; what reading them found."""

    source: str
    layer_name: str
    n: int
    values: List  # the class field per feature (None where NULL or empty); [] without a field
    centroids: np.ndarray  # [n, 2] x, y in the raster's CRS (NaN: empty geometry)
    empty: int = 0
    repaired: int = 0
    not_polygons: int = 0
    field_name: Optional[str] = None
    mem: object = None  # OGR memory layer holder: (datasource, layer) in the raster's CRS, id in field 'oid'
    styles: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)


def read_polygons(source: str, layer_name: str, ref, field_name: Optional[str] = None,
                  progress=None) -> PolygonSource:
    """Every feature of the polygon layer, transformed to the CRS of ``ref``; invalid geometries repaired and
    counted, empty ones kept (they get no pixel, and a NULL class). Refuses a layer of points/lines/no polygons."""
    ds, layer = _open_layer(source, f"polygon layer '{layer_name}'")
    kind = _kind(layer)
    if kind in ("points", "lines", "no geometry"):
        raise UserInputError(f"the layer '{layer_name}' holds {kind}; objects are polygons: give a polygon layer "
                             "(parcels, or the output of Segment objects)")
    n = layer.GetFeatureCount()
    if n == 0:
        raise UserInputError(f"the polygon layer '{layer_name}' has no polygons: give a layer with features")
    idx = -1
    if field_name:
        idx = layer.GetLayerDefn().GetFieldIndex(field_name)
        if idx < 0:
            names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
            raise UserInputError(f"the polygon layer '{layer_name}' has no field '{field_name}' (fields: "
                                 f"{', '.join(names) or 'none'})")
    dst_srs, transform = _to_raster_crs(layer, ref.crs_wkt)
    mds = ogr.GetDriverByName("Memory").CreateDataSource("")
    mem = mds.CreateLayer("objects", srs=dst_srs, geom_type=ogr.wkbUnknown)
    mem.CreateField(ogr.FieldDefn("oid", ogr.OFTInteger64))
    values: List = []
    centroids = np.full((n, 2), np.nan)
    empty = repaired = not_polys = 0
    layer.ResetReading()
    for i, feat in enumerate(layer):
        if i >= n:
            break
        if field_name:
            v = feat.GetField(idx) if feat.IsFieldSetAndNotNull(idx) else None
            values.append(None if v is None or str(v).strip() == "" else v)
        geom = feat.GetGeometryRef()
        out = ogr.Feature(mem.GetLayerDefn())
        out.SetField("oid", i + 1)
        if geom is None or geom.IsEmpty():
            empty += 1
        else:
            geom = geom.Clone()
            flat = ogr.GT_Flatten(geom.GetGeometryType())
            if flat not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
                geom = ogr.ForceToMultiPolygon(geom) if flat in (ogr.wkbCurvePolygon, ogr.wkbMultiSurface) else None
            if geom is None:
                not_polys += 1
            else:
                if not geom.IsValid():
                    geom = _valid(geom)
                    repaired += 1
                if transform is not None:
                    geom.Transform(transform)
                if geom is not None and not geom.IsEmpty():
                    c = geom.Centroid()
                    if geom.Contains(c) is False:
                        c = geom.PointOnSurface()
                    centroids[i] = (c.GetX(), c.GetY())
                    out.SetGeometry(geom)
                else:
                    empty += 1
        mem.CreateFeature(out)
        if progress is not None and i % 2000 == 0:
            progress.step(i / n)
    ds = None
    return PolygonSource(source, layer_name, n, values, centroids, empty, repaired, not_polys,
                         field_name or None, (mds, mem))


def burn_ids(polygons: PolygonSource, ref, path: str, progress=None) -> None:
    """Rasterize object ids (pixel centres inside; where polygons overlap the later one wins) into ``path``."""
    _, mem = polygons.mem
    ds = gdal.GetDriverByName("GTiff").Create(path, ref.width, ref.height, 1, gdal.GDT_Int32, _CREATE)
    ds.SetGeoTransform(tuple(ref.geotransform))
    if ref.crs_wkt:
        ds.SetProjection(ref.crs_wkt)
    ds.GetRasterBand(1).SetNoDataValue(0)
    callback = None
    if progress is not None:
        def callback(fraction, _msg, _data):  # a cancel is honoured right after (GDAL's own abort is a bare error)
            progress.report(fraction)
            return 1
    gdal.RasterizeLayer(ds, [1], mem, options=["ATTRIBUTE=oid"], callback=callback)
    ds.FlushCache()
    ds = None
    if progress is not None:
        progress.check()


def points_in_polygons(polygons: PolygonSource, source: str, layer_name: str, field_name: str,
                       ref, progress=None) -> Tuple[np.ndarray, List]:
    """(object index per label point (-1 = in none), class value per point) of a point layer, in any CRS."""
    ds, layer = _open_layer(source, f"label layer '{layer_name}'")
    if _kind(layer) != "points":
        raise UserInputError(f"the label layer '{layer_name}' holds {_kind(layer)}: label points are needed here "
                             "(or give the classes as a field of the polygon layer)")
    idx = layer.GetLayerDefn().GetFieldIndex(field_name)
    if idx < 0:
        raise UserInputError(f"the label layer '{layer_name}' has no field '{field_name}'")
    _, transform = _to_raster_crs(layer, ref.crs_wkt)
    _, mem = polygons.mem
    where, values = [], []
    for feat in layer:
        if progress is not None:
            progress.check()
        v = feat.GetField(idx) if feat.IsFieldSetAndNotNull(idx) else None
        geom = feat.GetGeometryRef()
        if v is None or str(v).strip() == "" or geom is None or geom.IsEmpty():
            continue
        geom = geom.Clone()
        if transform is not None:
            geom.Transform(transform)
        for k in range(max(geom.GetGeometryCount(), 1)):
            point = geom.GetGeometryRef(k) if geom.GetGeometryCount() else geom
            found = -1
            mem.SetSpatialFilter(point)
            for poly in mem:
                g = poly.GetGeometryRef()
                if g is not None and g.Contains(point):
                    found = int(poly.GetField("oid")) - 1  # the later polygon wins, as in the id raster
            mem.SetSpatialFilter(None)
            where.append(found)
            values.append(v)
    ds = None
    return np.asarray(where, np.int64), values


# ---------------------------------------------------------------------------------------------------------
# the classified copy

@dataclass
class PredictionFields:
    """What each feature of the copy gets: class value, name, confidence, probabilities, pixels, a note."""

    values: np.ndarray  # int64 class value per feature; -1 = NULL
    names: List[Optional[str]]
    confidence: np.ndarray
    probabilities: np.ndarray  # [n, K]
    pixels: np.ndarray
    notes: List[str]  # '' | 'subpixel' | 'no data' | 'outside'
    class_names: List[str]  # one per probability column


def _field_names(existing: Sequence[str], wanted: Sequence[str]) -> List[str]:
    taken = {e.lower() for e in existing}
    out = []
    for w in wanted:
        name = w
        while name.lower() in taken:
            name = f"{name}_pred"
        taken.add(name.lower())
        out.append(name)
    return out


def probability_field(name: str) -> str:
    return "p_" + (re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_").lower() or "class")


@dataclass
class CopyFields:
    """The names the prediction fields got in the copy (suffixed '_pred' where the source has the name already)."""

    class_value: str
    class_name: str
    confidence: str
    pixels: str
    note: str
    probabilities: List[str]


def write_classified_copy(source: str, out_path: str, layer_name: str, fields_out: PredictionFields,
                          classes, progress=None) -> CopyFields:
    """Copy every feature of ``source`` (attributes, geometry, CRS) into a new GeoPackage ``out_path`` with the
    prediction fields, and store the categorized style (``layer_styles``, default). Returns the new field names."""
    ds, layer = _open_layer(source, "polygon layer")
    out = ogr.GetDriverByName("GPKG").CreateDataSource(out_path)
    srs = layer.GetSpatialRef()
    dst = out.CreateLayer(layer_name, srs=srs, geom_type=ogr.wkbMultiPolygon, options=["FID=fid"])
    defn = layer.GetLayerDefn()
    existing = []
    for i in range(defn.GetFieldCount()):
        fd = defn.GetFieldDefn(i)
        if fd.GetName().lower() == "fid":
            continue
        dst.CreateField(fd)
        existing.append(fd.GetName())
    probs = _field_names(existing + ["class", "class_name", "confidence", "obj_pixels", "obj_note"],
                         [probability_field(n) for n in fields_out.class_names])
    base = _field_names(existing, ["class", "class_name", "confidence", "obj_pixels", "obj_note"])
    kinds = [ogr.OFTInteger, ogr.OFTString, ogr.OFTReal, ogr.OFTInteger64, ogr.OFTString]
    for name, kind in zip(base, kinds):
        dst.CreateField(ogr.FieldDefn(name, kind))
    for name in probs:
        dst.CreateField(ogr.FieldDefn(name, ogr.OFTReal))
    out_defn = dst.GetLayerDefn()
    dst.StartTransaction()
    layer.ResetReading()
    n = fields_out.values.size
    for i, feat in enumerate(layer):
        if i >= n:
            break
        f = ogr.Feature(out_defn)
        for name in existing:
            j = defn.GetFieldIndex(name)
            if feat.IsFieldSetAndNotNull(j):
                f.SetField(name, feat.GetField(j))
        geom = feat.GetGeometryRef()
        if geom is not None and not geom.IsEmpty():
            geom = geom.Clone()
            if not geom.IsValid():
                geom = _valid(geom)
            f.SetGeometry(ogr.ForceToMultiPolygon(geom))
        if fields_out.values[i] >= 0:
            f.SetField(base[0], int(fields_out.values[i]))
            f.SetField(base[1], str(fields_out.names[i]))
            f.SetField(base[2], float(fields_out.confidence[i]))
            for k, name in enumerate(probs):
                f.SetField(name, float(fields_out.probabilities[i, k]))
        f.SetField(base[3], int(fields_out.pixels[i]))
        f.SetField(base[4], fields_out.notes[i])
        dst.CreateFeature(f)
        if progress is not None and i % 2000 == 0:
            progress.step(i / max(n, 1))
    dst.CommitTransaction()
    geometry_column = dst.GetGeometryColumn() or "geom"
    qml = categorized_qml(base[0], classes)
    store_style(out, layer_name, geometry_column, qml)
    ds = out = None
    return CopyFields(base[0], base[1], base[2], base[3], base[4], probs)


def categorized_qml(field_name: str, classes) -> str:
    """A QGIS categorized renderer on ``field_name`` with each class's name and colour (QGIS 3.22 format)."""
    root = ET.Element("qgis", {"version": "3.22.0", "styleCategories": "Symbology"})
    renderer = ET.SubElement(root, "renderer-v2", {"type": "categorizedSymbol", "attr": field_name,
                                                   "symbollevels": "0", "enableorderby": "0", "forceraster": "0"})
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(cats, "category", {"value": str(int(c.value)), "label": str(c.name), "symbol": str(i),
                                         "render": "true"})
        symbol = ET.SubElement(symbols, "symbol", {"type": "fill", "name": str(i), "alpha": "1",
                                                    "clip_to_extent": "1", "force_rhr": "0"})
        sl = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
        r, g, b = (int(c.color.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4))
        for k, v in (("color", f"{r},{g},{b},255"), ("outline_color", "35,35,35,255"), ("outline_style", "solid"),
                     ("outline_width", "0.26"), ("outline_width_unit", "MM"), ("style", "solid")):
            ET.SubElement(sl, "prop", {"k": k, "v": v})
    ET.SubElement(root, "blendMode").text = "0"
    tree = ET.ElementTree(root)
    ET.indent(tree)
    body = ET.tostring(root, encoding="unicode")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            f"<!-- {files.SIDECAR_MARKER}: replaced by its next run; edit a copy to keep your own -->\n" + body)


def store_style(ds, table: str, geometry_column: str, qml: str) -> None:
    """The style as the layer's default in the GeoPackage (QGIS's ``layer_styles`` table)."""
    styles = ds.GetLayerByName("layer_styles")
    if styles is None:
        styles = ds.CreateLayer("layer_styles", geom_type=ogr.wkbNone)
        for name, kind in (("f_table_catalog", ogr.OFTString), ("f_table_schema", ogr.OFTString),
                           ("f_table_name", ogr.OFTString), ("f_geometry_column", ogr.OFTString),
                           ("styleName", ogr.OFTString), ("styleQML", ogr.OFTString), ("styleSLD", ogr.OFTString),
                           ("useAsDefault", ogr.OFTInteger), ("description", ogr.OFTString),
                           ("owner", ogr.OFTString), ("ui", ogr.OFTString), ("update_time", ogr.OFTDateTime)):
            fd = ogr.FieldDefn(name, kind)
            if name == "useAsDefault":
                fd.SetSubType(ogr.OFSTBoolean)
            styles.CreateField(fd)
    f = ogr.Feature(styles.GetLayerDefn())
    for k, v in (("f_table_catalog", ""), ("f_table_schema", ""), ("f_table_name", table),
                 ("f_geometry_column", geometry_column), ("styleName", table), ("styleQML", qml),
                 ("description", "Diffusion Land Cover classes"), ("owner", "")):
        f.SetField(k, v)
    f.SetField("useAsDefault", 1)
    f.SetField("update_time", _dt.datetime.now().strftime("%Y/%m/%d %H:%M:%S"))
    styles.CreateFeature(f)


@dataclass
class ObjectTable:
    """Per polygon with both fields set: map value, reference value, area (m², or map units² without a CRS)."""

    predicted: List
    reference: List
    area: np.ndarray
    unit: str  # 'm2' | 'map units²'
    skipped: int  # polygons without a map class or a reference


def read_object_table(source: str, layer_name: str, map_field: str, reference_field: str) -> ObjectTable:
    """What object accuracy counts; in a geographic CRS areas come from an equal-area projection (EPSG:6933)."""
    ds, layer = _open_layer(source, f"polygon layer '{layer_name}'")
    if _kind(layer) not in ("polygons", "mixed"):
        raise UserInputError(f"the layer '{layer_name}' holds {_kind(layer)}: object accuracy needs polygons")
    defn = layer.GetLayerDefn()
    for name in (map_field, reference_field):
        if defn.GetFieldIndex(name) < 0:
            raise UserInputError(f"the polygon layer '{layer_name}' has no field '{name}'")
    srs = layer.GetSpatialRef()
    transform, unit = None, "m2"
    if srs is None:
        unit = "map units²"
    elif srs.IsGeographic():
        equal = osr.SpatialReference()
        equal.ImportFromEPSG(6933)  # WGS 84 / NSIDC EASE-Grid 2.0 Global: equal-area
        equal.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        src = srs.Clone()
        src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(src, equal)
    else:
        metres = srs.GetLinearUnits()
    mi, ri = defn.GetFieldIndex(map_field), defn.GetFieldIndex(reference_field)
    pred, ref, area = [], [], []
    skipped = 0
    for feat in layer:
        if not (feat.IsFieldSetAndNotNull(mi) and feat.IsFieldSetAndNotNull(ri)) \
                or str(feat.GetField(ri)).strip() == "":
            skipped += 1
            continue
        geom = feat.GetGeometryRef()
        a = 0.0
        if geom is not None and not geom.IsEmpty():
            geom = geom.Clone()
            if not geom.IsValid():
                geom = _valid(geom)
            if transform is not None:
                geom.Transform(transform)
            a = geom.GetArea()
            if srs is not None and not srs.IsGeographic():
                a *= metres * metres
        pred.append(feat.GetField(mi))
        ref.append(feat.GetField(ri))
        area.append(a)
    ds = None
    return ObjectTable(pred, ref, np.asarray(area, np.float64), unit, skipped)


scope_module(globals())  # GDAL raises inside this module's calls only (gdal_scope)

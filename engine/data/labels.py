"""Labels → training pixels on the HSI grid: points or polygons, class checks and an honest skip report.

Class values may be integers (kept as the output raster's values) or text (→ values 1..K in sorted order, the
text becomes the class name). Every point that is not used is counted by reason, so the user learns why
"500 points" became 430 training pixels.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .gdal_scope import scope_module
from ..errors import UserInputError


# Tableau-10-like categorical palette: distinct hues with readable contrast on white and black
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
            "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]


class LabelError(UserInputError):
    """The labels cannot train a model; the message says which layer/field/class and what to do."""


@dataclass(frozen=True)
class ClassInfo:
    value: int
    name: str
    color: str  # '#rrggbb'

    def to_dict(self) -> Dict:
        return {"value": int(self.value), "name": self.name, "color": self.color}

    @classmethod
    def from_dict(cls, d: Dict) -> "ClassInfo":
        return cls(int(d["value"]), str(d["name"]), str(d["color"]))


@dataclass
class LabelSamples:
    rows: np.ndarray
    cols: np.ndarray
    class_index: np.ndarray  # 0..K-1, index into ``classes``
    classes: List[ClassInfo]
    report: Dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def default_colors(n: int) -> List[str]:
    """``n`` distinct colours: the 20-colour palette, then evenly spaced golden-ratio hues."""
    out = list(_PALETTE[:n])
    h = 0.0
    while len(out) < n:
        h = (h + 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.9)
        c = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
        if c not in out:
            out.append(c)
    return out


# -------------------------------------------------------------------------------------------------------

def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)) and np.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def class_codes(values: Sequence, field_name: str, layer: str):
    """(numeric codes per sample (NaN = missing), class values, names) from integer or text values.

    The one coding rule: integers are their own codes; texts are numbered 1..K in sorted order (names = those
    texts, else None)."""
    raw = list(values)
    present = [v for v in raw if not _is_missing(v)]
    numeric = True
    nums = []
    for v in present:
        try:
            f = float(v)
        except (TypeError, ValueError):
            numeric = False
            break
        if not float(f).is_integer():
            raise LabelError(f"field '{field_name}' of {layer} holds the non-integer class value {v!r}: "
                             "use integer class codes or class names")
        nums.append(int(f))
    if numeric:
        if any(n < 0 for n in nums):
            raise LabelError(f"field '{field_name}' of {layer} holds negative class values "
                             f"({sorted({n for n in nums if n < 0})}): remove those features (negative codes "
                             "usually mean 'no data') or recode the classes to 0 or positive integers")
        codes = np.array([np.nan if _is_missing(v) else float(int(float(v))) for v in raw])
        classes = sorted(set(nums))
        return codes, classes, None
    names = sorted({str(v).strip() for v in present})
    lookup = {n: i + 1 for i, n in enumerate(names)}
    codes = np.array([np.nan if _is_missing(v) else float(lookup[str(v).strip()]) for v in raw])
    return codes, list(range(1, len(names) + 1)), names


def _valid_at(valid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if valid is None or rows.size == 0:
        return np.ones(rows.size, dtype=bool)
    if hasattr(valid, "read") and hasattr(valid, "band_count"):  # a block reader
        valid = reader_valid_fn(valid)
    if callable(valid):
        return np.asarray(valid(rows, cols), dtype=bool)
    return np.asarray(valid, dtype=bool)[rows, cols]


def build_samples(rows: np.ndarray, cols: np.ndarray, values: Sequence, height: int, width: int,
                  valid=None, class_infos: Optional[Sequence[ClassInfo]] = None, field_name: str = "class",
                  layer_name: str = "the label layer", min_per_class: int = 2, mask=None) -> LabelSamples:
    """Pixel positions + raw class values → :class:`LabelSamples` (counts, skips, class checks).

    ``mask`` (same forms as ``valid``): pixels outside it are skipped and counted as ``outside_mask``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    total = int(rows.size)
    if total == 0:
        raise LabelError(f"{layer_name} has no features: draw training points (or polygons) with a "
                         f"'{field_name}' value on the image first")
    codes, class_values, names = class_codes(values, field_name, layer_name)
    missing = np.isnan(codes)
    if missing.all():
        raise LabelError(f"every feature of {layer_name} has an empty '{field_name}' value: fill in the classes")
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    ok = inside & ~missing
    outside_mask = np.zeros(total, dtype=bool)
    if mask is not None:
        outside_mask[ok] = ~_valid_at(mask, rows[ok], cols[ok])
        ok &= ~outside_mask
    valid_mask = np.zeros(total, dtype=bool)
    valid_mask[ok] = _valid_at(valid, rows[ok], cols[ok])
    on_nodata = ok & ~valid_mask
    ok &= valid_mask
    # duplicates: several samples in one pixel; the pixel is kept once, or dropped if the classes disagree
    pix = rows * width + cols
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(pix[idx], kind="stable")]
    uniq, first, counts = np.unique(pix[order], return_index=True, return_counts=True)
    keep = np.zeros(total, dtype=bool)
    duplicates = conflicting = 0
    for u, f, c in zip(uniq, first, counts):
        group = order[f:f + c]
        if c > 1:
            if np.unique(codes[group]).size > 1:
                conflicting += int(c)
                continue
            duplicates += int(c - 1)
        keep[group[0]] = True

    lookup = {v: i for i, v in enumerate(class_values)}
    infos = {int(c.value): c for c in (class_infos or [])}
    colours = default_colors(len(class_values))
    classes = []
    for i, v in enumerate(class_values):
        if v in infos:
            classes.append(infos[v])
        else:
            classes.append(ClassInfo(int(v), names[i] if names else f"class {v}", colours[i]))
    class_index = np.array([lookup[int(c)] for c in codes[keep]], dtype=np.int64)
    per_class = np.bincount(class_index, minlength=len(classes))
    report = {"layer": layer_name, "field": field_name, "total": total, "outside_raster": int((~inside).sum()),
              "missing_value": int(missing.sum()), "on_nodata": int(on_nodata.sum()),
              "outside_mask": int(outside_mask.sum()),
              "duplicates": duplicates, "conflicting": conflicting, "used": int(keep.sum()),
              "per_class": {c.name: int(n) for c, n in zip(classes, per_class)}}
    if keep.sum() == 0:
        raise LabelError(
            f"none of the {total} features of {layer_name} can be used ({report['outside_raster']} outside the "
            f"raster, {report['outside_mask']} outside the mask, {report['on_nodata']} on nodata pixels, {report['missing_value']} without a "
            f"'{field_name}' value): check that the labels lie on the image and that its CRS is right")
    few = [f"'{c.name}' (value {int(c.value)}: {int(n)} usable)" for c, n in zip(classes, per_class)
           if n < min_per_class]
    if few:
        raise LabelError(
            f"class {', '.join(few)} in field '{field_name}' of {layer_name} has fewer than {min_per_class} "
            f"usable samples (of all labels, {report['outside_raster']} lie outside the raster, "
            f"{report['outside_mask']} outside the mask and {report['on_nodata']} on nodata pixels): add more samples of that class on valid image pixels, or remove the class")
    if len(classes) < 2:
        raise LabelError(f"{layer_name} holds only one class ('{classes[0].name}') in field '{field_name}': "
                         "a classifier needs at least two classes")
    return LabelSamples(rows[keep], cols[keep], class_index, classes, report)


def map_to_pixel(xs: np.ndarray, ys: np.ndarray, geotransform: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Map coordinates → (rows, cols) of the pixels that contain them (any affine geotransform)."""
    inv = gdal.InvGeoTransform(tuple(geotransform))
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    cols = np.floor(inv[0] + inv[1] * xs + inv[2] * ys).astype(np.int64)
    rows = np.floor(inv[3] + inv[4] * xs + inv[5] * ys).astype(np.int64)
    return rows, cols


def collect_point_labels(xs, ys, values, ref, valid=None, class_infos: Optional[Sequence[ClassInfo]] = None,
                         field_name: str = "class", layer_name: str = "the label layer", mask=None) -> LabelSamples:
    """Points (in the CRS of ``ref``) → training pixels.

    ``valid``: None, a bool array [H, W], ``fn(rows, cols) -> bool array`` (True = usable image pixel), or a
    block reader (a pixel is usable when none of its non-bad bands is NaN).
    """
    rows, cols = map_to_pixel(xs, ys, ref.geotransform)
    return build_samples(rows, cols, values, ref.height, ref.width, valid, class_infos, field_name, layer_name,
                         mask=mask)


# -------------------------------------------------------------------------------------------------------
# polygons

def rasterize_polygons(wkb_list: Sequence[bytes], values: Sequence, ref) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel whose centre lies inside a polygon → (rows, cols, index of its polygon in ``wkb_list``).

    Burns into a raster covering only the polygons' bounding box (clipped to ``ref``), not the whole scene.
    Where polygons overlap the later one wins. ``values`` is only checked for length here.
    """
    if len(wkb_list) != len(values):
        raise ValueError("one value per polygon is needed")
    empty = (np.zeros(0, dtype=np.int64),) * 3
    if not len(wkb_list):
        return empty
    geoms = [ogr.CreateGeometryFromWkb(bytes(w)) for w in wkb_list]
    inv = gdal.InvGeoTransform(tuple(ref.geotransform))
    r0 = c0 = np.inf
    r1 = c1 = -np.inf
    for g in geoms:
        xmin, xmax, ymin, ymax = g.GetEnvelope()
        for x in (xmin, xmax):
            for y in (ymin, ymax):
                c = inv[0] + inv[1] * x + inv[2] * y
                r = inv[3] + inv[4] * x + inv[5] * y
                r0, r1, c0, c1 = min(r0, r), max(r1, r), min(c0, c), max(c1, c)
    r0, c0 = max(int(np.floor(r0)), 0), max(int(np.floor(c0)), 0)
    r1, c1 = min(int(np.ceil(r1)), ref.height), min(int(np.ceil(c1)), ref.width)
    if r1 <= r0 or c1 <= c0:
        return empty
    gt = ref.geotransform
    win_gt = (gt[0] + c0 * gt[1] + r0 * gt[2], gt[1], gt[2], gt[3] + c0 * gt[4] + r0 * gt[5], gt[4], gt[5])
    mem = gdal.GetDriverByName("MEM").Create("", c1 - c0, r1 - r0, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(win_gt)
    srs = osr.SpatialReference(wkt=ref.crs_wkt) if ref.crs_wkt else None
    if srs is not None:
        mem.SetProjection(ref.crs_wkt)
    vds = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = vds.CreateLayer("polygons", srs=srs, geom_type=ogr.wkbUnknown)
    layer.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    for i, g in enumerate(geoms):
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetGeometry(g)
        feat.SetField("burn", i + 1)
        layer.CreateFeature(feat)
    gdal.RasterizeLayer(mem, [1], layer, options=["ATTRIBUTE=burn"])
    burned = mem.GetRasterBand(1).ReadAsArray()
    rr, cc = np.nonzero(burned > 0)
    return rr + r0, cc + c0, burned[rr, cc].astype(np.int64) - 1


def collect_polygon_labels(wkb_list: Sequence[bytes], values, ref, valid=None,
                           class_infos: Optional[Sequence[ClassInfo]] = None, field_name: str = "class",
                           layer_name: str = "the label layer", mask=None) -> LabelSamples:
    """Polygons (in the CRS of ``ref``) → every pixel inside them as a training pixel."""
    if not len(wkb_list):
        raise LabelError(f"{layer_name} has no features: draw polygons with a '{field_name}' value first")
    rows, cols, which = rasterize_polygons(wkb_list, values, ref)
    if rows.size == 0:
        raise LabelError(f"no polygon of {layer_name} covers a pixel centre of the image: check that the "
                         "polygons lie on the image and that the layer's CRS is right")
    vals = [list(values)[i] for i in which]
    samples = build_samples(rows, cols, vals, ref.height, ref.width, valid, class_infos, field_name, layer_name,
                            mask=mask)
    samples.report["polygons"] = len(wkb_list)
    return samples


# -------------------------------------------------------------------------------------------------------

def stratified_sample(label_array: np.ndarray, fraction: float, seed: int,
                      ignore_values: Sequence[int] = (0, -1)) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class round(fraction · n_c) random pixels (at least 2, at most n_c) → (rows, cols, values)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(label_array)
    mask = ~np.isin(labels, list(ignore_values))
    rows, cols = np.nonzero(mask)
    vals = labels[rows, cols]
    out_r, out_c, out_v = [], [], []
    for v in np.unique(vals):
        idx = np.flatnonzero(vals == v)
        k = min(idx.size, max(2, int(round(fraction * idx.size))))
        pick = np.sort(rng.choice(idx, size=k, replace=False))
        out_r.append(rows[pick])
        out_c.append(cols[pick])
        out_v.append(vals[pick])
    if not out_r:
        return (np.zeros(0, dtype=np.int64),) * 2 + (np.zeros(0, dtype=labels.dtype),)
    r, c, v = np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)
    order = np.lexsort((c, r))
    return r[order], c[order], v[order]


# -------------------------------------------------------------------------------------------------------
# files

def reader_valid_fn(reader, block_rows: int = 256) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``fn(rows, cols)`` → True where the reader's pixel has no NaN in a non-bad band (reads row blocks)."""
    from .readers import rows_per_block

    bad = set(getattr(getattr(reader, "info", None), "bad_bands", []) or [])
    bands = [b for b in range(reader.band_count) if b not in bad]
    most_rows = block_rows

    def fn(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros(rows.size, dtype=bool)
        if not rows.size:
            return out
        span = int(cols.max()) - int(cols.min()) + 1  # no block is wider: its rows stay under the byte cap
        block_rows = rows_per_block(span, reader.band_count, max_rows=most_rows)
        for start in np.unique(rows // block_rows) * block_rows:
            sel = (rows >= start) & (rows < start + block_rows)
            c0, c1 = int(cols[sel].min()), int(cols[sel].max()) + 1
            r1 = min(int(start) + block_rows, reader.height)
            block = reader.read(int(start), c0, r1 - int(start), c1 - c0)[bands]
            out[sel] = ~np.isnan(block[:, rows[sel] - start, cols[sel] - c0]).any(axis=0)
        return out

    return fn


scope_module(globals())  # GDAL raises inside this module's calls only (gdal_scope)

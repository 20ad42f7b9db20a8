"""The reports' pictures, as inline SVG and PNG data URIs: numpy + zlib only (no matplotlib, no network), so an
HTML report opens anywhere, offline, as one file.

Bars (with error whiskers), points along categories (a cross-validation curve), a histogram with a threshold, a
legend, and quick-looks of a scene read decimated through the block-reader interface (one row per output row,
every k-th pixel: memory O(bands × width), never the whole raster).
"""
from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

QUICKLOOK_PX = 360  # longest side of a quick-look, pixels
NODATA_RGB = (238, 238, 238)
FONT = 'font-family="sans-serif" font-size="11"'


def _e(text) -> str:
    return html.escape(str(text))


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _tick(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


# --------------------------------------------------------------------------------------------------- PNG
def png_bytes(rgb: np.ndarray) -> bytes:
    """[H, W, 3] uint8 → PNG (8-bit RGB, no filter, zlib): small enough for quick-looks of a few hundred px."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = rgb.shape
    if c != 3:
        raise ValueError(f"expected [H, W, 3], got {rgb.shape}")
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def png_data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


# ---------------------------------------------------------------------------------------------- quick-looks
def step_text(step: int) -> str:
    """How a quick-look was decimated, for its caption."""
    return "full resolution" if step == 1 else f"one row and column in {step}"


def decimation_step(height: int, width: int, max_px: int = QUICKLOOK_PX) -> int:
    """Every k-th row and column so that the longest side is at most ``max_px``."""
    return max(1, int(math.ceil(max(height, width) / max_px)))


def decimated(reader, bands: Sequence[int], max_px: int = QUICKLOOK_PX) -> Tuple[np.ndarray, int]:
    """([len(bands), h, w] float32 of every k-th row and column of ``reader``'s ``bands``, k): one row read at a time
    through ``reader.read`` (any block reader: masked, warped, stacked)."""
    step = decimation_step(reader.height, reader.width, max_px)
    rows = range(0, reader.height, step)
    idx = [int(b) % reader.band_count for b in bands]
    out = np.empty((len(idx), len(rows), len(range(0, reader.width, step))), np.float32)
    for i, r in enumerate(rows):
        out[:, i] = reader.read(r, 0, 1, reader.width)[idx, 0, ::step]
    return out, step


class RowSampler:
    """Picks the quick-look rows (every k-th row and column) out of row blocks streamed top to bottom, so a map
    being written needs no second pass."""

    def __init__(self, height: int, width: int, max_px: int = QUICKLOOK_PX):
        self.step = decimation_step(height, width, max_px)
        self.rows: List[np.ndarray] = []

    def add(self, row: int, block: np.ndarray) -> None:
        first = (-row) % self.step
        for r in range(first, block.shape[0], self.step):
            self.rows.append(np.array(block[r, ::self.step]))

    def array(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, 0))


def stretch_limits(*stacks: np.ndarray, percentiles: Tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """[[lo, hi]] per band over the finite values of all ``stacks`` pooled (one stretch for two dates)."""
    bands = stacks[0].shape[0]
    limits = np.zeros((bands, 2))
    for b in range(bands):
        v = np.concatenate([s[b][np.isfinite(s[b])] for s in stacks])
        if v.size:
            lo, hi = np.percentile(v, percentiles)
            limits[b] = (lo, hi if hi > lo else lo + 1.0)
        else:
            limits[b] = (0.0, 1.0)
    return limits


def stretched_rgb(bands: np.ndarray, limits: Optional[np.ndarray] = None) -> np.ndarray:
    """[3, h, w] float (NaN = nodata) → [h, w, 3] uint8, linear between the limits (2–98 % by default)."""
    limits = stretch_limits(bands) if limits is None else limits
    lo, hi = limits[:, 0][:, None, None], limits[:, 1][:, None, None]
    with np.errstate(invalid="ignore"):
        scaled = np.clip((bands - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.nan_to_num(scaled * 255.0, nan=0.0).round().astype(np.uint8).transpose(1, 2, 0)
    rgb[~np.isfinite(bands).all(axis=0)] = NODATA_RGB
    return np.ascontiguousarray(rgb)


def class_rgb(index: np.ndarray, colours: Sequence[str]) -> np.ndarray:
    """[h, w] class indices (-1 = nodata) → [h, w, 3] uint8 in the classes' colours."""
    table = np.array([hex_rgb(c) for c in colours] + [NODATA_RGB], np.uint8)
    idx = np.where((index >= 0) & (index < len(colours)), index, len(colours)).astype(np.int64)
    return table[idx]


def hex_rgb(colour: str) -> Tuple[int, int, int]:
    c = str(colour).lstrip("#")
    try:
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError:
        return 128, 128, 128


def image_svg(rgb: np.ndarray, label: str, points: Optional[Tuple[np.ndarray, np.ndarray, Sequence[str]]] = None,
              display_px: int = 360) -> str:
    """A quick-look as SVG: the PNG inline (pixelated when enlarged) and optional points (x, y in its pixels,
    colours) drawn on top."""
    h, w = rgb.shape[:2]
    scale = display_px / max(h, w, 1)
    dw, dh = round(w * scale), round(h * scale)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{dw}" height="{dh}" viewBox="0 0 {dw} {dh}" '
             f'role="img" aria-label="{_e(label)}" class="quicklook">',
             f'<image width="{dw}" height="{dh}" preserveAspectRatio="none" style="image-rendering:pixelated" '
             f'href="{png_data_uri(rgb)}"/>']
    if points is not None:
        xs, ys, colours = points
        for x, y, c in zip(xs, ys, colours):
            parts.append(f'<circle cx="{(x + 0.5) * scale:.1f}" cy="{(y + 0.5) * scale:.1f}" r="2.6" '
                         f'fill="{_e(c)}" stroke="#000" stroke-width="0.6"/>')
    parts.append(f'<rect width="{dw}" height="{dh}" fill="none" stroke="#999"/></svg>')
    return "".join(parts)


# -------------------------------------------------------------------------------------------------- charts
@dataclass
class Series:
    """One set of bars: a value (and optional ± error, e.g. a 95 % CI half-width) per category."""

    name: str
    colour: str
    values: Sequence[Optional[float]]
    errors: Optional[Sequence[Optional[float]]] = None


def bar_chart(categories: Sequence[str], series: Sequence[Series], label: str, unit: str = "",
              digits: int = 3, lower: Optional[float] = None, upper: Optional[float] = None) -> str:
    """Horizontal bars, one group per category, one bar per series, with error whiskers and the value written;
    a value that is undefined (None/NaN) is shown as '–'. Negative values (an importance below zero) go left."""
    vals = [v for s in series for i, v in enumerate(s.values) if _finite(v)]
    ends = vals + [v + (s.errors[i] or 0) * sgn for s in series if s.errors for i, v in enumerate(s.values)
                   if _finite(v) and _finite(s.errors[i]) for sgn in (1, -1)]
    lo = min([0.0] + ends) if lower is None else lower
    hi = max([0.0] + ends) if upper is None else upper
    if hi <= lo:
        hi = lo + 1.0
    label_w = 12 + 7 * max([len(str(c)[:28]) for c in categories] + [4])
    plot_w, bar_h, gap = 300, 14, 10
    group_h = bar_h * len(series) + gap
    legend_h = 18 if len(series) > 1 else 0
    legend_w = sum(24 + 7 * len(s.name) for s in series) if legend_h else 0
    top = 8 + legend_h
    width, height = label_w + max(plot_w + 70, legend_w), top + group_h * len(categories) + 28

    def x(v: float) -> float:
        return label_w + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" {FONT} role="img" aria-label="{_e(label)}" class="chart">']
    if legend_h:
        lx = label_w
        for s in series:
            parts.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{_e(s.colour)}"/>'
                         f'<text x="{lx + 14}" y="15">{_e(s.name)}</text>')
            lx += 24 + 7 * len(s.name)
    for i, cat in enumerate(categories):
        y0 = top + i * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y0 + group_h / 2 + 0}" text-anchor="end">{_e(str(cat)[:28])}</text>')
        for j, s in enumerate(series):
            v = s.values[i] if i < len(s.values) else None
            y = y0 + j * bar_h
            if not _finite(v):
                parts.append(f'<text x="{x(0) + 4}" y="{y + bar_h - 3}">–</text>')
                continue
            a, b = sorted((x(0), x(v)))
            err = s.errors[i] if s.errors and i < len(s.errors) else None
            tip = f"{s.name}: {v:.{digits}f}{unit}" + (f" ± {err:.{digits}f}" if _finite(err) else "")
            parts.append(f'<rect x="{a:.1f}" y="{y + 1}" width="{max(b - a, 1):.1f}" height="{bar_h - 2}" '
                         f'fill="{_e(s.colour)}"><title>{_e(cat)} — {_e(tip)}</title></rect>')
            end = x(v)
            if _finite(err) and err > 0:
                e0, e1, yc = x(v - err), x(v + err), y + bar_h / 2
                parts.append(f'<path d="M{e0:.1f},{yc}H{e1:.1f}M{e0:.1f},{yc - 4}V{yc + 4}M{e1:.1f},{yc - 4}V{yc + 4}" '
                             'stroke="#222" stroke-width="1.2" fill="none"/>')
                end = max(end, e1)
            parts.append(f'<text x="{end + 4:.1f}" y="{y + bar_h - 3}">{v:.{digits}f}{_e(unit)}</text>')
    base = top + group_h * len(categories)
    parts.append(f'<line x1="{x(0):.1f}" y1="{top - 2}" x2="{x(0):.1f}" y2="{base}" stroke="#444"/>')
    parts.append(f'<line x1="{label_w}" y1="{base}" x2="{label_w + plot_w}" y2="{base}" stroke="#444"/>')
    for v in (lo, hi):
        parts.append(f'<text x="{x(v):.1f}" y="{base + 14}" text-anchor="middle">{_tick(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def point_chart(categories: Sequence[str], means: Sequence[Optional[float]],
                errors: Optional[Sequence[Optional[float]]] = None, highlight: Optional[str] = None,
                label: str = "", y_title: str = "", x_title: str = "") -> str:
    """Points along categories joined by a line, ± error bars, the ``highlight`` category drawn larger in red: a
    cross-validation curve with the chosen candidate marked."""
    n = len(categories)
    ok = [(m, (errors[i] if errors else None) or 0.0) for i, m in enumerate(means) if _finite(m)]
    lo = min([m - e for m, e in ok] + [1.0])
    hi = max([m + e for m, e in ok] + [0.0])
    pad = max((hi - lo) * 0.1, 0.01)
    lo, hi = lo - pad, hi + pad
    left, top, plot_w, plot_h = 56, 12, max(240, 46 * n), 170
    width, height = left + plot_w + 20, top + plot_h + 70

    def px(i: int) -> float:
        return left + (i + 0.5) * plot_w / max(n, 1)

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" {FONT} role="img" aria-label="{_e(label)}" class="chart">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#444"/>']
    for t in np.linspace(lo, hi, 5)[1:-1]:
        parts.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.3f}</text>')
    line = [f"{px(i):.1f},{py(m):.1f}" for i, m in enumerate(means) if _finite(m)]
    if len(line) > 1:
        parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#3b6fb6" stroke-width="1.5"/>')
    for i, (cat, m) in enumerate(zip(categories, means)):
        parts.append(f'<text transform="translate({px(i) + 4:.1f},{top + plot_h + 12}) rotate(-35)" '
                     f'text-anchor="end">{_e(str(cat)[:18])}</text>')
        if not _finite(m):
            continue
        e = errors[i] if errors and i < len(errors) else None
        if _finite(e) and e > 0:
            parts.append(f'<path d="M{px(i):.1f},{py(m - e):.1f}V{py(m + e):.1f}M{px(i) - 4:.1f},{py(m - e):.1f}'
                         f'h8M{px(i) - 4:.1f},{py(m + e):.1f}h8" stroke="#222" fill="none"/>')
        chosen = str(cat) == str(highlight)
        tip = f"{cat}: {m:.4f}" + (f" ± {e:.4f}" if _finite(e) else "") + (" (chosen)" if chosen else "")
        mark = ' class="chosen" fill="#e31a1c" r="6"' if chosen else ' fill="#3b6fb6" r="3.5"'
        parts.append(f'<circle cx="{px(i):.1f}" cy="{py(m):.1f}"{mark}>'
                     f'<title>{_e(tip)}</title></circle>')
    parts.append(f'<text transform="translate(14,{top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                 f'{_e(y_title)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">{_e(x_title)}</text></svg>')
    return "".join(parts)


def histogram_svg(values: np.ndarray, threshold: Optional[float], label: str, x_title: str = "",
                  bins: int = 60, clip_percentile: float = 99.5) -> str:
    """Histogram of a sample with a vertical threshold line; bars above the threshold in red. The axis ends at
    the ``clip_percentile`` (or just past the threshold): change scores are heavy-tailed, and a few extreme
    pixels would squeeze every other bar into one; the values beyond are counted in the last bar."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size:
        end = float(np.percentile(v, clip_percentile))
        if _finite(threshold) and threshold >= end:
            end = threshold + 0.05 * (threshold - float(v.min()) or 1.0)
        v = np.minimum(v, end)
    left, top, plot_w, plot_h = 56, 12, 420, 170
    width, height = left + plot_w + 20, top + plot_h + 44
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" {FONT} role="img" aria-label="{_e(label)}" class="chart">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#444"/>']
    if v.size:
        lo, hi = float(v.min()), float(v.max())
        if _finite(threshold):
            lo, hi = min(lo, threshold), max(hi, threshold)
        if hi <= lo:
            hi = lo + 1.0
        counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
        top_count = max(int(counts.max()), 1)

        def px(x: float) -> float:
            return left + (x - lo) / (hi - lo) * plot_w

        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                hgt = c / top_count * plot_h
                above = _finite(threshold) and a >= threshold
                parts.append(f'<rect x="{px(a):.1f}" y="{top + plot_h - hgt:.1f}" width="{max(px(b) - px(a) - 0.5, 0.5):.1f}" '
                             f'height="{hgt:.1f}" fill="{"#e31a1c" if above else "#7a93b8"}"><title>{a:.4g}–{b:.4g}: '
                             f'{int(c):,}</title></rect>')
        for t in np.linspace(lo, hi, 5):
            parts.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{t:.3g}</text>')
        parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{top_count:,}</text>'
                     f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
        if _finite(threshold):
            parts.append(f'<line x1="{px(threshold):.1f}" y1="{top}" x2="{px(threshold):.1f}" y2="{top + plot_h}" '
                         f'stroke="#111" stroke-width="2" stroke-dasharray="5,3" class="threshold"/>'
                         f'<text x="{px(threshold) + 4:.1f}" y="{top + 12}">threshold {threshold:.4g}</text>')
    else:
        parts.append(f'<text x="{left + 8}" y="{top + 20}">no values</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">{_e(x_title)}</text></svg>')
    return "".join(parts)


def legend_html(entries: Sequence[Tuple[str, str]]) -> str:
    """(name, colour) swatches as an HTML list."""
    items = "".join(f'<li><span class="swatch" style="background:{_e(c)}"></span>{_e(n)}</li>' for n, c in entries)
    return f'<ul class="legend">{items}</ul>'


FIGURE_STYLE = (".legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1.2em}"
                ".swatch{display:inline-block;width:14px;height:14px;border:1px solid #555;margin-right:5px;"
                "vertical-align:-2px}.figures{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}"
                "figure{margin:0}figcaption{font-size:90%;color:#444;max-width:380px}")

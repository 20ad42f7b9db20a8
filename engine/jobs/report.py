"""Accuracy report: JSON for machines, one self-contained HTML page (no external assets) for people.

The confusion matrix is drawn as inline SVG so the report needs neither matplotlib nor network access.
"""
from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING, Dict, Optional

from ..files import write_text

if TYPE_CHECKING:  # pragma: no cover
    from ..assessment.change import ChangeMatrix

_SUMMARY = [("overall_accuracy", "Overall accuracy (OA)"), ("average_accuracy", "Average accuracy (AA)"),
            ("kappa", "Cohen's kappa"), ("mean_f1", "Mean F1 (mF1)"), ("mean_iou", "Mean IoU (mIoU)")]


_STYLE = """<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; text-align: left; }
</style>"""


def _fmt(v, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def confusion_svg(cm, names, cell: int = 36, col_names=None, row_title: str = "reference",
                  col_title: str = "predicted") -> str:
    """Heat map of the row-normalised confusion matrix (colour) with the counts written in each cell.

    ``col_names`` (default ``names``) allows a rectangular matrix, e.g. a from–to matrix of two legends."""
    col_names = names if col_names is None else col_names
    k, kc = len(cm), len(col_names)
    digits = max((len(str(v)) for row in cm for v in row), default=1)
    cell = max(cell, 8 * digits + 10)  # the largest count fits in its cell
    longest = max((len(str(n)[:22]) for n in list(names) + list(col_names)), default=4)
    label_w, top = 12 + 7 * longest, 12 + 6 * longest  # room for the row labels and the rotated column labels
    size, width = cell * k, cell * kc
    w, h = label_w + width + 20, top + size + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             'font-family="sans-serif" font-size="11" role="img" aria-label="confusion matrix">']
    for i in range(k):
        total = sum(cm[i]) or 1
        for j in range(kc):
            frac = cm[i][j] / total
            shade = int(round(255 - 200 * frac))
            fill = f"rgb({shade},{shade},255)" if i != j else f"rgb({shade},255,{shade})"
            x, y = label_w + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#999">'
                         f'<title>{html.escape(str(names[i]))} → {html.escape(str(col_names[j]))}: {cm[i][j]} '
                         f'({100 * frac:.1f} % of the {row_title})</title></rect>')
            colour = "#fff" if frac > 0.6 else "#000"
            parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                         f'fill="{colour}">{cm[i][j]}</text>')
        parts.append(f'<text x="{label_w - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">'
                     f'{html.escape(str(names[i])[:22])}</text>')
    for j in range(kc):
        x = label_w + j * cell + cell / 2
        parts.append(f'<text transform="translate({x + 4},{top - 6}) rotate(-60)">'
                     f'{html.escape(str(col_names[j])[:22])}</text>')
    parts.append(f'<text x="{label_w + width / 2}" y="{top + size + 28}" text-anchor="middle" '
                 f'font-weight="bold">{html.escape(col_title)}</text>')
    parts.append(f'<text transform="translate(14,{top + size / 2}) rotate(-90)" text-anchor="middle" '
                 f'font-weight="bold">{html.escape(row_title)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _num(v, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def area_estimation_html(est: Optional[Dict]) -> str:
    """The Olofsson et al. 2014 section: estimated areas ± 95 % CI, area-adjusted accuracies, the error matrix in
    estimated area proportions, and the assumptions the estimators rest on."""
    if not est:
        return ""
    e = html.escape
    unit = est.get("unit", "pixels")
    km2 = unit == "ha"
    classes = est.get("classes", [])
    rows = "".join(
        f"<tr><th>{e(str(c['name']))}</th><td>{_num(c['map_area'])}</td><td>{_num(c['weight'], 4)}</td>"
        f"<td>{c['samples']}</td><td>{_num(c['estimated_area'])} ± {_num(c['estimated_area_ci95'])}</td>"
        + (f"<td>{_num(_div(c['estimated_area'], 100), 2)} ± {_num(_div(c['estimated_area_ci95'], 100), 2)}</td>"
           if km2 else "") +
        f"<td>{_num(c['users_accuracy'], 3)} ± {_num(c['users_accuracy_ci95'], 3)}</td>"
        f"<td>{_num(c['producers_accuracy'], 3)} ± {_num(c['producers_accuracy_ci95'], 3)}</td></tr>"
        for c in classes)
    head = (f"<tr><th>class</th><th>map area ({unit})</th><th>weight W<sub>i</sub></th><th>samples n<sub>i</sub></th>"
            f"<th>estimated area ({unit}) ± 95 % CI</th>" + ("<th>estimated area (km²) ± 95 % CI</th>" if km2 else "")
            + "<th>user's accuracy ± 95 % CI</th><th>producer's accuracy ± 95 % CI</th></tr>")
    names = [str(c["name"]) for c in classes]
    matrix = est.get("error_matrix_area_proportions", [])
    mhead = "".join(f"<th>{e(n)}</th>" for n in names)
    mbody = "".join(f"<tr><th>{e(names[i])}</th>" + "".join(f"<td>{_num(v, 4)}</td>" for v in row) +
                    f"<td><b>{_num(sum(v or 0 for v in row), 4)}</b></td></tr>" for i, row in enumerate(matrix))
    mtotal = "".join(f"<td><b>{_num(sum((r[j] or 0) for r in matrix), 4)}</b></td>" for j in range(len(matrix)))
    return (f'<h2 id="area-estimation">Area-adjusted accuracy and area estimates (Olofsson et al. 2014)</h2>'
            f'<table id="area-estimates">{head}{rows}</table>'
            f"<p>Overall accuracy (area-weighted): <b>{_num(est.get('overall_accuracy'), 3)} ± "
            f"{_num(est.get('overall_accuracy_ci95'), 3)}</b> (95 % CI). Total mapped area: "
            f"{_num(est.get('total_area'))} {e(unit)}.</p>"
            f"<h3>Error matrix in estimated area proportions (rows: map, columns: reference)</h3>"
            f'<table id="area-proportions"><tr><th></th>{mhead}<th>total</th></tr>{mbody}'
            f"<tr><th>total</th>{mtotal}<td></td></tr></table>"
            f"<p>{e(str(est.get('area_note', '')))}.</p><p>{e(str(est.get('assumptions', '')))}</p>")


def by_area_html(by_area: Optional[Dict]) -> str:
    """Object accuracy weighted by area (engine.jobs.objects.assess_objects): OA, kappa, per-class F1 by area."""
    if not by_area:
        return ""
    e = html.escape
    unit = e(str(by_area.get("unit", "")))
    rows = "".join(f"<tr><th>{e(str(c['name']))}</th><td>{_num(c['reference_area'], 2)}</td>"
                   f"<td>{_num(c['map_area'], 2)}</td><td>{_fmt(c['precision'])}</td><td>{_fmt(c['recall'])}</td>"
                   f"<td>{_fmt(c['f1'])}</td></tr>" for c in by_area.get("per_class", []))
    return (f'<h2 id="by-area">By area (each polygon weighted by its area, {unit})</h2>'
            f"<table><tr><th>Overall accuracy (area-weighted)</th><td>{_fmt(by_area.get('overall_accuracy'))}</td></tr>"
            f"<tr><th>Cohen's kappa (area-weighted)</th><td>{_fmt(by_area.get('kappa'), pct=False)}</td></tr>"
            f"<tr><th>Mean F1 (area-weighted)</th><td>{_fmt(by_area.get('mean_f1'))}</td></tr>"
            f"<tr><th>Total area ({unit})</th><td>{_num(by_area.get('total_area'), 2)}</td></tr></table>"
            f'<table id="by-area-classes"><tr><th>class</th><th>reference area ({unit})</th><th>map area ({unit})</th>'
            f"<th>precision</th><th>recall</th><th>F1</th></tr>{rows}</table>")


def _div(v, d):
    return None if v is None else v / d


def render_html(metrics: Dict, title: str, extra: Optional[Dict] = None) -> str:
    e = html.escape
    per = metrics.get("per_class", [])
    names = [p["name"] for p in per]
    cm = metrics.get("confusion_matrix", [])
    rows = "".join(f"<tr><th>{e(label)}</th><td>{_fmt(metrics.get(key))}</td></tr>" for key, label in _SUMMARY)
    rows += f"<tr><th>Reference samples (n)</th><td>{metrics.get('n_samples', '–')}</td></tr>"
    cls = "".join(
        f"<tr><th>{e(str(p['name']))}</th><td>{p['reference']}</td><td>{p['predicted']}</td>"
        f"<td>{_fmt(p['precision'])}</td><td>{_fmt(p['recall'])}</td><td>{_fmt(p['f1'])}</td>"
        f"<td>{_fmt(p['iou'])}</td></tr>" for p in per)
    head = "".join(f"<th>{e(str(n))}</th>" for n in names)
    body = "".join(f"<tr><th>{e(str(names[i]))}</th>" + "".join(f"<td>{v}</td>" for v in row) +
                   f"<td><b>{sum(row)}</b></td></tr>" for i, row in enumerate(cm))
    totals = "".join(f"<td><b>{sum(r[j] for r in cm)}</b></td>" for j in range(len(cm)))
    extra_html = _run_table(extra)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
{_STYLE}</head><body>
<h1>{e(title)}</h1>
<h2>Summary</h2><table>{rows}</table>
<h2>Per class (%)</h2>
<table><tr><th>class</th><th>reference</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th><th>IoU</th></tr>{cls}</table>
<h2>Confusion matrix (rows: reference, columns: prediction)</h2>
<table id="confusion-matrix"><tr><th></th>{head}<th>total</th></tr>{body}<tr><th>total</th>{totals}<td></td></tr></table>
{confusion_svg(cm, names) if cm else ""}
{area_estimation_html(metrics.get("area_estimation"))}
{by_area_html(metrics.get("by_area"))}
{extra_html}
</body></html>
"""


def write_accuracy_report(metrics: Dict, html_path: Optional[str] = None, json_path: Optional[str] = None,
                          title: str = "Accuracy assessment", extra: Optional[Dict] = None) -> None:
    """Write the metrics (from :mod:`engine.assessment.metrics`) as JSON and/or HTML, each via temp file + move."""
    if json_path:
        payload = {"title": title, **metrics, "extra": extra or {}}
        write_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    if html_path:
        write_text(html_path, render_html(metrics, title, extra))


def _run_table(extra: Optional[Dict]) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)}</td></tr>"
                   for k, v in (extra or {}).items())
    return f"<h2>Run</h2><table>{rows}</table>" if rows else ""


def change_csv(matrix: "ChangeMatrix") -> str:
    """The long from–to table as CSV (one row per class pair present), areas in the matrix's unit."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["from_value", "from_name", "to_value", "to_name", "pixels", f"area_{matrix.unit}", "changed"])
    for r in matrix.rows():
        writer.writerow([r["from_value"], r["from_name"], r["to_value"], r["to_name"], r["pixels"],
                         f"{r['area']:.6f}" if matrix.unit == "ha" else f"{r['area']:.0f}", int(r["changed"])])
    return buffer.getvalue()


def render_change_html(matrix: "ChangeMatrix", title: str = "Change statistics", extra: Optional[Dict] = None) -> str:
    e = html.escape
    d = matrix.to_dict()
    unit = matrix.unit
    digits = 2 if unit == "ha" else 0
    frac = d["changed_fraction"]
    summary = (f"<tr><th>valid pixels (class in both maps)</th><td>{matrix.valid_pixels:,}</td></tr>"
               f"<tr><th>total area ({e(unit)})</th><td>{_num(matrix.total_area, digits)}</td></tr>"
               f"<tr><th>changed pixels</th><td>{matrix.changed_pixels:,}</td></tr>"
               f"<tr><th>changed area ({e(unit)})</th><td>{_num(matrix.changed_area, digits)}</td></tr>"
               f"<tr><th>changed share of valid pixels</th><td>{_fmt(frac)} %</td></tr>"
               f"<tr><th>left out: nodata at date 1 only / date 2 only / both</th><td>{matrix.nodata_first:,} / "
               f"{matrix.nodata_second:,} / {matrix.nodata_both:,}</td></tr>")
    head = "".join(f"<th>{e(n)}</th>" for n in matrix.to_names)

    def table(values, fmt, tid):
        body = "".join(f"<tr><th>{e(matrix.from_names[i])}</th>" + "".join(f"<td>{fmt(v)}</td>" for v in row) +
                       f"<td><b>{fmt(sum(row))}</b></td></tr>" for i, row in enumerate(values))
        totals = "".join(f"<td><b>{fmt(sum(r[j] for r in values))}</b></td>" for j in range(len(matrix.to_names)))
        return (f'<table id="{tid}"><tr><th>date 1 \\ date 2</th>{head}<th>total</th></tr>{body}'
                f"<tr><th>total</th>{totals}<td></td></tr></table>")

    classes = "".join(
        f"<tr><th>{e(str(c['name']))} ({c['value']})</th><td>{_num(c['area_date1'], digits)}</td>"
        f"<td>{_num(c['area_date2'], digits)}</td><td>{_num(c['loss'], digits)}</td><td>{_num(c['gain'], digits)}</td>"
        f"<td>{_num(c['net'], digits)}</td></tr>" for c in d["classes"])
    notes = "".join(f"<p>{e(n)}.</p>" for n in matrix.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
{_STYLE}</head><body>
<h1>{e(title)}</h1>
<h2>Summary</h2><table>{summary}</table>
<h2>Per class ({e(unit)})</h2>
<table id="class-areas"><tr><th>class (value)</th><th>date 1</th><th>date 2</th><th>loss</th><th>gain</th><th>net</th></tr>{classes}</table>
<h2>From&ndash;to matrix, pixels (rows: date 1, columns: date 2)</h2>
{table(matrix.pixels.tolist(), lambda v: f"{int(v):,}", "from-to-pixels")}
{confusion_svg(matrix.pixels.tolist(), matrix.from_names, col_names=matrix.to_names, row_title="date 1", col_title="date 2")}
<h2>From&ndash;to matrix, area ({e(unit)})</h2>
{table(matrix.area.tolist(), lambda v: _num(v, digits), "from-to-area")}
<p>{e(matrix.area_note)}. Classes are matched by value: a pixel is unchanged when both maps give it the same class
value. Pixels that are nodata in either map are left out.</p>{notes}
{_run_table(extra)}
</body></html>
"""


def write_change_report(matrix: "ChangeMatrix", table_path: Optional[str] = None, html_path: Optional[str] = None,
                        json_path: Optional[str] = None, title: str = "Change statistics",
                        extra: Optional[Dict] = None) -> None:
    """The from–to matrix as CSV, JSON and/or HTML, each via temp file + move."""
    if table_path:
        write_text(table_path, change_csv(matrix))
    if json_path:
        write_text(json_path, json.dumps({"title": title, **matrix.to_dict(), "extra": extra or {}}, indent=2,
                                         ensure_ascii=False, default=str))
    if html_path:
        write_text(html_path, render_change_html(matrix, title, extra))

"""Accuracy, training and change reports: JSON for machines, one self-contained HTML page (no external assets) for
people.

Every picture is inline SVG (and quick-looks inline PNG, :mod:`.charts`), so a report needs neither matplotlib nor
network access and stays one file that can be mailed or archived.
"""
from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING, Dict, Optional

import numpy as np

from ..files import write_text
from . import charts

if TYPE_CHECKING:  # pragma: no cover
    from ..assessment.change import ChangeMatrix

_SUMMARY = [("overall_accuracy", "Overall accuracy (OA)"), ("average_accuracy", "Average accuracy (AA)"),
            ("kappa", "Cohen's kappa"), ("mean_f1", "Mean F1 (mF1)"), ("mean_iou", "Mean IoU (mIoU)")]


_STYLE = """<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; text-align: left; }
""" + charts.FIGURE_STYLE + "\n</style>"


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


def render_html(metrics: Dict, title: str, extra: Optional[Dict] = None, figures: str = "") -> str:
    """The accuracy page; ``figures`` (HTML) goes after the summary (the training report's own pictures)."""
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
{figures}
<h2>Per class (%)</h2>
<table><tr><th>class</th><th>reference</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th><th>IoU</th></tr>{cls}</table>
<h2>Confusion matrix (rows: reference, columns: prediction)</h2>
<table id="confusion-matrix"><tr><th></th>{head}<th>total</th></tr>{body}<tr><th>total</th>{totals}<td></td></tr></table>
{confusion_svg(cm, names) if cm else ""}
{accuracy_charts_html(metrics)}
{area_estimation_html(metrics.get("area_estimation"))}
{by_area_html(metrics.get("by_area"))}
{extra_html}
</body></html>
"""


def write_accuracy_report(metrics: Dict, html_path: Optional[str] = None, json_path: Optional[str] = None,
                          title: str = "Accuracy assessment", extra: Optional[Dict] = None, figures: str = "") -> None:
    """Write the metrics (from :mod:`engine.assessment.metrics`) as JSON and/or HTML, each via temp file + move."""
    if json_path:
        payload = {"title": title, **metrics, "extra": extra or {}}
        write_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    if html_path:
        write_text(html_path, render_html(metrics, title, extra, figures))


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


# ---------------------------------------------------------------------------------------------------------
# pictures of the accuracy, training and change reports (drawn by .charts)

UA_COLOUR, PA_COLOUR = "#1b9e77", "#d95f02"
MAPPED_COLOUR, ESTIMATED_COLOUR = "#9e9ac8", "#54278f"
IMPORTANCE_COLOUR = "#3182bd"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def accuracy_charts_html(metrics: Dict) -> str:
    """User's / producer's accuracy per class with their 95 % CIs and mapped vs estimated area ± 95 % CI (Olofsson
    et al. 2014) when the report has area estimates; else the sample's precision / recall, which have none."""
    est = metrics.get("area_estimation") or {}
    classes = est.get("classes") or []
    if classes:
        names = [str(c.get("name")) for c in classes]
        acc = charts.bar_chart(names, [
            charts.Series("user's accuracy", UA_COLOUR, [c.get("users_accuracy") for c in classes],
                          [c.get("users_accuracy_ci95") for c in classes]),
            charts.Series("producer's accuracy", PA_COLOUR, [c.get("producers_accuracy") for c in classes],
                          [c.get("producers_accuracy_ci95") for c in classes])],
            "user's and producer's accuracy per class", lower=0.0, upper=1.0)
        unit = est.get("unit", "pixels")
        area = charts.bar_chart(names, [
            charts.Series(f"mapped area ({unit})", MAPPED_COLOUR, [c.get("map_area") for c in classes]),
            charts.Series(f"estimated area ({unit})", ESTIMATED_COLOUR, [c.get("estimated_area") for c in classes],
                          [c.get("estimated_area_ci95") for c in classes])],
            "mapped and estimated area per class", digits=1, lower=0.0)
        return ('<h2 id="accuracy-charts">Accuracy and area per class</h2><div class="figures">'
                + _figure(acc, "User's and producer's accuracy, area-weighted (Olofsson et al. 2014), "
                               "whiskers: 95 % confidence intervals.")
                + _figure(area, f"Area counted on the map and estimated from the reference sample ({unit}), "
                                "whiskers: 95 % confidence interval of the estimate.") + "</div>")
    per = metrics.get("per_class") or []
    if not per:
        return ""
    chart = charts.bar_chart([str(p.get("name")) for p in per], [
        charts.Series("user's accuracy (precision)", UA_COLOUR, [p.get("precision") for p in per]),
        charts.Series("producer's accuracy (recall)", PA_COLOUR, [p.get("recall") for p in per])],
        "user's and producer's accuracy per class", lower=0.0, upper=1.0)
    return ('<h2 id="accuracy-charts">Accuracy per class</h2>'
            + _figure(chart, "User's and producer's accuracy on these samples (no area weighting, so no "
                             "confidence interval; '–': the class was never predicted or has no reference)."))


def smoothing_chart_html(spatial: Dict) -> str:
    """The smoothing cross-validation curve, chosen candidate in red: ``scores`` {label: {mean, se}} with a
    selection rule (newer models) or ``cv_accuracy`` {σ: accuracy} (older ones); '' when the model has neither."""
    if isinstance(spatial.get("selection"), dict):  # 0.3 models: the rule's record beside the regulariser
        spatial = {**spatial, **spatial["selection"]}
    if spatial.get("method") and spatial.get("method") != "gaussian":
        spatial = {k: v for k, v in spatial.items() if k != "sigma"}
    scores = spatial.get("scores") or {}
    if scores:
        labels = list(scores)
        means = [(v.get("mean") if isinstance(v, dict) else v) for v in scores.values()]
        errors = [(v.get("se") if isinstance(v, dict) else None) for v in scores.values()]
        chosen = spatial.get("chosen")
        criterion = spatial.get("criterion") or "cross-validation score"
        bits = [f"{spatial['method']} smoothing" if spatial.get("method") else "smoothing",
                f"{spatial.get('folds', '?')} folds" + (f" × {spatial['repeats']} repeats" if spatial.get("repeats") else ""),
                f"chosen: {chosen}" + (f" (σ = {spatial['sigma']:g})" if isinstance(spatial.get("sigma"), (int, float))
                                       else "")]
        if spatial.get("rule"):
            bits.append(f"rule: {spatial['rule']}")
        caption = f"{criterion} on held-out training labels per candidate, mean ± standard error; " + ", ".join(bits)
        svg = charts.point_chart(labels, means, errors, chosen, "smoothing cross-validation", criterion, "candidate")
    else:
        cv = spatial.get("cv_accuracy") or {}
        if not cv:
            return ""
        try:
            labels = sorted(cv, key=float)
        except (TypeError, ValueError):
            labels = list(cv)
        sigma = spatial.get("sigma")
        chosen = f"{sigma:g}" if isinstance(sigma, (int, float)) else None
        caption = (f"Accuracy at held-out training pixels per Gaussian σ (px), {spatial.get('folds', '?')}-fold "
                   f"cross-validation; chosen σ = {chosen}")
        svg = charts.point_chart(labels, [cv[k] for k in labels], None, chosen, "smoothing cross-validation",
                                 "CV accuracy", "σ (pixels)")
    return f'<h2 id="smoothing">Smoothing of the class probabilities</h2>{_figure(svg, caption)}'


def importance_chart_html(worth: Dict) -> str:
    """Permutation importance per input group as bars (held-out OA drop, percentage points, ± sd)."""
    imp = worth.get("importance") or {}
    if not imp:
        note = worth.get("note")
        return f'<h2 id="importance">What each input is worth</h2><p>{html.escape(note)}</p>' if note else ""
    order = sorted(imp, key=lambda k: -(imp[k] if isinstance(imp[k], (int, float)) else 0.0))
    std = worth.get("importance_std") or {}
    svg = charts.bar_chart(order, [charts.Series("OA drop", IMPORTANCE_COLOUR,
                                                 [100 * imp[k] if isinstance(imp[k], (int, float)) else None
                                                  for k in order],
                                                 [100 * std[k] if isinstance(std.get(k), (int, float)) else None
                                                  for k in order])],
                           "permutation importance", unit=" pp", digits=1)
    caption = ("Permutation importance: the drop in held-out overall accuracy (percentage points) when one input "
               f"group is shuffled, mean ± sd over {worth.get('folds', '?')} spatially blocked folds "
               f"({worth.get('block_px', '?')} px blocks) × {worth.get('repeats', '?')} repeats")
    if isinstance(worth.get("oa_mean"), (int, float)):
        caption += f"; blocked-CV OA {100 * worth['oa_mean']:.1f} %"
    if worth.get("not_used"):
        caption += f"; not read by the final head: {', '.join(map(str, worth['not_used']))}"
    return f'<h2 id="importance">What each input is worth</h2>{_figure(svg, caption + ".")}'


def training_figures_html(metadata: Dict, quicklook: str = "") -> str:
    """The training report's pictures: class legend, training points over the scene, importance, smoothing."""
    classes = metadata.get("classes") or []
    parts = []
    if classes:
        parts.append('<h2 id="classes">Classes</h2>' + charts.legend_html(
            [(f"{c.get('name')} ({c.get('value')})", c.get("color") or "#808080") for c in classes]))
    if quicklook:
        parts.append('<h2 id="quicklook">Training points over the scene</h2>' + quicklook)
    training = metadata.get("training") or {}
    parts.append(importance_chart_html(training.get("input_value") or {}))
    parts.append(smoothing_chart_html(training.get("spatial") or {}))
    return "\n".join(p for p in parts if p)


def training_quicklook(reader, rgb_bands, rows, cols, class_index, colours, max_points: int = 5000) -> str:
    """The scene (3 bands, decimated, 2–98 % stretch) with the training pixels as dots in their class colours."""
    bands, step = charts.decimated(reader, list(rgb_bands)[:3] if len(rgb_bands) >= 3 else [0, 1, 2])
    rows, cols, class_index = np.asarray(rows), np.asarray(cols), np.asarray(class_index)
    pick = np.arange(rows.size)
    if rows.size > max_points:
        pick = np.sort(np.random.default_rng(0).choice(rows.size, max_points, replace=False))
    dots = ((cols[pick] + 0.5) / step - 0.5, (rows[pick] + 0.5) / step - 0.5,
            [colours[int(k)] if 0 <= int(k) < len(colours) else "#808080" for k in class_index[pick]])
    svg = charts.image_svg(charts.stretched_rgb(bands), "training points over the scene", dots)
    shown = f"{pick.size:,} of {rows.size:,}" if pick.size < rows.size else f"{rows.size:,}"
    return _figure(svg, f"{shown} training pixels over bands {', '.join(str(b + 1) for b in rgb_bands[:3])} of the "
                        f"scene ({charts.step_text(step)}, 2–98 % stretch).")


def change_figures_html(first, second, rgb_bands, change_map: np.ndarray, colours, scores: np.ndarray,
                        threshold: Optional[float], score_name: str) -> str:
    """Quick-looks of both dates (one stretch for both, so a change in brightness shows), the change map, and the
    histogram of the sampled scores with the threshold."""
    b1, step = charts.decimated(first, rgb_bands)
    b2, _ = charts.decimated(second, rgb_bands)
    limits = charts.stretch_limits(b1, b2)
    band_text = ", ".join(str(int(b) % first.band_count + 1) for b in rgb_bands)
    looks = "".join([
        _figure(charts.image_svg(charts.stretched_rgb(b1, limits), "before"), f"BEFORE, bands {band_text}"),
        _figure(charts.image_svg(charts.stretched_rgb(b2, limits), "after"), "AFTER, the same bands and stretch"),
        _figure(charts.image_svg(charts.class_rgb(change_map, colours), "change map"),
                "change map: grey no change, red change, light grey nodata")])
    hist = charts.histogram_svg(scores, threshold, "score histogram", score_name)
    return (f'<h2 id="quicklooks">Quick-looks ({charts.step_text(step)})</h2><div class="figures">{looks}</div>'
            f'<h2 id="histogram">Score histogram</h2>'
            + _figure(hist, f"{score_name}: a random sample of {np.isfinite(np.asarray(scores)).sum():,} valid pixels; "
                            "bars at or above the threshold (dashed) in red; the top 0.5 % of the scores are counted "
                            "in the last bar."))


def render_detection_html(data: Dict, figures: str = "") -> str:
    """The change-detection report: the run's numbers as tables and ``figures`` (``change_figures_html``)."""
    e = html.escape
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>"
                   for k, v in data.items() if not isinstance(v, dict))
    subs = "".join(f"<h2>{e(str(k))}</h2><table>" + "".join(
        f"<tr><th>{e(str(a))}</th><td>{e(str(b))}</td></tr>" for a, b in v.items()) + "</table>"
        for k, v in data.items() if isinstance(v, dict))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Change detection</title>"
            f"{_STYLE}</head><body><h1>Change detection</h1><table>{rows}</table>{figures}{subs}</body></html>\n")

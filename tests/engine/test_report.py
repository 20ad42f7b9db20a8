import json
import re

import numpy as np

from engine.assessment.metrics import metrics_from_confusion
from engine.jobs.report import write_accuracy_report


def test_report_html_and_json(tmp_path):
    cm = np.array([[50, 3, 0], [4, 30, 1], [0, 0, 0]])
    m = metrics_from_confusion(cm, ["water", "forest", "urban <b>"])
    h, j = tmp_path / "r.html", tmp_path / "r.json"
    write_accuracy_report(m, str(h), str(j), title="Flood chip", extra={"points": "p.gpkg", "seed": 0})
    text = h.read_text()
    assert "<svg" in text and "Flood chip" in text and "urban &lt;b&gt;" in text
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", text)  # self-contained
    table = text.split('id="confusion-matrix"')[1].split("</table>")[0]
    cells = [int(v) for v in re.findall(r"<td>(\d+)</td>", table)]
    assert cells[:3] == [50, 3, 0] and cells[3:6] == [4, 30, 1]
    assert f"{100 * m['overall_accuracy']:.2f}" in text and "–" in text  # undefined precision of 'urban'
    data = json.loads(j.read_text())
    assert data["confusion_matrix"] == cm.tolist() and data["extra"]["points"] == "p.gpkg"
    assert len(list(tmp_path.iterdir())) == 2


def test_report_without_metrics_still_writes(tmp_path):
    write_accuracy_report({}, str(tmp_path / "e.html"), str(tmp_path / "e.json"), title="empty")
    assert "empty" in (tmp_path / "e.html").read_text() and "<svg" not in (tmp_path / "e.html").read_text()
    assert json.loads((tmp_path / "e.json").read_text())["title"] == "empty"


# --------------------------------------------------------------------------- the reports' pictures (issue 22)
import html
import io

from engine.data.readers import ArrayReader
from engine.jobs import charts
from engine.jobs.report import accuracy_charts_html, smoothing_chart_html, training_figures_html


def test_png_encoder_round_trips_through_a_real_decoder():
    Image = __import__("pytest").importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(charts.png_bytes(rgb))) as image:
        assert image.size == (11, 7) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), rgb)
    assert charts.png_data_uri(rgb).startswith("data:image/png;base64,iVBORw0KGgo")


class _RowCounting(ArrayReader):
    def __init__(self, array):
        super().__init__(array)
        self.windows = []

    def read(self, row, col, rows, cols):
        self.windows.append(rows)
        return super().read(row, col, rows, cols)


def test_quicklooks_are_decimated_one_row_at_a_time_and_streamed_maps_agree():
    scene = np.arange(3 * 50 * 37, dtype=np.float32).reshape(3, 50, 37)
    reader = _RowCounting(scene)
    bands, step = charts.decimated(reader, [2, 1, 0], max_px=20)
    assert step == 3 and np.array_equal(bands, scene[[2, 1, 0], ::3, ::3])
    assert set(reader.windows) == {1} and len(reader.windows) == 17  # never the whole raster
    sampler = charts.RowSampler(50, 37, max_px=20)
    for row in range(0, 50, 7):  # blocks that do not line up with the step
        sampler.add(row, scene[0, row:row + 7])
    assert np.array_equal(sampler.array(), scene[0, ::3, ::3])
    rgb = charts.stretched_rgb(np.where(scene[:, :4, :4] == 0, np.nan, scene[:, :4, :4]))
    assert rgb.dtype == np.uint8 and tuple(rgb[0, 0]) == charts.NODATA_RGB and rgb[3, 3].max() == 255


def _chosen(svg):
    return re.findall(r'class="chosen"[^>]*><title>([^:]+):', svg)


def test_smoothing_curve_new_and_old_formats_and_missing_keys():
    new = {"method": "guided", "criterion": "mean per-class recall", "chosen": "r=4, eps=0.01", "sigma": 2.0,
           "folds": 5, "repeats": 2, "rule": "one-standard-error",
           "scores": {"none": {"mean": 0.8, "se": 0.02}, "r=2, eps=0.01": {"mean": 0.84, "se": 0.03},
                      "r=4, eps=0.01": {"mean": 0.85, "se": 0.02}}}
    html_new = smoothing_chart_html(new)
    assert _chosen(html_new) == ["r=4, eps=0.01"] and html_new.count("<circle") == 3
    assert len(re.findall(r"<path d=\"M[^\"]+V", html_new)) == 3  # an error bar per candidate
    assert "one-standard-error" in html_new and "mean per-class recall" in html_new
    old = {"sigma": 1.0, "cv_accuracy": {"0": 0.9, "2": 0.91, "1": 0.93, "0.5": 0.92}, "folds": 5}
    html_old = smoothing_chart_html(old)
    assert _chosen(html_old) == ["1"]
    assert re.findall(r"<title>([\d.]+):", html_old) == ["0", "0.5", "1", "2"]  # in σ order
    assert smoothing_chart_html({}) == "" and smoothing_chart_html({"sigma": 0.0}) == ""
    assert _chosen(smoothing_chart_html({"scores": {"a": {"mean": 0.5}}, "chosen": "a"})) == ["a"]


def test_smoothing_curve_of_the_record_fit_writes():
    from engine.heads.selection import select_simplest
    from engine.tasks.landcover import RegulariserChoice
    from engine.tasks.spatial import Regulariser

    y = np.repeat(np.arange(3), 6)
    correct = np.stack([np.ones(y.size) * 0.5, np.ones(y.size)])
    sel = select_simplest(correct, y, ["none", "guided r 2 ε 0.01"])
    record = RegulariserChoice(Regulariser("guided", r=2, eps=0.01), sel.to_dict(), 5).to_dict()
    html_rec = smoothing_chart_html(record)
    assert _chosen(html_rec) == ["guided r 2 ε 0.01"] and html_rec.count("<circle") == 2
    assert "guided smoothing" in html_rec and "σ =" not in html_rec  # no Gaussian σ shown for the guided filter


def test_training_figures_legend_importance_quicklook():
    meta = {"classes": [{"value": 0, "name": "not water", "color": "#d8c48a"},
                        {"value": 1, "name": "water", "color": "#1f78b4"}],
            "training": {"input_value": {"importance": {"HSI bands": 0.12, "diffusion features (prgb)": -0.01},
                                         "importance_std": {"HSI bands": 0.02}, "folds": 5, "repeats": 3,
                                         "block_px": 32, "oa_mean": 0.9, "not_used": ["SAR bands"]},
                         "spatial": {"sigma": 0.0, "cv_accuracy": {"0": 0.9, "1": 0.8}, "folds": 5}}}
    scene = np.random.default_rng(1).random((4, 30, 40)).astype(np.float32)
    from engine.jobs.report import training_quicklook

    look = training_quicklook(ArrayReader(scene), [3, 2, 1], np.array([0, 29, 15]), np.array([0, 39, 20]),
                              np.array([0, 1, 1]), ["#d8c48a", "#1f78b4"])
    html_ = training_figures_html(meta, look)
    assert html_.count('class="swatch"') == 2 and "background:#1f78b4" in html_
    bars = re.findall(r"<title>([^<]+) — OA drop: ([-\d.]+) pp", html_)
    assert bars == [("HSI bands", "12.0"), ("diffusion features (prgb)", "-1.0")]  # sorted, in pp
    assert "not read by the final head: SAR bands" in html_
    dots = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="2.6" fill="(#\w+)"', html_)
    assert [d[2] for d in dots] == ["#d8c48a", "#1f78b4", "#1f78b4"]
    assert float(dots[1][0]) > 350 and float(dots[0][0]) < 10  # last column at the right edge, first at the left
    assert "<image" in html_ and "bands 4, 3, 2" in html_
    assert training_figures_html({}) == ""  # an old model file with none of it


def test_accuracy_charts_show_intervals_when_the_report_has_area_estimates():
    cm = np.array([[50, 3], [4, 30]])
    m = metrics_from_confusion(cm, ["water", "land"])
    plain = accuracy_charts_html(m)
    assert plain.count("<rect") >= 4 and "<path" not in plain  # no interval without area weights
    m["area_estimation"] = {"unit": "ha", "classes": [
        {"name": "water", "map_area": 10.0, "estimated_area": 11.0, "estimated_area_ci95": 1.5,
         "users_accuracy": 0.9, "users_accuracy_ci95": 0.05, "producers_accuracy": 0.8, "producers_accuracy_ci95": 0.1},
        {"name": "land", "map_area": 30.0, "estimated_area": 29.0, "estimated_area_ci95": None,
         "users_accuracy": None, "users_accuracy_ci95": None, "producers_accuracy": 0.95, "producers_accuracy_ci95": 0.02}]}
    charts_ = html.unescape(accuracy_charts_html(m))
    assert charts_.count("<path") == 4  # UA and PA of water, PA of land, estimated area of water
    assert "user's accuracy: 0.900 ± 0.050" in charts_ and "estimated area (ha): 11.0 ± 1.5" in charts_
    assert ">–</text>" in charts_  # the undefined user's accuracy of 'land'

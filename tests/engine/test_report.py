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

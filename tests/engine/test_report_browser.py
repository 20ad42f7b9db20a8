"""The three HTML reports as a person sees them: rendered by headless Chromium (Debian's package), their charts
are in the laid-out page and on the screenshot in their colours, and nothing is fetched from the network."""
from __future__ import annotations

import importlib.util
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.assessment.area import stratified_estimates
from engine.assessment.metrics import metrics_from_confusion
from engine.data.readers import ArrayReader
from engine.jobs import report as rep

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("report_screenshots", REPO / "scripts" / "report_screenshots.py")
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

pytestmark = [pytest.mark.skipif(not shots.chromium(), reason="chromium is not installed (make setup installs it)"),
              pytest.mark.slow]
Image = pytest.importorskip("PIL.Image")
# Chromium's own services, contacted whatever the page (time, updates, sign-in); a page's request goes elsewhere
CHROMIUM_HOSTS = ("google.com", "googleapis.com", "gvt1.com")


class _Proxy:
    """A local HTTP proxy that answers nothing and records the host of every request sent through it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.hosts = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(512).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    continue
                if " " not in line:  # a speculative connection closed before any request
                    continue
                target = line.split(" ")[1]
                self.hosts.append(re.sub(r"^\w+://", "", target).split("/")[0].split(":")[0])

    def page_requests(self):
        return [h for h in self.hosts if not any(h == d or h.endswith("." + d) for d in CHROMIUM_HOSTS)]


def _external_refs(text):
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?(?:https?:|//)|@import""", text)


def _reports(tmp_path):
    """The training, accuracy and change reports written by the report code from small scenes."""
    from engine.jobs import _write_training_report

    rng = np.random.default_rng(0)
    scene = np.stack([np.linspace(0, 1, 80)[None, :].repeat(60, 0) * (b + 1) for b in range(4)]).astype(np.float32)
    classes = [{"value": 1, "name": "water", "color": "#1f78b4"}, {"value": 2, "name": "crops", "color": "#33a02c"}]
    meta = {"classes": classes, "head": {"kind": "forest"}, "labels": {"used": 40},
            "training": {"input_value": {"importance": {"HSI bands": 0.15, "diffusion features (prgb)": 0.04},
                                         "importance_std": {"HSI bands": 0.02, "diffusion features (prgb)": 0.01},
                                         "folds": 5, "repeats": 3, "block_px": 32, "oa_mean": 0.91,
                                         "oa_std": 0.03, "oa_pooled": 0.9, "trees": 50},
                         "spatial": {"method": "guided", "criterion": "mean per-class recall", "chosen": "r=2",
                                     "sigma": 1.0, "folds": 5, "repeats": 2, "rule": "one-standard-error",
                                     "scores": {"none": {"mean": 0.86, "se": 0.02}, "r=1": {"mean": 0.88, "se": 0.02},
                                                "r=2": {"mean": 0.9, "se": 0.015}, "r=4": {"mean": 0.9, "se": 0.02}}}}}
    samples = type("S", (), {"rows": rng.integers(0, 60, 40), "cols": rng.integers(0, 80, 40),
                             "class_index": rng.integers(0, 2, 40),
                             "classes": [type("C", (), {"color": c["color"]})() for c in classes]})()
    model = type("M", (), {"representations": type("R", (), {"rgb_bands": [2, 1, 0]})()})()
    val = metrics_from_confusion(np.array([[18, 2], [3, 17]]), ["class 0", "class 1"])
    training = tmp_path / "training.html"
    _write_training_report(str(training), val, meta, scene=(ArrayReader(scene), samples, model))

    cm = np.array([[400, 30], [20, 150]])
    metrics = metrics_from_confusion(cm, ["water", "crops"])
    metrics["area_estimation"] = stratified_estimates(cm.T, np.array([5000.0, 2000.0]), [1, 2], ["water", "crops"],
                                                      unit="ha").to_dict()
    accuracy = tmp_path / "accuracy.html"
    rep.write_accuracy_report(metrics, html_path=str(accuracy))

    change_map = np.zeros((40, 60), np.int64)
    change_map[10:20, 20:40] = 1
    change_map[:2] = -1
    t1 = scene[:, :40, :60]
    t2 = t1.copy()
    t2[:, 10:20, 20:40] += 2
    figures = rep.change_figures_html(ArrayReader(t1), ArrayReader(t2), [2, 1, 0], change_map,
                                      ["#d9d9d9", "#e31a1c"], rng.gamma(2.0, 1.0, 5000), 4.0, "change score")
    change = tmp_path / "change.html"
    change.write_text(rep.render_detection_html({"mode": "unsupervised", "threshold": 4.0,
                                                 "validation": {"f1": 0.5}}, figures), encoding="utf-8")
    return {"training": training, "accuracy": accuracy, "change": change}


# per report: ids of sections that must be laid out, and chart colours that must be on the screenshot
EXPECT = {
    "training": (["classes", "quicklook", "importance", "smoothing"],
                 [rep.IMPORTANCE_COLOUR, "#e31a1c", "#1f78b4", "#33a02c"]),
    "accuracy": (["accuracy-charts", "area-estimation"],
                 [rep.UA_COLOUR, rep.PA_COLOUR, rep.MAPPED_COLOUR, rep.ESTIMATED_COLOUR]),
    "change": (["quicklooks", "histogram"], ["#e31a1c", "#7a93b8", "#d9d9d9"]),
}


def _pixels(png, colour):
    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - want).max(axis=1) <= 2).sum())


def test_reports_render_in_chromium_with_their_charts_and_fetch_nothing(tmp_path):
    pages = _reports(tmp_path)
    proxy = _Proxy()
    for name, html in pages.items():
        text = html.read_text(encoding="utf-8")
        assert not _external_refs(text), (name, _external_refs(text))
        sections, colours = EXPECT[name]
        dom = shots.dump_dom(html, proxy=proxy.url)
        for section in sections:
            assert f'id="{section}"' in dom, (name, section)
        assert dom.count("<svg") >= len(sections), name
        if name != "accuracy":
            assert dom.count('<image') >= (3 if name == "change" else 1) and "data:image/png;base64," in dom
        png = shots.render(html, tmp_path / f"{name}.png", width=1100, height=2600, proxy=proxy.url)
        image = np.asarray(Image.open(png).convert("L"))
        assert image.std() > 10, f"{name}: the screenshot is blank"
        for colour in colours:
            assert _pixels(png, colour) >= 40, (name, colour, _pixels(png, colour))
    assert proxy.page_requests() == [], proxy.hosts


def test_the_network_check_sees_a_page_that_fetches(tmp_path):
    """The detector above can fail: a page with an external image reaches the proxy and is caught statically."""
    page = tmp_path / "fetching.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://reports.example.invalid/x.png"></body></html>')
    assert _external_refs(page.read_text())
    proxy = _Proxy()
    shots.dump_dom(page, proxy=proxy.url)
    assert "reports.example.invalid" in proxy.page_requests()

#!/usr/bin/env python3
"""Take the README screenshots from the real QGIS desktop under a virtual display (Xvfb); the reports' screenshots
are scripts/report_screenshots.py's (headless Chromium).

    .venv/bin/python scripts/screenshots.py            # writes docs/screenshots/*.png

Needs `xvfb-run` and the demo outputs (`make demo` → demo_output/). The plugin is enabled in a throw-away
profile (QGIS_CUSTOM_CONFIG_PATH + QGIS_PLUGINPATH), so the user's own QGIS profile is never touched.
The same file runs twice: as the driver (plain Python, stdlib only), and inside QGIS via `qgis --code`
(recognised by DIFFLC_SHOTS_INSIDE), where it loads the layers, opens the dialog and grabs the widgets.
"""
from __future__ import annotations

import os
import sys

WIDTH, HEIGHT = 1280, 800
ALGORITHM = "difflc:trainandclassify"


# --------------------------------------------------------------------------------------------- driver
def _driver() -> int:
    import argparse
    import json
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=repo / "demo_output", help="demo outputs (make demo)")
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "sen1floods11_spain_7370579",
                        help="folder with Spain_7370579_S2Hand.tif and Spain_7370579_S1Hand.tif")
    parser.add_argument("--out", type=Path, default=repo / "docs" / "screenshots")
    parser.add_argument("--timeout", type=int, default=240)
    args = parser.parse_args()

    needed = [args.data / "Spain_7370579_S2Hand.tif", args.data / "Spain_7370579_S1Hand.tif",
              args.demo / "landcover.tif", args.demo / "train_points.gpkg"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print("missing inputs (run `make demo` first?):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        print("needs `xvfb-run` and `qgis` on PATH (apt-get install xvfb qgis)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="difflc-shots-") as tmp:
        tmp = Path(tmp)
        plugins = tmp / "plugins"
        plugins.mkdir()
        (plugins / "diffusion_landcover").symlink_to(repo, target_is_directory=True)
        ini = tmp / "profile" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True)
        # enable the plugin; no version check or news feed (3.22 has no tips dialog; --noversioncheck too)
        ini.write_text("[PythonPlugins]\ndiffusion_landcover=true\n\n"
                       "[qgis]\nallowVersionCheck=false\n\n"
                       "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n")
        job = {"s2": str(needed[0]), "s1": str(needed[1]), "landcover": str(needed[2]),
               "points": str(needed[3]), "out": str(args.out),
               "result": str(tmp / "result.json"), "width": WIDTH, "height": HEIGHT}
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp / "profile"), QGIS_PLUGINPATH=str(plugins),
                   DIFFLC_SHOTS_INSIDE=str(tmp / "job.json"), LC_ALL="C.UTF-8", LANG="C.UTF-8",
                   XDG_RUNTIME_DIR=str(tmp / "runtime"))
        (tmp / "runtime").mkdir(mode=0o700)
        venv_bin = repo / ".venv" / "bin"
        # the embedded Python takes its prefix from the first python3 on PATH: the venv's (torch), never pyenv's
        env["PATH"] = f"{venv_bin if venv_bin.is_dir() else '/usr/bin'}:/usr/bin:{os.environ.get('PATH', '')}"
        env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display
        cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {WIDTH}x{HEIGHT}x24 -dpi 96",
               "qgis", "--nologo", "--noversioncheck", "--code", str(Path(__file__).resolve())]
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=args.timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            print(f"QGIS did not finish within {args.timeout} s", file=sys.stderr)
            return 1
        result = tmp / "result.json"
        if not result.is_file():
            print(f"QGIS exited {proc.returncode} without a result:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        out = json.loads(result.read_text())
    for name in out.get("written", []):
        path = args.out / name
        _shrink(path)
        print(f"{path}  {path.stat().st_size // 1024} KB")
    for error in out.get("errors", []):
        print(f"FAILED: {error}", file=sys.stderr)
    return 1 if out.get("errors") else 0


def _shrink(path, limit: int = 400 * 1024) -> None:
    """Keep README images small: a PNG over `limit` becomes a 256-colour palette PNG (needs Pillow)."""
    if path.stat().st_size <= limit:
        return
    try:
        from PIL import Image
    except ImportError:
        print(f"{path} is over {limit // 1024} KB and Pillow is missing to shrink it", file=sys.stderr)
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


# ------------------------------------------------------------------------------------------ inside QGIS
def _inside(job_path: str) -> None:
    import json
    import traceback
    from pathlib import Path

    import qgis.utils
    from qgis.core import (QgsApplication, QgsContrastEnhancement, QgsMultiBandColorRenderer, QgsProject,
                           QgsRasterLayer, QgsRasterMinMaxOrigin, QgsVectorLayer)
    from qgis.PyQt.QtCore import QEventLoop, QTimer, Qt
    from qgis.PyQt.QtGui import QImage
    from qgis.PyQt.QtWidgets import QDockWidget

    job = json.loads(Path(job_path).read_text())
    out_dir = Path(job["out"])
    state = {"written": [], "errors": [], "keep": []}
    iface = qgis.utils.iface

    def pump(ms: int) -> None:
        """Let Qt paint, lay out and finish background rendering for `ms` milliseconds."""
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def save(image: QImage, name: str) -> None:
        path = out_dir / name
        if image.isNull() or not image.save(str(path), "PNG"):
            raise RuntimeError(f"could not write {path}")
        state["written"].append(name)

    def load_layers() -> dict:
        project = QgsProject.instance()
        s2 = QgsRasterLayer(job["s2"], "S2 chip (Sen1Floods11 Spain)")
        s1 = QgsRasterLayer(job["s1"], "S1 chip (VV/VH)")
        points = QgsVectorLayer(f"{job['points']}|layername=points", "train_points")
        landcover = QgsRasterLayer(job["landcover"], "landcover")
        for layer in (s2, s1, points, landcover):
            if not layer.isValid():
                raise RuntimeError(f"layer {layer.name()} ({layer.source()}) is not valid")
        # true colour: Sentinel-2 B4/B3/B2 are bands 4/3/2, stretched 2–98 % per band
        s2.setRenderer(QgsMultiBandColorRenderer(s2.dataProvider(), 4, 3, 2))
        s2.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut)
        qml = str(Path(job["landcover"]).with_suffix(".qml"))
        message, ok = landcover.loadNamedStyle(qml)
        if not ok:
            raise RuntimeError(f"style {qml}: {message}")
        landcover.setOpacity(0.7)  # let the true-colour backdrop show through
        for layer in (s2, s1, points, landcover):  # added bottom → top
            project.addMapLayer(layer)
        root = project.layerTreeRoot()
        for layer in (s1, points):  # inputs listed, not drawn
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
        project.setCrs(s2.crs())
        return {"s2": s2, "s1": s1, "points": points, "landcover": landcover}

    def dialog_shot(layers: dict) -> None:
        import processing

        params = {"HSI": layers["s2"].id(), "SAR": layers["s1"].id(), "LABELS": layers["points"].id(),
                  "CLASS_FIELD": "class_id"}
        dialog = processing.createAlgorithmDialog(ALGORITHM, params)
        if dialog is None:
            raise RuntimeError(f"{ALGORITHM} is not registered (plugin not loaded?)")
        state["keep"].append(dialog)
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.resize(1040, 760)
        dialog.show()
        dialog.raise_()
        pump(1500)
        save(dialog.grab().toImage(), "trainandclassify_dialog.png")
        dialog.close()

    def map_shot(layers: dict) -> None:
        window = iface.mainWindow()
        for dock in window.findChildren(QDockWidget):  # just the Layers panel beside the map
            if dock.objectName() != "Layers":
                dock.hide()
        window.resize(job["width"], job["height"])
        root = QgsProject.instance().layerTreeRoot()
        view = iface.layerTreeView()
        for key, expanded in (("landcover", True), ("s2", False), ("s1", False)):  # class legend in view
            node = root.findLayer(layers[key].id())
            node.setExpanded(not expanded)  # toggle: the view follows changes only
            node.setExpanded(expanded)
            view.setExpanded(view.node2index(node), expanded)
        canvas = iface.mapCanvas()
        iface.setActiveLayer(layers["landcover"])
        canvas.setExtent(layers["landcover"].extent())
        canvas.zoomByFactor(1.05)
        canvas.refresh()
        pump(1000)
        canvas.waitWhileRendering()
        pump(1000)
        save(window.grab().toImage(), "result_map.png")

    def run() -> None:
        try:
            layers = load_layers()
        except Exception:  # nothing else can work
            state["errors"].append(traceback.format_exc())
            layers = None
        if layers is not None:
            for shot in (dialog_shot, map_shot):
                try:
                    shot(layers)
                except Exception:
                    state["errors"].append(f"{shot.__name__}: {traceback.format_exc()}")
        Path(job["result"]).write_text(json.dumps({"written": state["written"], "errors": state["errors"]}))
        QgsApplication.exit(0)

    QTimer.singleShot(1500, run)


if os.environ.get("DIFFLC_SHOTS_INSIDE") and "qgis.utils" in sys.modules:
    _inside(os.environ["DIFFLC_SHOTS_INSIDE"])
elif __name__ == "__main__":
    sys.exit(_driver())

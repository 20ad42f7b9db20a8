#!/usr/bin/env python3
"""The plugin as a QGIS desktop user gets it: the packaged ZIP installed into a clean profile, the real QGIS desktop
under Xvfb, the provider in the Processing Toolbox, the one-step algorithm run on the demo chip and its map added
with its style; a screenshot of the window.

    make desktop-check                                   # make package, then this script on dist/diffusion_landcover.zip
    .venv/bin/python scripts/desktop_check.py --zip Z    # the same on any ZIP
    .venv/bin/python scripts/desktop_check.py --quick    # install + start + Toolbox only (no run, no screenshot)

The ZIP is unpacked the way the Plugin Manager's *Install from ZIP* does (into <profile>/python/plugins/) and
enabled in the profile's QGIS3.ini ([PythonPlugins] diffusion_landcover=true); QGIS starts with
`--profiles-path <tmp> --profile clean`, so neither the user's profile nor this checkout is used by QGIS. The
same file runs inside QGIS via `--code` (recognised by DIFFLC_DESKTOP_JOB), writes what it found to a JSON file and
quits. Prints one line per check; exits 1 when any fails, 2 when QGIS, xvfb-run or the data is missing.
"""
from __future__ import annotations

import os
import sys

PLUGIN = "diffusion_landcover"
PROVIDER = "difflc"
ALGORITHM = "difflc:trainandclassify"
WIDTH, HEIGHT = 1280, 800


# --------------------------------------------------------------------------------------------- driver
def _driver() -> int:
    import argparse
    import json
    import shutil
    import subprocess
    import tempfile
    import time
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, help="the plugin ZIP (default: build one with scripts/package.py)")
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "sen1floods11_spain_7370579")
    parser.add_argument("--screenshot", type=Path, default=repo / "docs" / "screenshots" / "desktop.png")
    parser.add_argument("--quick", action="store_true", help="install, start and check the Toolbox only")
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    t0 = time.time()

    def say(text: str) -> None:
        print(f"[desktop-check {time.time() - t0:5.1f} s] {text}", flush=True)

    if shutil.which("xvfb-run") is None or shutil.which("qgis") is None:
        print("desktop-check: needs `qgis` and `xvfb-run` (make setup installs both)", file=sys.stderr)
        return 2
    chip = {k: args.data / f"Spain_7370579_{k}.tif" for k in ("S2Hand", "S1Hand", "LabelHand")}
    if not args.quick and not all(p.is_file() for p in chip.values()):
        print(f"desktop-check: the demo chip is not in {args.data} (--data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="difflc-desktop-") as tmp:
        tmp = Path(tmp)
        archive = args.zip
        if archive is None:
            archive = tmp / f"{PLUGIN}.zip"
            subprocess.run([sys.executable, str(repo / "scripts" / "package.py"), "--output", str(archive)],
                           check=True, capture_output=True)
        profile = tmp / "profiles" / "clean"
        plugins = profile / "python" / "plugins"
        plugins.mkdir(parents=True)
        with zipfile.ZipFile(archive) as z:  # what Install from ZIP does: unpack into the profile's plugin folder
            z.extractall(plugins)
        if not (plugins / PLUGIN / "metadata.txt").is_file():
            print(f"FAILED: {archive} holds no {PLUGIN}/metadata.txt", file=sys.stderr)
            return 1
        say(f"installed {archive.name} ({archive.stat().st_size // 1024} KiB) into {plugins}")
        ini = profile / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True)
        ini.write_text(f"[PythonPlugins]\n{PLUGIN}=true\nprocessing=true\n\n[qgis]\nallowVersionCheck=false\n\n"
                       "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n")
        job = {"result": str(tmp / "result.json"), "plugins": str(plugins), "quick": args.quick,
               "screenshot": str(tmp / "desktop.png"), "width": WIDTH, "height": HEIGHT}
        if not args.quick:
            inputs = tmp / "inputs"  # copies: QGIS writes .aux.xml statistics beside the rasters it loads
            inputs.mkdir()
            for path in chip.values():
                shutil.copy(path, inputs / path.name)
            points = tmp / "train_points.gpkg"
            subprocess.run([sys.executable, str(repo / "scripts" / "make_demo_points.py"), "--labels",
                            str(inputs / chip["LabelHand"].name), "--fraction", "0.005", "--seed", "0", "--ignore",
                            "-1", "--names", "0=not water #d8c48a,1=water #1f78b4", "--out", str(points)],
                           check=True, capture_output=True)
            job.update(s2=str(inputs / chip["S2Hand"].name), s1=str(inputs / chip["S1Hand"].name),
                       points=str(points), output=str(tmp / "out" / "landcover.tif"))
            (tmp / "out").mkdir()
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, DIFFLC_DESKTOP_JOB=str(tmp / "job.json"), LC_ALL="C.UTF-8", LANG="C.UTF-8",
                   XDG_RUNTIME_DIR=str(tmp / "runtime"), HOME=str(tmp / "home"))
        (tmp / "runtime").mkdir(mode=0o700)
        (tmp / "home").mkdir()
        for key in ("QGIS_PLUGINPATH", "QGIS_CUSTOM_CONFIG_PATH", "QT_QPA_PLATFORM"):  # the profile alone decides
            env.pop(key, None)
        venv_bin = repo / ".venv" / "bin"
        # the embedded Python takes its prefix from the first python3 on PATH: the venv's (torch), never pyenv's
        env["PATH"] = f"{venv_bin if venv_bin.is_dir() else '/usr/bin'}:/usr/bin:{os.environ.get('PATH', '')}"
        cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {WIDTH}x{HEIGHT}x24 -dpi 96", "qgis", "--profiles-path",
               str(tmp), "--profile", "clean", "--nologo", "--noversioncheck", "--code", str(Path(__file__).resolve())]
        say("starting QGIS: " + " ".join(cmd[4:]))
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=args.timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            print(f"FAILED: QGIS did not finish within {args.timeout} s", file=sys.stderr)
            return 1
        result = tmp / "result.json"
        if not result.is_file():
            print(f"FAILED: QGIS exited {proc.returncode} without a result:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        out = json.loads(result.read_text())
        say(f"QGIS {out.get('qgis', '?')} exited {proc.returncode}")
        failed = 0
        for name, ok, detail in out.get("checks", []):
            print(f"  {'ok    ' if ok else 'FAILED'}  {name}" + (f": {detail}" if detail else ""))
            failed += not ok
        if out.get("error"):
            print(f"FAILED: {out['error']}", file=sys.stderr)
            failed += 1
        if not args.quick and (tmp / "desktop.png").is_file() and not failed:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / "desktop.png", args.screenshot)
            sys.path.insert(0, str(repo / "scripts"))
            from screenshots import _shrink  # the one README-image size rule

            _shrink(args.screenshot)
            say(f"screenshot {args.screenshot} ({args.screenshot.stat().st_size // 1024} KB)")
        total = len(out.get("checks", []))
        say(f"FAILED: {failed} problem(s), {total} checks made" if failed else f"all {total} checks passed")
        return 1 if failed else 0


# ------------------------------------------------------------------------------------------ inside QGIS
def _inside(job_path: str) -> None:
    import json
    import time
    import traceback
    from pathlib import Path

    import qgis.utils
    from qgis.core import (Qgis, QgsApplication, QgsContrastEnhancement, QgsMultiBandColorRenderer,
                           QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsRasterMinMaxOrigin)
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    job = json.loads(Path(job_path).read_text())
    checks = []
    out = {"checks": checks, "qgis": Qgis.QGIS_VERSION}
    iface = qgis.utils.iface

    def check(name: str, ok, detail="") -> bool:
        checks.append((name, bool(ok), str(detail)))
        return bool(ok)

    def pump(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def toolbox_algorithms(toolbox) -> list:
        from qgis.PyQt.QtCore import QModelIndex

        tree = toolbox.algorithmTree
        model, found, stack = tree.model(), [], [QModelIndex()]
        while stack:
            parent = stack.pop()
            for r in range(model.rowCount(parent)):
                index = model.index(r, 0, parent)
                alg = tree.algorithmForIndex(index)
                if alg is not None:
                    found.append(alg.id())
                    if alg.provider() is not None and alg.provider().id() == PROVIDER:  # open it for the screenshot
                        parent_index = index.parent()
                        while parent_index.isValid():
                            tree.setExpanded(parent_index, True)
                            parent_index = parent_index.parent()
                stack.append(index)
        return found

    def run() -> None:
        try:
            plugin = qgis.utils.plugins.get(PLUGIN)
            where = os.path.realpath(getattr(sys.modules.get(PLUGIN), "__file__", "") or "")
            check("plugin loaded from the installed ZIP", plugin is not None and
                  where.startswith(os.path.realpath(job["plugins"])), where)
            registry = QgsApplication.processingRegistry()
            provider = registry.providerById(PROVIDER)
            ids = sorted(a.id() for a in provider.algorithms()) if provider else []
            check("provider 'difflc' registered", provider is not None, f"{len(ids)} algorithms")
            processing_plugin = qgis.utils.plugins.get("processing")
            toolbox = getattr(processing_plugin, "toolbox", None)
            if check("Processing Toolbox present", toolbox is not None):
                toolbox.show()
                pump(300)
                listed = set(toolbox_algorithms(toolbox))
                missing = [a for a in ids if a not in listed]
                check("every difflc algorithm listed in the Toolbox", ids and not missing,
                      f"missing {missing}" if missing else ", ".join(a.split(":")[1] for a in ids))
            check(f"{ALGORITHM} registered", ALGORITHM in ids)
            if not job["quick"] and ALGORITHM in ids:
                run_algorithm()
        except Exception:
            out["error"] = traceback.format_exc()
        Path(job["result"]).write_text(json.dumps(out))
        QgsApplication.exit(0)

    def run_algorithm() -> None:
        import processing

        project = QgsProject.instance()
        s2 = QgsRasterLayer(job["s2"], "S2 chip (Sen1Floods11 Spain)")
        s2.setRenderer(QgsMultiBandColorRenderer(s2.dataProvider(), 4, 3, 2))  # B4/B3/B2 true colour
        s2.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut)
        project.addMapLayer(s2)
        project.setCrs(s2.crs())

        class Feedback(QgsProcessingFeedback):
            lines = []

            def pushInfo(self, info):
                self.lines.append(info)

        feedback = Feedback()
        params = {"HSI": job["s2"], "SAR": job["s1"], "LABELS": job["points"], "CLASS_FIELD": "class_id", "SEED": 0,
                  "OUTPUT": job["output"]}
        t = time.time()
        result = processing.runAndLoadResults(ALGORITHM, params, feedback=feedback)  # as the dialog loads outputs
        seconds = time.time() - t
        check(f"{ALGORITHM} ran on the demo chip", result and Path(result.get("OUTPUT", "")).is_file(),
              f"{seconds:.1f} s, {len(feedback.lines)} log lines")
        layers = [lay for lay in project.mapLayers().values()
                  if os.path.realpath(lay.source()) == os.path.realpath(job["output"])]
        if check("its map added to the project", len(layers) == 1, [lay.name() for lay in layers]):
            layer = layers[0]
            renderer = layer.renderer()
            names = [c.label for c in renderer.classes()] if renderer.type() == "paletted" else []
            check("the map styled from its .qml (paletted, class names)", names == ["not water", "water"],
                  f"{renderer.type()}: {names}")
            layer.setOpacity(0.75)
            window = iface.mainWindow()
            from qgis.PyQt.QtWidgets import QDockWidget

            for dock in window.findChildren(QDockWidget):  # the Layers panel and the Toolbox beside the map
                if dock.objectName() not in ("Layers", "ProcessingToolbox"):
                    dock.hide()
            root = project.layerTreeRoot()
            for lay, expanded in ((layer, True), (s2, False)):  # the class legend in view
                node = root.findLayer(lay.id())
                node.setExpanded(not expanded)  # toggled: the view follows changes only
                node.setExpanded(expanded)
            window.resize(job["width"], job["height"])
            canvas = iface.mapCanvas()
            canvas.setExtent(layer.extent())
            canvas.zoomByFactor(1.05)
            canvas.refresh()
            pump(1000)
            canvas.waitWhileRendering()
            pump(800)
            image = window.grab().toImage()
            check("screenshot of the window", not image.isNull() and image.save(job["screenshot"], "PNG"),
                  f"{image.width()}x{image.height()}")

    QTimer.singleShot(1500, run)


if os.environ.get("DIFFLC_DESKTOP_JOB") and "qgis.utils" in sys.modules:
    _inside(os.environ["DIFFLC_DESKTOP_JOB"])
elif __name__ == "__main__":
    sys.exit(_driver())

#!/usr/bin/env python3
"""Screenshots of the three HTML reports, rendered by headless Chromium from real runs on the bundled data.

    .venv/bin/python scripts/report_screenshots.py           # writes docs/screenshots/{training,accuracy,change}_report.png
    .venv/bin/python scripts/report_screenshots.py --demo demo_output   # reuse `make demo`'s reports

Runs `scripts/demo.sh` (training + accuracy reports on the Sen1Floods11 chip) and `difflc:detectchanges` on the OSCD
Rennes pair through `scripts/qgis_process`, into a temporary folder (the bundled data is copied first), then renders
each report with `chromium --headless` behind a proxy that refuses every connection. Needs chromium (Debian's
package, `make setup` installs it) and Pillow (a dev dependency) to trim and shrink the PNGs. The functions
`chromium`, `render` and `dump_dom` are also what `tests/engine/test_report_browser.py` renders with.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# what keeps headless Chromium from reaching out on its own (updates, sign-in, field trials) while it renders
QUIET = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--mute-audio", "--force-device-scale-factor=1"]


def chromium() -> str:
    """Path of the Chromium binary, or '' when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return ""


def _run(html: Path, extra, proxy: str = "http://127.0.0.1:9", timeout: int = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="difflc-chromium-") as profile:
        cmd = [chromium(), *QUIET, f"--user-data-dir={profile}", f"--proxy-server={proxy}",
               "--proxy-bypass-list=<-loopback>", *extra, Path(html).resolve().as_uri()]
        env = dict(os.environ, HOME=profile)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def render(html: Path, png: Path, width: int = 1100, height: int = 3000, proxy: str = "http://127.0.0.1:9") -> Path:
    """Screenshot of ``html`` at ``width``×``height`` (CSS px) into ``png``; every connection goes to ``proxy``
    (a closed port by default: nothing can be fetched)."""
    proc = _run(html, [f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}"], proxy)
    if proc.returncode != 0 or not Path(png).is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}) on {html}:\n{proc.stderr[-2000:]}")
    return Path(png)


def dump_dom(html: Path, proxy: str = "http://127.0.0.1:9") -> str:
    """The DOM after Chromium parsed and laid out ``html``."""
    proc = _run(html, ["--dump-dom"], proxy)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}) on {html}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def trim(png: Path, margin: int = 24) -> None:
    """Cut the white space below the page's content (the window is taller than most reports)."""
    from PIL import Image, ImageChops

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box:
        rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + margin))).save(png, optimize=True)


def _shrink(png: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from screenshots import _shrink as shrink  # the one README-image size rule

    shrink(png)


def _demo(out: Path) -> None:
    env = dict(os.environ, DEMO_OUT=str(out))
    subprocess.run([str(REPO / "scripts" / "demo.sh")], check=True, env=env)


def _change(work: Path) -> Path:
    inputs = work / "change_inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name in ("rennes_t1.tif", "rennes_t2.tif"):
        shutil.copy(DATA / "change" / name, inputs / name)
    report = work / "rennes_change.html"
    subprocess.run([str(REPO / "scripts" / "qgis_process"), "run", "difflc:detectchanges", "--",
                    f"BEFORE={inputs / 'rennes_t1.tif'}", f"AFTER={inputs / 'rennes_t2.tif'}",
                    f"OUTPUT={work / 'rennes_change.tif'}", f"SCORE={work / 'rennes_score.tif'}",
                    f"REPORT={report}"], check=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="reuse this `make demo` output folder instead of running the demo")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    if not chromium():
        print("needs chromium (apt-get install --no-install-recommends chromium; make setup does)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="difflc-reports-") as tmp:
        work = Path(tmp)
        demo = args.demo
        if demo is None:
            demo = work / "demo"
            _demo(demo)
        pages = {"training_report.png": demo / "training_report.html", "accuracy_report.png": demo / "accuracy.html",
                 "change_report.png": _change(work)}
        for name, html in pages.items():
            if not html.is_file():
                print(f"missing {html} (run `make demo`, or leave out --demo)", file=sys.stderr)
                return 1
            png = render(html, args.out / name, width=args.width, height=4200)
            trim(png)
            _shrink(png)
            print(f"{png}  {png.stat().st_size // 1024} KB  (from {html.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build dist/diffusion_landcover.zip for "Install from ZIP" / the plugin repository.

An allow-list (not a deny-list) of what QGIS needs, so tests, benchmarks, docs, virtual environments and
caches can never leak into the ZIP. Standard library only: runs with any python3.
"""
from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path

PACKAGE = "diffusion_landcover"
TOP_FILES = ["metadata.txt", "__init__.py", "README.md", "LICENSE", "LICENSE.txt", "CHANGELOG.md"]
TOP_DIRS = ["plugin", "algorithms", "engine", "resources", "requirements"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", "~")


def files_to_pack(repo: Path):
    for name in TOP_FILES:
        if (repo / name).is_file():
            yield repo / name
    for top in TOP_DIRS:
        for root, dirs, files in os.walk(repo / top):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and not name.endswith(SKIP_SUFFIXES):
                    yield Path(root) / name


def build(repo: Path, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_to_pack(repo):
            archive.write(path, f"{PACKAGE}/{path.relative_to(repo).as_posix()}")
    tmp.replace(output)
    return output


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=repo / "dist" / f"{PACKAGE}.zip")
    args = parser.parse_args()
    out = build(repo, args.output)
    with zipfile.ZipFile(out) as archive:
        count = len(archive.namelist())
    print(f"wrote {out} ({count} files, {out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

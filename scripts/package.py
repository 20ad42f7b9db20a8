#!/usr/bin/env python3
"""Build dist/diffusion_landcover.zip for "Install from ZIP" / the plugin repository.

An allow-list (not a deny-list) of what QGIS needs, so tests, benchmarks, docs, virtual environments and
caches can never leak into the ZIP. The project's public addresses (homepage, tracker, repository, email) come
from one place, scripts/project.ini, and are written into the packaged metadata.txt only. Standard library
only: runs with any python3.
"""
from __future__ import annotations

import argparse
import configparser
import os
import sys
import zipfile
from pathlib import Path

PACKAGE = "diffusion_landcover"
TOP_FILES = ["metadata.txt", "__init__.py", "README.md", "LICENSE", "LICENSE.txt", "CHANGELOG.md"]
TOP_DIRS = ["plugin", "algorithms", "engine", "resources", "requirements"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", "~")
PROJECT_FILE = Path(__file__).resolve().parent / "project.ini"
# what plugins.qgis.org requires in metadata.txt and only the project can say
ADDRESS_KEYS = ("homepage", "tracker", "repository", "email")


def project_addresses(path: Path = PROJECT_FILE) -> dict:
    """The ``[project]`` addresses of ``path``, empty strings for those not set."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    section = parser["project"] if parser.has_section("project") else {}
    return {key: section.get(key, "").strip() for key in ADDRESS_KEYS}


def packaged_metadata(text: str, addresses: dict) -> str:
    """metadata.txt with the addresses that are set (any already there replaced), appended to [general]."""
    kept = [line for line in text.splitlines()
            if line.split("=", 1)[0].strip() not in ADDRESS_KEYS or "=" not in line]
    while kept and not kept[-1].strip():
        kept.pop()
    kept += [f"{key}={value}" for key, value in addresses.items() if value]
    return "\n".join(kept) + "\n"


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


def build(repo: Path, output: Path, addresses: dict = None) -> Path:
    addresses = project_addresses() if addresses is None else addresses
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_to_pack(repo):
            name = f"{PACKAGE}/{path.relative_to(repo).as_posix()}"
            if path == repo / "metadata.txt":
                archive.writestr(name, packaged_metadata(path.read_text(encoding="utf-8"), addresses))
            else:
                archive.write(path, name)
    tmp.replace(output)
    return output


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=repo / "dist" / f"{PACKAGE}.zip")
    parser.add_argument("--project", type=Path, default=PROJECT_FILE,
                        help="the file with the project's public addresses (default: scripts/project.ini)")
    args = parser.parse_args()
    addresses = project_addresses(args.project)
    out = build(repo, args.output, addresses)
    missing = [key for key, value in addresses.items() if not value]
    if missing:
        print(f"warning: {args.project} sets no {', '.join(missing)}: the ZIP installs (Plugins > Install from ZIP), "
              "but plugins.qgis.org refuses an upload without them; fill them in once the project has them",
              file=sys.stderr)
    with zipfile.ZipFile(out) as archive:
        count = len(archive.namelist())
    print(f"wrote {out} ({count} files, {out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

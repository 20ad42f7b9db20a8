"""make package / make install / repository metadata (no QGIS needed)."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_package_zip_layout(tmp_path):
    out = tmp_path / "diffusion_landcover.zip"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--output", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(out).namelist()
    assert {n.split("/", 1)[0] for n in names} == {"diffusion_landcover"}
    for required in ("metadata.txt", "__init__.py", "plugin/plugin.py", "plugin/provider.py",
                     "algorithms/__init__.py", "algorithms/base.py", "algorithms/install.py", "algorithms/checkenvironment.py",
                     "engine/__init__.py", "engine/progress.py", "engine/paths.py", "resources/icon.svg",
                     "requirements/runtime.txt", "requirements/constraints.txt"):
        assert f"diffusion_landcover/{required}" in names, required
    for name in names:
        parts = name.split("/")
        assert not {"tests", "benchmarks", ".venv", "__pycache__", ".git", "docs", "dist", "scripts",
                    ".qgis-profile"} & set(parts), name
        assert not name.endswith((".pyc", ".zip")), name
    # every .py of the packaged folders is inside
    for folder in ("plugin", "algorithms", "engine"):
        for path in (REPO / folder).glob("*.py"):
            assert f"diffusion_landcover/{folder}/{path.name}" in names


def test_metadata_is_what_the_plugin_manager_needs():
    parser = configparser.ConfigParser()  # as qgis.utils reads it: interpolating, so a stray "%" breaks it
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    assert general["name"] == "Diffusion Land Cover"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert general["experimental"] == "True"
    assert (REPO / general["icon"]).is_file()
    assert general["tracker"].endswith("/issues") and general["repository"].startswith("https://github.com/")
    for key in ("description", "about", "version", "author", "email", "tags", "homepage"):
        assert general[key].strip(), key


def test_install_links_checkout_and_is_idempotent(tmp_path):
    plugins = tmp_path / "profile" / "python" / "plugins"
    for _ in range(2):
        proc = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"QGIS_PLUGIN_DIR={plugins}"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    link = plugins / "diffusion_landcover"
    assert link.is_symlink() and link.resolve() == REPO.resolve()
    assert (link / "metadata.txt").is_file()


def test_install_refuses_to_replace_a_real_folder(tmp_path):
    (tmp_path / "diffusion_landcover").mkdir()
    proc = subprocess.run([str(REPO / "scripts" / "install.sh"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "not a link" in proc.stderr
    assert not (tmp_path / "diffusion_landcover").is_symlink()


def test_ci_runs_exactly_the_readme_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert os.access(REPO / ".ci" / "run", os.X_OK)
    assert "set -euo pipefail" in ci
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert [c for c in commands if c.startswith("make")] == ["make setup", "make test"]
    readme = (REPO / "README.md").read_text()
    assert "make setup" in readme and "make test" in readme and "make demo" in readme

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
    for key in ("description", "about", "version", "author", "tags", "changelog"):
        assert general[key].strip(), key
    # the project's public addresses live in scripts/project.ini only; none is invented here
    for key in ("homepage", "tracker", "repository", "email"):
        assert key not in general, key
    assert "U-Net is" not in general["about"] and "untrained" in general["about"]


def _package(tmp_path, project_text):
    project = tmp_path / "project.ini"
    project.write_text(project_text)
    out = tmp_path / "p.zip"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--output", str(out),
                           "--project", str(project)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(out).read("diffusion_landcover/metadata.txt").decode("utf-8"))
    return proc, parser["general"]


def test_package_fills_the_project_addresses_from_one_place(tmp_path):
    proc, general = _package(tmp_path, "[project]\nhomepage = https://example.org/h\ntracker = https://example.org/t\n"
                                       "repository = https://example.org/r\nemail = someone@example.org\n")
    assert (general["homepage"], general["tracker"], general["repository"], general["email"]) == (
        "https://example.org/h", "https://example.org/t", "https://example.org/r", "someone@example.org")
    assert general["name"] == "Diffusion Land Cover" and general["changelog"].startswith("0.1.0")
    assert "warning" not in proc.stderr


def test_package_warns_while_the_project_has_no_addresses(tmp_path):
    proc, general = _package(tmp_path, (REPO / "scripts" / "project.ini").read_text())
    assert "plugins.qgis.org refuses an upload" in proc.stderr
    for key in ("homepage", "tracker", "repository", "email"):
        assert key in proc.stderr and key not in general, key


def test_shipped_help_is_current_and_packaged(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_help.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "z.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--output", str(out)], check=True,
                   capture_output=True)
    assert "diffusion_landcover/resources/help/index.html" in zipfile.ZipFile(out).namelist()


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

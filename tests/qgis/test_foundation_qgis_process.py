"""The real qgis_process binary, through scripts/qgis_process, with and without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "qgis_process"
TORCH_HIDDEN = "No module named 'torch' (hidden by the test suite)"


def _requirement_pins():
    pins = {}
    for name in ("runtime.txt", "constraints.txt"):
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                key, value = line.split("==", 1)
                pins[key.strip()] = value.strip()
    return pins


def _algorithms_needing_torch():
    """Ids of every listed algorithm class with NEEDS_TORCH = True (grows as algorithms are added)."""
    from conftest import import_plugin_package

    import_plugin_package()
    from diffusion_landcover.algorithms import algorithm_classes

    return [f"difflc:{cls.NAME}" for cls in algorithm_classes() if getattr(cls, "NEEDS_TORCH", False)]


@pytest.fixture(scope="module")
def torch_hider(tmp_path_factory):
    """A folder that, first on PYTHONPATH, makes `import torch` fail like a missing install."""
    folder = tmp_path_factory.mktemp("hide-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text(f"raise ImportError({TORCH_HIDDEN!r})\n")
    return folder


def qgis_process(*args, cwd, profile, extra_env=None, timeout=120):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    env.update(extra_env or {})
    return subprocess.run([str(LAUNCHER), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _json_results(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def test_launcher_lists_provider_and_runs_checkenvironment(tmp_path):
    profile = tmp_path / "profile"
    listed = qgis_process("list", cwd=tmp_path, profile=profile)  # from a foreign cwd
    assert listed.returncode == 0, listed.stderr
    assert "Diffusion Land Cover" in listed.stdout and "difflc:checkenvironment" in listed.stdout
    ini = (profile / "profiles" / "default" / "QGIS" / "QGIS3.ini").read_text()
    assert "[PythonPlugins]" in ini and "diffusion_landcover=true" in ini

    report = tmp_path / "env.json"
    results = _json_results(qgis_process("--json", "run", "difflc:checkenvironment", "--",
                                         f"OUTPUT={report}", cwd=tmp_path, profile=profile))
    import numpy
    import torch

    assert results["TORCH_VERSION"] == torch.__version__  # the venv's torch, found via the launcher's PATH
    assert results["NUMPY_VERSION"] == numpy.__version__
    assert results["MISSING"] == ""
    assert json.loads(report.read_text())["TORCH_VERSION"] == torch.__version__
    ini_again = (profile / "profiles" / "default" / "QGIS" / "QGIS3.ini").read_text()
    assert ini_again.count("diffusion_landcover=true") == 1


def test_torch_hider_really_hides_torch(torch_hider, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(torch_hider))
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode != 0 and TORCH_HIDDEN in proc.stderr


def test_require_torch_message_without_torch(torch_hider, tmp_path):
    """require_torch() names the exact pip command for this interpreter, with the pinned versions."""
    link_dir = tmp_path / "pkg"
    link_dir.mkdir()
    (link_dir / "diffusion_landcover").symlink_to(REPO, target_is_directory=True)
    code = ("from diffusion_landcover.algorithms.install import require_torch\n"
            "from qgis.core import QgsProcessingException\n"
            "try:\n    require_torch()\nexcept QgsProcessingException as exc:\n    print(str(exc))\n"
            "else:\n    raise SystemExit('torch was importable')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(torch_hider), str(link_dir)]),
               QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout
    import numpy

    pins = _requirement_pins()
    assert f"{sys.executable} -m pip install" in message  # a venv: its own python, no --user
    for name in ("torch", "scikit-learn", "safetensors"):
        assert f"{name}=={pins[name]}" in message
    assert f'"numpy=={numpy.__version__}"' in message and "numpy 2" in message
    assert TORCH_HIDDEN in message


@pytest.mark.skipif(not os.path.isfile("/usr/bin/python3"), reason="Debian's system python only")
def test_require_torch_message_for_debian_system_python(torch_hider, tmp_path):
    """Outside a venv the command is a --user install, past Debian's PEP 668 guard when it is active."""
    link_dir = tmp_path / "pkg"
    link_dir.mkdir()
    (link_dir / "diffusion_landcover").symlink_to(REPO, target_is_directory=True)
    code = ("import sysconfig, os\n"
            "from diffusion_landcover.algorithms.install import torch_missing_message\n"
            "print(os.path.isfile(os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED')))\n"
            "print(torch_missing_message())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(torch_hider), str(link_dir)]),
               QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(["/usr/bin/python3", "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    managed, message = proc.stdout.split("\n", 1)
    expected = "/usr/bin/python3 -m pip install --user"
    if managed == "True":
        expected += " --break-system-packages"
    assert expected + f" torch=={_requirement_pins()['torch']}" in message


@pytest.mark.parametrize("algorithm", ["difflc:checkenvironment"] + _algorithms_needing_torch())
def test_qgis_process_without_torch(algorithm, torch_hider, tmp_path, qgis_app):
    """With torch hidden the provider still loads; algorithms needing torch refuse with the pip line."""
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    profile = tmp_path / "profile"
    hidden = {"PYTHONPATH": str(torch_hider)}
    listed = qgis_process("list", cwd=tmp_path, profile=profile, extra_env=hidden)
    assert listed.returncode == 0 and algorithm in listed.stdout, listed.stdout + listed.stderr
    pip_line = f"-m pip install torch=={_requirement_pins()['torch']}"

    if algorithm == "difflc:checkenvironment":
        results = _json_results(qgis_process("--json", "run", algorithm, cwd=tmp_path, profile=profile,
                                             extra_env=hidden))
        assert results["TORCH_VERSION"] == "not installed"  # proves torch really was hidden in qgis_process
        assert "torch" in results["MISSING"] and pip_line in results["PIP_COMMAND"]
        # the named interpreter is a real python that sees QGIS's packages, even though the one running
        # was embedded in qgis_process.bin
        python = results["PIP_COMMAND"].split(" -m pip ")[0]
        assert Path(python).name.startswith("python") and os.path.isfile(python)
        check = subprocess.run([python, "-c", "import qgis.core, osgeo.gdal"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        return

    alg = QgsApplication.processingRegistry().algorithmById(algorithm)
    dummies = [f"--{p.name()}=x" for p in alg.parameterDefinitions()
               if not p.flags() & QgsProcessingParameterDefinition.FlagOptional]
    proc = qgis_process("run", algorithm, *dummies, cwd=tmp_path, profile=profile, extra_env=hidden)
    assert proc.returncode != 0
    assert "PyTorch is not installed" in proc.stderr and pip_line in proc.stderr, proc.stdout + proc.stderr

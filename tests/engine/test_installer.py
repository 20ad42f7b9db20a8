"""The dependency installer (engine.installer) against the real package index, with a small package.

pip really runs (a child of this interpreter, ``--target`` a temporary folder): PyPI is reachable here. The
machine's own pip configuration (a local wheel folder, mirrors, constraints) is switched off for these runs so
that what is tested is PyPI itself; only the NVIDIA driver is simulated (recorded nvidia-smi output, a fake
nvidia-smi on PATH) because these machines have no GPU.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import installer
from engine.installer import InstallError, InstallPlan, TorchBuild
from engine.progress import Cancelled, Progress

PYPI = "https://pypi.org/simple"
PKG = "tomli==2.0.1"  # small, pure Python, and not among this Python's own packages
NO_NETWORK = "http://127.0.0.1:9/simple"  # the discard port: nothing listens, the connection is refused at once

SMI_550 = """Tue Dec  2 16:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-5d3c1e2a-0000-0000-0000-000000000000)
"""


def pip_env():
    """This machine's pip settings off (local wheel folder, mirrors, a torch cap): PyPI itself is what answers."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.fixture
def clean_pip(monkeypatch):
    for key in [k for k in os.environ if k.startswith("PIP_") and k not in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def plan_for(folder, requirements=(PKG,), **kw) -> InstallPlan:
    kw.setdefault("index_url", PYPI)
    return installer.make_plan(str(folder), list(requirements), sys.executable, **kw)


def recorder():
    lines, fractions = [], []
    return Progress(on_progress=fractions.append, on_message=lines.append), lines, fractions


def leftovers(parent: Path):
    return sorted(p.name for p in parent.iterdir() if ".part-" in p.name or ".old-" in p.name)


def test_install_from_pypi_then_already_installed(tmp_path, clean_pip, monkeypatch):
    folder = tmp_path / "deps" / "3.11"
    progress, lines, fractions = recorder()
    t0 = time.monotonic()
    first = installer.install(plan_for(folder), progress)
    took = time.monotonic() - t0
    assert not first.already_installed and first.versions == {"tomli": "2.0.1"}
    assert (folder / "tomli" / "__init__.py").is_file() and (folder / installer.STAMP).is_file()
    assert any(line.startswith("pip: Collecting tomli==2.0.1") for line in lines)
    assert any(line.startswith("pip: Installing collected packages") for line in lines)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(set(fractions)) >= 3
    assert leftovers(folder.parent) == []
    # the package imports from the folder appended to the path, in a fresh interpreter
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.append(sys.argv[1]); import tomli; "
                          "print(tomli.__version__, tomli.__file__)", str(folder)], capture_output=True, text=True)
    assert out.stdout.split()[0] == "2.0.1" and out.stdout.split()[1].startswith(str(folder))

    calls = []
    real_run_pip = installer.run_pip
    monkeypatch.setattr(installer, "run_pip", lambda *a, **k: calls.append(a) or real_run_pip(*a, **k))
    progress, lines, _ = recorder()
    t0 = time.monotonic()
    second = installer.install(plan_for(folder), progress)
    assert second.already_installed and second.versions == {"tomli": "2.0.1"} and calls == []
    assert time.monotonic() - t0 < 5.0 and any("Already installed" in line for line in lines)
    print(f"tomli from PyPI: {took:.1f} s, {first.size_bytes} bytes; second run {second.seconds:.2f} s")

    # other requirements → a new install replaces the folder once complete (the old one never half-gone)
    third = installer.install(plan_for(folder, reinstall=True), Progress())
    assert not third.already_installed and (folder / "tomli" / "__init__.py").is_file() and leftovers(folder.parent) == []


def test_cancel_stops_pip_and_leaves_no_folder(tmp_path, clean_pip, monkeypatch):
    folder = tmp_path / "deps"
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(installer.subprocess, "Popen", popen)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    seen = []
    progress = Progress(on_message=seen.append, is_canceled=lambda: any("Collecting" in s for s in seen))
    with pytest.raises(Cancelled):
        installer.install(plan_for(folder), progress)
    pips = [p for p in started if p.args[1:4] == ["-m", "pip", "install"]]
    assert len(pips) == 1 and pips[0].returncode == -15  # pip was running and was stopped (SIGTERM)
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left either
        os.killpg(pips[0].pid, 0)
    assert not folder.exists() and leftovers(tmp_path) == []
    assert list(system_tmp.iterdir()) == []  # pip's own temporaries were inside the removed folder


def test_no_network_refusal_says_what_to_download_and_that_works_offline(tmp_path, clean_pip):
    with pytest.raises(InstallError) as info:
        installer.install(plan_for(tmp_path / "deps", index_url=NO_NETWORK), Progress())
    text = str(info.value)
    assert text.startswith("no network: " + NO_NETWORK) and "\n" not in text and "WHEELS_FOLDER" in text
    assert not (tmp_path / "deps").exists() and leftovers(tmp_path) == []
    # the command the refusal gives, run as written (on "a connected computer": PyPI here) ...
    command = re.search(r"'(python -m pip download [^']+)'", text).group(1)
    assert "tomli==2.0.1" in command
    subprocess.run([sys.executable] + command.split()[1:], check=True, capture_output=True, env=pip_env(),
                   cwd=tmp_path)
    wheels = tmp_path / "wheels"
    # ... gives the folder an offline install needs: the index unreachable, only the folder provides the package
    plan = plan_for(tmp_path / "deps", index_url=NO_NETWORK, wheels_folder=str(wheels))
    cmd = installer.pip_command(plan, "T", "C")
    assert "--no-index" in cmd and cmd[cmd.index("--find-links") + 1] == str(wheels)
    progress, lines, fractions = recorder()
    result = installer.install(plan, progress)
    assert any(line.startswith("pip: Processing ") for line in lines) and len(set(fractions)) >= 3
    assert result.versions == {"tomli": "2.0.1"} and (tmp_path / "deps" / "tomli" / "__init__.py").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InstallError, match="holds no .whl files"):
        installer.install(plan_for(tmp_path / "d2", wheels_folder=str(empty)), Progress())
    # a network failure pip itself meets (after the index first answered) reads the same
    lines = ["Collecting tomli==2.0.1", "WARNING: Retrying ... NewConnectionError(...: Failed to establish a new "
             "connection: [Errno 111] Connection refused')", "ERROR: No matching distribution found for tomli"]
    assert installer.explain_pip_failure(plan_for(tmp_path), lines).startswith("no network: pip could not reach")


def test_missing_pip_unwritable_folder_and_full_disk_are_refused(tmp_path, clean_pip, monkeypatch):
    fake = tmp_path / "python3"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "No module named pip" >&2; '
                    f'exit 1; fi\nexec "{sys.executable}" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    plan = installer.make_plan(str(tmp_path / "deps"), [PKG], str(fake), index_url=PYPI)
    with pytest.raises(InstallError, match=r"^pip is not available in QGIS's Python \(.*python3\): install it"):
        installer.install(plan, Progress())

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InstallError, match=r"^cannot write to .*/a-file \(Not a directory\): .*choose another FOLDER"):
        installer.install(plan_for(blocker / "deps" / "3.11"), Progress())
    if os.geteuid() != 0:  # root writes anywhere: the read-only folder is only a refusal for a user
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(InstallError, match="cannot write to"):
            installer.install(plan_for(ro / "deps"), Progress())

    monkeypatch.setattr(installer, "free_bytes", lambda folder: 300 * 2**20)
    torch_plan = installer.make_plan(str(tmp_path / "deps"), ["torch==2.13.0", PKG], sys.executable,
                                     torch_build="cuda-12.4", index_url=PYPI)
    with pytest.raises(InstallError, match=r"^not enough disk space in .*: 300.0 MiB free, about 4.8 GiB needed"):
        installer.install(torch_plan, Progress())
    assert leftovers(tmp_path) == [] and not (tmp_path / "deps").exists()


def test_a_package_qgis_python_shadows_is_reported(tmp_path, clean_pip):
    import six  # Debian's python3-six: installed beside QGIS, so an appended folder's six is never imported

    wanted = "1.15.0" if six.__version__ != "1.15.0" else "1.14.0"
    with pytest.raises(InstallError, match=rf"^installed, but six {six.__version__} is imported from "
                                           rf".*, not the {wanted} installed"):
        installer.install(plan_for(tmp_path / "deps", [f"six=={wanted}"]), Progress())
    assert not (tmp_path / "deps").exists() and leftovers(tmp_path) == []


def test_numpy_stays_the_version_qgis_python_has(tmp_path, clean_pip):
    import numpy

    plan = plan_for(tmp_path / "deps")
    assert plan.constraints["numpy"] == numpy.__version__  # asked of the interpreter, not hard-coded
    assert f"numpy=={numpy.__version__}\n" in installer.constraints_text(plan.constraints)
    other = "1.26.4" if numpy.__version__ != "1.26.4" else "1.25.2"
    # a completed install is there: a new one that fails leaves it exactly as it was
    previous = tmp_path / "deps"
    previous.mkdir()
    (previous / installer.STAMP).write_text('{"key": "an earlier install"}')
    (previous / "kept.py").write_text("")
    with pytest.raises(InstallError, match=rf"^pip found no versions that fit QGIS's own packages \(.*numpy=="
                                           rf"{numpy.__version__}"):
        installer.install(plan_for(previous, [f"numpy=={other}"], reinstall=True), Progress())
    assert sorted(p.name for p in previous.iterdir()) == sorted([installer.STAMP, "kept.py"])
    assert leftovers(tmp_path) == []


def test_packages_qgis_already_has_are_left_to_it(tmp_path):
    site = tmp_path / "site"
    for name, version in (("numpy", "1.24.2"), ("extra", "2.0")):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    removed = installer.prune_qgis_packages(str(site), {"numpy": "1.24.2", "scipy": "1.10.1"})
    assert removed == ["numpy 1.24.2"] and sorted(p.name for p in site.iterdir()) == ["extra", "extra-2.0.dist-info"]


def test_nvidia_smi_choice(tmp_path, monkeypatch):
    found = installer.parse_nvidia_smi(SMI_550)
    assert found.driver == "550.54.14" and found.cuda == (12, 4) and found.gpus == ("NVIDIA GeForce RTX 3060",)
    build = installer.choose_torch_build("auto", SMI_550, platform="linux")
    assert (build.kind, build.tag, build.index_url) == ("cuda", "cu124", "https://download.pytorch.org/whl/cu124")
    assert "driver 550.54.14" in build.why and "12.4" in build.why
    for cuda, tag in (("12.5", "cu124"), ("12.2", "cu121"), ("11.8", "cu118"), ("13.2", "cu130"),
                      ("12.8", "cu128")):
        assert installer.choose_torch_build("auto", SMI_550.replace("12.4", cuda), platform="linux").tag == tag
    old = installer.choose_torch_build("auto", SMI_550.replace("12.4", "11.4"), platform="linux")
    assert old.tag == "cpu" and "update the driver" in old.why
    assert installer.choose_torch_build("auto", "", platform="linux").tag == "cpu"
    assert installer.choose_torch_build("cpu", SMI_550, platform="linux").tag == "cpu"
    assert installer.choose_torch_build("cuda-11.8", "", platform="linux").tag == "cu118"
    assert installer.choose_torch_build("auto", SMI_550, platform="win32").tag == "cu124"
    assert installer.choose_torch_build("auto", "", platform="win32").kind == "default"
    with pytest.raises(InstallError, match="unknown build"):
        installer.choose_torch_build("cuda-9.0", "")

    # a real nvidia-smi run: a fake one first on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "smi.txt").write_text(SMI_550)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nif [ "$1" = "-L" ]; then grep "^GPU 0" "{tmp_path}/smi.txt"; '
                   f'else grep -v "^GPU 0" "{tmp_path}/smi.txt"; fi\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    chosen = installer.choose_torch_build("auto", platform="linux")
    assert chosen.tag == "cu124" and "NVIDIA GeForce RTX 3060" in chosen.why

    # torch's pin takes the build's local label, so PyPI's default CUDA wheel is never the one picked
    plan = InstallPlan("f", ["torch==2.13.0", "safetensors==0.8.0"], sys.executable,
                       torch=TorchBuild("cpu", "cpu", "https://download.pytorch.org/whl/cpu", ""))
    cmd = installer.pip_command(plan, "T", "C")
    assert cmd[-2:] == ["torch==2.13.0+cpu", "safetensors==0.8.0"]
    assert cmd[cmd.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert plan.needed_bytes() == installer.DISK_TORCH_CPU + installer.DISK_OTHERS


def test_sys_path_gets_only_a_completed_folder_appended(tmp_path):
    path = ["/qgis/site-packages"]
    folder = tmp_path / "deps"
    folder.mkdir()
    assert installer.append_to_sys_path(str(folder), path) is False  # no stamp: a folder pip never finished
    (folder / installer.STAMP).write_text("{}")
    assert installer.append_to_sys_path(str(folder), path) is True and path == ["/qgis/site-packages", str(folder)]
    assert installer.append_to_sys_path(str(folder), path) is False and len(path) == 2
    assert installer.default_folder("/p/profiles/default", "3.11") == "/p/profiles/default/python/difflc-deps/3.11"


def test_pip_lines_move_the_bar_forward():
    meter = installer.PipProgress(expected=2)
    out = [meter.feed(line) for line in ("Collecting a==1", "  Downloading a-1.whl (10 kB)", "Collecting b==2",
                                         "Collecting c", "Installing collected packages: c, b, a",
                                         "Successfully installed a-1 b-2 c-3", "noise")]
    fractions = [f for f, _ in out if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0 and len(fractions) == 5
    assert out[1] == (None, "Downloading a-1.whl (10 kB)") and out[-1] == (None, None)
    offline = installer.PipProgress(expected=1)
    assert offline.feed("Processing ./wheels/a-1-py3-none-any.whl")[0] > 0  # --find-links: no "Collecting" lines


def test_the_check_reports_the_device_and_a_torch_that_cannot_use_qgis_numpy(tmp_path):
    """The import check runs in a fresh interpreter with the folder appended; a stand-in torch plays the two
    cases: one that sees a GPU and takes QGIS's numpy, one built for another numpy."""
    folder = tmp_path / "site"
    (folder / "torch").mkdir(parents=True)
    body = ("__version__ = '2.13.0+cu124'\nclass version:\n    cuda = '12.4'\nclass cuda:\n"
            "    is_available = staticmethod(lambda: True)\n    get_device_name = staticmethod(lambda i: 'Stand-in GPU')\n")
    bare = tmp_path / "python3"  # this interpreter without its site-packages: its own torch must not shadow
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    (folder / "numpy.py").write_text("__version__ = '1.24.2'\nones = lambda n: [1.0] * n\n")
    plan = InstallPlan(str(folder), ["torch==2.13.0"], str(bare))
    (folder / "torch" / "__init__.py").write_text(body + "class _T(list):\n    def sum(self):\n        return sum(self)\n"
        "def from_numpy(a):\n    return _T(a)\n")
    good = installer.verify(plan, str(folder))
    assert good.problems == [] and good.versions == {"torch": "2.13.0+cu124"}
    assert good.device == "cuda: Stand-in GPU (CUDA 12.4)"
    (folder / "torch" / "__init__.py").write_text(
        body + "def from_numpy(a):\n    raise RuntimeError('Numpy is not available')\n")
    bad = installer.verify(plan, str(folder))
    assert bad.problems == ["torch cannot use QGIS's numpy (RuntimeError: Numpy is not available)"]

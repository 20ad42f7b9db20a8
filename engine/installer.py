"""Install the plugin's Python dependencies into a folder the plugin owns, never into QGIS's own Python.

Why a folder of our own: pip run on QGIS's site-packages is what breaks QGIS for users of deep-learning plugins
(numpy 2 over the numpy GDAL was built with, a CPU torch over a CUDA one). Here pip runs as a child of QGIS's
interpreter with ``--target`` into a temporary sibling of the folder, with numpy, scipy and GDAL constrained to
the versions that interpreter already has; the folder is renamed into place only once pip finished and every
package imported in a fresh interpreter. The plugin *appends* the folder to ``sys.path`` at load time, so QGIS's
own packages always win. Pure Python (no QGIS, no torch): the Processing algorithm is thin glue around
:func:`install`.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import UserInputError, size_text
from .progress import Cancelled, Progress

STAMP = "difflc-install.json"
PYPI = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl"
# distributions QGIS's Python already has that pip must never replace or shadow with another version
PINNED_FROM_QGIS = ("numpy", "scipy", "GDAL")
# import name of each distribution whose module is not named like it
IMPORT_NAMES = {"scikit-learn": "sklearn", "gdal": "osgeo", "pyyaml": "yaml", "pillow": "PIL"}
# pytorch.org's CUDA indexes, newest first: (CUDA major, minor, index tag). The driver's "CUDA Version" (what
# nvidia-smi prints) is the newest CUDA runtime it runs, so the newest tag not above it is chosen
CUDA_INDEXES: Tuple[Tuple[int, int, str], ...] = (
    (13, 0, "cu130"), (12, 9, "cu129"), (12, 8, "cu128"), (12, 6, "cu126"), (12, 4, "cu124"), (12, 1, "cu121"),
    (11, 8, "cu118"))
TORCH_BUILDS = ("auto", "cpu") + tuple(f"cuda-{major}.{minor}" for major, minor, _ in CUDA_INDEXES)
# disk needed for the full set (torch dominates; wheels are unpacked, pip's cache aside)
DISK_TORCH_CPU = 1.0e9
DISK_TORCH_CUDA = 5.0e9
DISK_OTHERS = 2.0e8
SIZE_HINT = {"torch": "about 1 GB (CPU) or 5 GB (CUDA)"}


class InstallError(UserInputError):
    """An install that cannot be done or did not work: one line that says what to do."""


# ---------------------------------------------------------------------------------------------- the GPU
@dataclass(frozen=True)
class NvidiaDriver:
    driver: str  # e.g. "550.54.14"
    cuda: Tuple[int, int]  # the newest CUDA runtime the driver supports, e.g. (12, 4)
    gpus: Tuple[str, ...] = ()


@dataclass(frozen=True)
class TorchBuild:
    kind: str  # "cpu" | "cuda" | "default" (PyPI's own build: macOS, Windows CPU)
    tag: str  # local version label / pytorch.org index name: "cpu", "cu124"; "" for "default"
    index_url: str  # pytorch.org index to add ("" = PyPI's torch)
    why: str


def parse_nvidia_smi(text: str) -> Optional[NvidiaDriver]:
    """The driver and its CUDA version from ``nvidia-smi``'s banner (``Driver Version: 550.54.14  CUDA Version:
    12.4``); GPU names from ``nvidia-smi -L`` lines when present. None when it reports no driver."""
    text = text or ""
    driver = re.search(r"Driver Version:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9]+)\.([0-9]+)", text)
    if not driver or not cuda:
        return None
    gpus = tuple(m.group(1).strip() for m in re.finditer(r"^GPU \d+:\s*(.+?)\s*(?:\(UUID.*)?$", text, re.M))
    return NvidiaDriver(driver.group(1), (int(cuda.group(1)), int(cuda.group(2))), gpus)


def query_nvidia_smi(executable: str = "nvidia-smi", timeout: float = 15.0) -> str:
    """nvidia-smi's banner and GPU list, or '' when there is none (not installed, no driver, it hangs)."""
    exe = shutil.which(executable)
    if not exe:
        return ""
    out = []
    for args in ([exe], [exe, "-L"]):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError):
            return ""
        if done.returncode != 0:
            return ""
        out.append(done.stdout)
    return "\n".join(out)


def choose_torch_build(override: str = "auto", smi_text: Optional[str] = None,
                       platform: Optional[str] = None) -> TorchBuild:
    """Which PyTorch build to install: ``override`` (auto | cpu | cuda-X.Y); auto = the newest CUDA build the
    NVIDIA driver runs when ``nvidia-smi`` reports one, else the CPU build. ``smi_text`` None = ask nvidia-smi."""
    platform = platform or sys.platform
    if override not in TORCH_BUILDS:
        raise InstallError(f"TORCH_BUILD: unknown build {override!r}: use one of {', '.join(TORCH_BUILDS)}")
    if platform == "darwin":
        return TorchBuild("default", "", "", "macOS: PyPI's build (CPU and Apple MPS); there is no CUDA build")
    if override.startswith("cuda-"):
        major, minor = (int(p) for p in override[5:].split("."))
        tag = next(t for a, b, t in CUDA_INDEXES if (a, b) == (major, minor))
        return TorchBuild("cuda", tag, f"{TORCH_INDEX}/{tag}", f"asked for (TORCH_BUILD={override})")
    if override == "cpu":
        return _cpu_build(platform, "asked for (TORCH_BUILD=cpu)")
    text = query_nvidia_smi() if smi_text is None else smi_text
    found = parse_nvidia_smi(text)
    if found is None:
        return _cpu_build(platform, "nvidia-smi reports no NVIDIA driver")
    cuda = found.cuda
    for major, minor, tag in CUDA_INDEXES:
        if (major, minor) <= cuda:
            gpus = f" ({', '.join(found.gpus)})" if found.gpus else ""
            return TorchBuild("cuda", tag, f"{TORCH_INDEX}/{tag}",
                              f"NVIDIA driver {found.driver}{gpus} supports CUDA up to {cuda[0]}.{cuda[1]}: "
                              f"CUDA {major}.{minor} is the newest PyTorch build it runs")
    oldest = CUDA_INDEXES[-1]
    return _cpu_build(platform, f"NVIDIA driver {found.driver} supports only CUDA {cuda[0]}.{cuda[1]}, older than "
                                f"the oldest PyTorch CUDA build ({oldest[0]}.{oldest[1]}): update the driver for "
                                "GPU use")


def _cpu_build(platform: str, why: str) -> TorchBuild:
    if platform.startswith("win"):  # PyPI's Windows torch is the CPU build
        return TorchBuild("default", "", "", f"{why}; Windows: PyPI's torch is the CPU build")
    return TorchBuild("cpu", "cpu", f"{TORCH_INDEX}/cpu", why)


# ---------------------------------------------------------------------------------------------- the plan
@dataclass
class InstallPlan:
    """Everything one install needs, decided before pip starts (logged, and keyed into the stamp)."""

    folder: str  # the folder the plugin owns (e.g. <profile>/python/difflc-deps/3.11)
    requirements: List[str]  # "name==version" lines
    python: str  # QGIS's interpreter: pip runs as its child, the import check too
    constraints: Dict[str, str] = field(default_factory=dict)  # name → version QGIS's Python has
    torch: Optional[TorchBuild] = None  # None when torch is not among the requirements
    wheels_folder: str = ""  # offline: pip --no-index --find-links
    index_url: str = ""  # "" = pip's own (PyPI, or the user's pip configuration)
    reinstall: bool = False

    def key(self) -> str:
        """What the stamp is keyed on: a change of any of these means a new install."""
        data = {"requirements": sorted(self.pip_requirements()), "constraints": self.constraints,
                "python": interpreter_tag(self.python)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def pip_requirements(self) -> List[str]:
        """The requirement lines pip gets: torch pinned to the chosen build's local label (torch==2.13.0+cpu)
        unless installing from a wheels folder, where whatever build was downloaded is taken."""
        out = []
        for line in self.requirements:
            name, version = split_requirement(line)
            if (normalise(name) == "torch" and self.torch is not None and self.torch.tag and version
                    and "+" not in version and not self.wheels_folder):
                line = f"{name}=={version}+{self.torch.tag}"
            out.append(line)
        return out

    def needed_bytes(self) -> float:
        names = {normalise(split_requirement(r)[0]) for r in self.requirements}
        need = DISK_OTHERS
        if "torch" in names:
            need += DISK_TORCH_CUDA if self.torch is not None and self.torch.kind == "cuda" else DISK_TORCH_CPU
        return need


_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:==\s*([A-Za-z0-9.+!_-]+))?\s*$")


def split_requirement(line: str) -> Tuple[str, str]:
    """'torch==2.13.0' → ('torch', '2.13.0'); 'six' → ('six', ''). Only names and exact pins are taken."""
    match = _REQ.match(line or "")
    if not match:
        raise InstallError(f"requirement {line!r} is not 'name' or 'name==version'")
    return match.group(1), match.group(2) or ""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: str) -> List[str]:
    """The 'name==version' lines of a requirements file (comments, options and -r includes left out)."""
    lines = []
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                split_requirement(line)
                lines.append(line)
    return lines


def parse_requirements_text(text: str) -> List[str]:
    """REQUIREMENTS typed into the dialog: names or name==version, separated by commas, spaces or new lines."""
    items = [p for p in re.split(r"[,\s;]+", (text or "").strip()) if p]
    for item in items:
        split_requirement(item)
    return items


def interpreter_tag(python: str) -> str:
    return _run_json(python, "import sys, json; print(json.dumps('%d.%d' % sys.version_info[:2]))", timeout=60)


def default_folder(profile_dir: str, python_version: Optional[str] = None) -> str:
    """``<QGIS profile>/python/difflc-deps/<python X.Y>``: one folder per Python, since compiled wheels differ."""
    version = python_version or "%d.%d" % sys.version_info[:2]
    return os.path.join(profile_dir, "python", "difflc-deps", version)


def append_to_sys_path(folder: str, path: Optional[List[str]] = None) -> bool:
    """Put an installed dependency folder at the *end* of ``sys.path`` (QGIS's numpy/GDAL stay first); only a
    folder this installer completed (its stamp is there) is added. True when added now."""
    path = sys.path if path is None else path
    if not os.path.isfile(os.path.join(folder, STAMP)) or folder in path:
        return False
    path.append(folder)
    return True


_VERSIONS_SCRIPT = r"""
import json, sys
from importlib import metadata
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def qgis_constraints(python: str, names: Sequence[str] = PINNED_FROM_QGIS) -> Dict[str, str]:
    """The versions of ``names`` that QGIS's interpreter has (asked in a child of it, so the answer is that
    Python's, with the plugin folder not on its path): pip must keep exactly these."""
    found = _run_json(python, _VERSIONS_SCRIPT, list(names), timeout=60)
    return {name: version for name, version in found.items() if re.fullmatch(r"[0-9][A-Za-z0-9.+!_-]*", version)}


def constraints_text(constraints: Mapping[str, str]) -> str:
    head = ("# written by Diffusion Land Cover's installer: the versions QGIS's own Python has, so pip never "
            "installs others\n")
    return head + "".join(f"{name}=={version}\n" for name, version in sorted(constraints.items()))


def _run_json(python: str, script: str, args: Sequence[str] = (), timeout: float = 120, path: str = ""):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if path:
        env["DIFFLC_DEPS"] = path
    done = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        last = ((done.stderr or done.stdout).strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InstallError(f"QGIS's Python {python} failed to run a check ({last})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- refusals
def check_pip(python: str) -> str:
    """pip's version in QGIS's Python, or a refusal that says how to get pip."""
    try:
        done = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise InstallError(f"QGIS's Python {python} cannot be run ({exc})") from None
    if done.returncode != 0:
        hint = ("install it with 'sudo apt install python3-pip' (Debian/Ubuntu)" if sys.platform.startswith("linux")
                else f"run '{python} -m ensurepip --user'")
        raise InstallError(f"pip is not available in QGIS's Python ({python}): {hint}, then run Install "
                           "dependencies again")
    return done.stdout.split(" from ")[0].strip()


def check_writable(folder: str) -> None:
    """The folder's parent, or the nearest folder above it that exists, takes new folders (tried, not guessed;
    nothing is created), or a refusal naming it."""
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InstallError(f"{folder} exists and is not a folder: remove it or choose another FOLDER")
    probe_in = os.path.dirname(folder)
    while not os.path.exists(probe_in) and os.path.dirname(probe_in) != probe_in:
        probe_in = os.path.dirname(probe_in)
    try:
        if not os.path.isdir(probe_in):
            raise NotADirectoryError(20, "Not a directory")
        os.rmdir(tempfile.mkdtemp(dir=probe_in, prefix=".difflc-probe-"))
    except OSError as exc:
        raise InstallError(f"cannot write to {probe_in} ({exc.strerror or exc}): make it writable for you, or "
                           "choose another FOLDER") from None


def free_bytes(folder: str) -> int:
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free


def check_disk(plan: InstallPlan) -> None:
    need, free = plan.needed_bytes(), free_bytes(plan.folder)
    if free < need:
        raise InstallError(f"not enough disk space in {os.path.dirname(os.path.abspath(plan.folder))}: "
                           f"{size_text(free)} free, about {size_text(need)} needed (PyTorch is "
                           f"{SIZE_HINT['torch']}): free some space or choose a FOLDER on another disk")


def offline_hint(plan: InstallPlan) -> str:
    """What to download on a connected machine for an offline install, and where to give it."""
    py = interpreter_tag(plan.python).replace(".", "")
    reqs = " ".join(plan.pip_requirements())
    extra = f" --extra-index-url {plan.torch.index_url}" if plan.torch is not None and plan.torch.index_url else ""
    return (f"for an offline install run on a connected computer 'python -m pip download {reqs}{extra} "
            f"--only-binary=:all: --python-version {py} {_platform_args()} -d wheels', copy the folder "
            "'wheels' here and give it as WHEELS_FOLDER")


def _platform_args() -> str:
    """pip download's --platform for this machine; pip does not widen a manylinux tag to older ones by itself, so
    both the newer (PyTorch's) and manylinux2014 (numpy's, scipy's) are named."""
    if sys.platform.startswith("win"):
        return "--platform win_amd64"
    if sys.platform == "darwin":
        return "--platform macosx_11_0_arm64"
    return "--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64"


def check_network(plan: InstallPlan, timeout: float = 10.0) -> None:
    """The package index answers (not asked for an offline install), or a refusal saying what to download."""
    if plan.wheels_folder:
        return
    urls = [plan.index_url or _pip_index(plan.python)]
    if plan.torch is not None and plan.torch.index_url:
        urls.append(plan.torch.index_url + "/")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            continue  # a local index (file://) needs no network
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
                pass
        except urllib.error.HTTPError:
            continue  # the server answered: the network is there
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InstallError(f"no network: {url} cannot be reached ({reason}); {offline_hint(plan)}") from None


def _pip_index(python: str) -> str:
    try:
        done = subprocess.run([python, "-m", "pip", "config", "get", "global.index-url"], capture_output=True,
                              text=True, timeout=30)
        value = done.stdout.strip() if done.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        value = ""
    return os.environ.get("PIP_INDEX_URL", "").strip() or value or PYPI


def check_wheels_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise InstallError(f"WHEELS_FOLDER {folder} is not a folder: give the folder the wheel files were "
                           "downloaded into")
    if not any(name.endswith(".whl") for name in os.listdir(folder)):
        raise InstallError(f"WHEELS_FOLDER {folder} holds no .whl files: download them with 'python -m pip "
                           "download -d <folder> ...' and give that folder")


# ---------------------------------------------------------------------------------------------- pip
@dataclass
class PipProgress:
    """pip's output lines → a fraction and the lines worth a log line (Collecting, Downloading, Installing)."""

    expected: int = 1  # the top-level requirements: the resolver collects at least these
    collected: int = 0
    phase: str = "resolving"
    online: bool = False  # a "Collecting" line was seen: the "Processing" lines then add nothing

    def feed(self, line: str) -> Tuple[Optional[float], Optional[str]]:
        text = line.strip()
        offline = text.startswith("Processing ") and text.endswith(".whl") and not self.online
        if text.startswith("Collecting ") or offline:  # offline (--find-links) pip says "Processing <wheel>"
            self.online = self.online or text.startswith("Collecting ")
            self.collected += 1
            # every new package moves the bar, never past 70 % (pip does not say how many will come)
            return 0.7 * self.collected / (self.collected + max(self.expected, 1)), text
        if text.startswith(("Downloading ", "Using cached ", "Processing ")):
            return None, text
        if text.startswith("Installing collected packages"):
            self.phase = "installing"
            return 0.8, text
        if text.startswith("Successfully installed"):
            self.phase = "done"
            return 0.9, text
        if text.startswith(("ERROR", "WARNING")):
            return None, text
        return None, None


def pip_command(plan: InstallPlan, target: str, constraints_file: str) -> List[str]:
    cmd = [plan.python, "-m", "pip", "install", "--target", target, "--constraint", constraints_file,
           "--progress-bar", "off", "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
           "--retries", "2", "--only-binary=:all:"]
    if plan.wheels_folder:
        cmd += ["--no-index", "--find-links", plan.wheels_folder]
    else:
        if plan.index_url:
            cmd += ["--index-url", plan.index_url]
        if plan.torch is not None and plan.torch.index_url:
            cmd += ["--extra-index-url", plan.torch.index_url]
    return cmd + plan.pip_requirements()


def run_pip(cmd: List[str], progress: Progress, expected: int, env: Optional[Mapping[str, str]] = None,
            poll_s: float = 0.2, heartbeat_s: float = 30.0, tmpdir: str = "") -> List[str]:
    """Run pip, its lines into the log and the bar; cancel stops it with its whole process group. Returns every
    line (the caller reads the failure from them). ``tmpdir``: pip's own temporaries (a stopped pip leaves its
    unpacked wheels behind, hundreds of MB for PyTorch) go there, inside the install's temporary folder."""
    kwargs: Dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.pop("PYTHONPATH", None)
    if tmpdir:
        os.makedirs(tmpdir, exist_ok=True)
        for key in ("TMPDIR", "TEMP", "TMP"):
            child_env[key] = tmpdir
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=child_env, **kwargs)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: List[str] = []
    meter = PipProgress(expected=expected)
    quiet_since = time.monotonic()
    try:
        finished = False
        while not finished:
            progress.check()
            try:
                line = lines.get(timeout=poll_s)
            except queue.Empty:
                if time.monotonic() - quiet_since > heartbeat_s:  # unpacking PyTorch prints nothing for minutes
                    quiet_since = time.monotonic()
                    progress.log(f"pip: still {meter.phase} …")
                continue
            quiet_since = time.monotonic()
            while line is not None:
                seen.append(line)
                fraction, message = meter.feed(line)
                if message:
                    progress.log(f"pip: {message}")
                if fraction is not None:
                    progress.report(fraction)
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
            else:
                finished = True
        proc.wait()
    except BaseException:
        stop_process_group(proc)
        raise
    finally:
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    if proc.returncode != 0:
        seen.append(f"(pip exited with status {proc.returncode})")
        raise PipFailed(seen)
    return seen


class PipFailed(Exception):
    """pip exited non-zero; ``lines`` is everything it printed (the failure is read from them)."""

    def __init__(self, lines: List[str]):
        super().__init__("\n".join(lines[-20:]))
        self.lines = lines


def stop_process_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop pip and every child it started (SIGTERM to its group, SIGKILL after ``grace_s``)."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "nt":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (OSError, subprocess.TimeoutExpired):
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


_NETWORK_FAILURES = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name "
                     "resolution", "Name or service not known", "Network is unreachable", "ConnectTimeoutError",
                     "Read timed out", "ConnectionResetError", "Connection refused")


def explain_pip_failure(plan: InstallPlan, lines: List[str]) -> str:
    text = "\n".join(lines)
    errors = [line.strip() for line in lines if line.strip().startswith("ERROR")]
    if any(needle in text for needle in _NETWORK_FAILURES):
        return f"no network: pip could not reach the package index; {offline_hint(plan)}"
    if "No space left on device" in text:
        return (f"not enough disk space while installing into {os.path.dirname(plan.folder)}: about "
                f"{size_text(plan.needed_bytes())} are needed; free some space or choose another FOLDER")
    if "ResolutionImpossible" in text or "conflicting dependencies" in text:
        pins = ", ".join(f"{k}=={v}" for k, v in sorted(plan.constraints.items()))
        return (f"pip found no versions that fit QGIS's own packages ({pins}): "
                + (errors[0] if errors else "see the log") + "; the plugin's requirements need updating for "
                "this QGIS (report it)")
    if plan.wheels_folder and ("No matching distribution" in text or "Could not find a version" in text):
        return (f"a wheel is missing from WHEELS_FOLDER {plan.wheels_folder} ({errors[0] if errors else ''}); "
                f"{offline_hint(plan)}")
    return "pip failed: " + (errors[-1] if errors else (lines[-1] if lines else "no output"))


# ---------------------------------------------------------------------------------------------- check
_IMPORT_SCRIPT = r"""
import json, os, sys
sys.path.append(os.environ["DIFFLC_DEPS"])  # appended, as the plugin does: QGIS's own packages come first
from importlib import import_module, metadata
out = {"packages": {}, "device": ""}
for pair in sys.argv[1:]:
    dist, module = pair.split("=", 1)
    entry = {}
    try:
        mod = import_module(module)
        entry["file"] = getattr(mod, "__file__", "") or ""
        try:
            entry["version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            entry["version"] = str(getattr(mod, "__version__", ""))
        version = str(getattr(mod, "__version__", "") or "")
        if version:
            entry["version"] = version
    except BaseException as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    out["packages"][dist] = entry
if "torch" in sys.modules:
    torch = sys.modules["torch"]
    try:
        if torch.cuda.is_available():
            out["device"] = "cuda: " + torch.cuda.get_device_name(0) + " (CUDA " + str(torch.version.cuda) + ")"
        else:
            out["device"] = "cpu" + ("" if torch.version.cuda is None else
                                     " (CUDA build " + str(torch.version.cuda) + ", but no usable GPU)")
    except BaseException as exc:
        out["device"] = f"cpu (CUDA error: {exc})"
    try:  # QGIS's numpy (not one of the folder's) must be the one torch hands arrays to
        import numpy
        out["numpy"] = numpy.__version__ + " " + str(float(torch.from_numpy(numpy.ones(3)).sum()))
    except BaseException as exc:
        out["numpy"] = f"error: {type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@dataclass
class Verified:
    versions: Dict[str, str]
    device: str  # what torch sees ("" without torch)
    problems: List[str]


def verify(plan: InstallPlan, folder: str) -> Verified:
    """Import every requirement in a fresh QGIS interpreter with ``folder`` appended to its path; each must come
    in the version asked for (a different one means QGIS's Python shadows it)."""
    pairs = []
    for line in plan.requirements:
        name, _ = split_requirement(line)
        pairs.append(f"{name}={IMPORT_NAMES.get(normalise(name), name.replace('-', '_'))}")
    result = _run_json(plan.python, _IMPORT_SCRIPT, pairs, timeout=600, path=folder)
    versions, problems = {}, []
    for line in plan.requirements:
        name, wanted = split_requirement(line)
        entry = result["packages"].get(name, {})
        if "error" in entry:
            problems.append(f"{name} does not import ({entry['error']})")
            continue
        got = entry.get("version", "")
        versions[name] = got
        if wanted and got.split("+")[0] != wanted.split("+")[0]:
            where = entry.get("file", "")
            problems.append(f"{name} {got} is imported from {where}, not the {wanted} installed (QGIS's Python "
                            "has its own)")
    if result.get("numpy", "").startswith("error"):
        problems.append(f"torch cannot use QGIS's numpy ({result['numpy'][7:]})")
    return Verified(versions, result.get("device", ""), problems)


# ---------------------------------------------------------------------------------------------- install
@dataclass
class InstallResult:
    folder: str
    already_installed: bool
    versions: Dict[str, str]
    device: str
    seconds: float
    size_bytes: int
    torch_build: Optional[TorchBuild] = None
    pruned: List[str] = field(default_factory=list)


def read_stamp(folder: str) -> Dict:
    try:
        with open(os.path.join(folder, STAMP), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def folder_size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def prune_qgis_packages(target: str, constraints: Mapping[str, str]) -> List[str]:
    """Remove from ``target`` the distributions QGIS's Python already has (pulled in as dependencies at the very
    version pinned): appended after QGIS's site-packages they would never be imported, only take space."""
    from importlib import metadata

    pinned = {normalise(n): v for n, v in constraints.items()}
    removed = []
    for dist in metadata.distributions(path=[target]):
        label, version = dist.metadata["Name"] or "", dist.version  # read before its files go
        name = normalise(label)
        if name not in pinned or version != pinned[name]:
            continue
        for item in dist.files or []:
            path = os.path.join(target, str(item))
            if os.path.abspath(path).startswith(os.path.abspath(target) + os.sep) and os.path.isfile(path):
                os.remove(path)
        for root, dirs, files in os.walk(target, topdown=False):  # the folders emptied by it
            if root != target and not os.listdir(root):
                os.rmdir(root)
        removed.append(f"{label} {version}")
    return removed


def install(plan: InstallPlan, progress: Optional[Progress] = None,
            env: Optional[Mapping[str, str]] = None) -> InstallResult:
    """Install ``plan`` into ``plan.folder``: nothing of QGIS's Python changes, a failure or cancel leaves the
    folder as it was (the work happens in a temporary sibling, renamed into place when complete)."""
    progress = progress or Progress()
    t0 = time.monotonic()
    folder = os.path.abspath(plan.folder)
    check_writable(folder)
    stamp = read_stamp(folder)
    if stamp.get("key") == plan.key() and not plan.reinstall:
        check = verify(plan, folder)
        if not check.problems:
            progress.log(f"Already installed in {folder}: "
                         + ", ".join(f"{k} {v}" for k, v in check.versions.items()))
            progress.report(1.0)
            return InstallResult(folder, True, check.versions, check.device, time.monotonic() - t0,
                                 folder_size(folder), plan.torch)
        progress.log("The installed folder does not import cleanly (" + "; ".join(check.problems) + "): installing "
                     "again")
    progress.log("Pinned to QGIS's own versions: "
                 + (", ".join(f"{k}=={v}" for k, v in sorted(plan.constraints.items())) or "none found"))
    if plan.torch is not None:
        progress.log(f"PyTorch build: {plan.torch.tag or plan.torch.kind} — {plan.torch.why}")
    pip_version = check_pip(plan.python)
    progress.log(f"{pip_version} in QGIS's Python {plan.python}")
    if plan.wheels_folder:
        check_wheels_folder(plan.wheels_folder)
    check_disk(plan)
    check_network(plan)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.part-")
    old = ""
    try:
        constraints_file = os.path.join(work, ".difflc-constraints.txt")
        with open(constraints_file, "w", encoding="utf-8") as handle:
            handle.write(constraints_text(plan.constraints))
        target = os.path.join(work, "site")
        cmd = pip_command(plan, target, constraints_file)
        progress.log("Running: " + " ".join(cmd))
        try:
            run_pip(cmd, progress.sub(0.0, 0.9), expected=len(plan.requirements), env=env,
                    tmpdir=os.path.join(work, "tmp"))
        except PipFailed as exc:
            raise InstallError(explain_pip_failure(plan, exc.lines)) from None
        progress.check()
        pruned = prune_qgis_packages(target, plan.constraints)
        if pruned:
            progress.log("Left to QGIS's own Python (removed from the folder): " + ", ".join(pruned))
        progress.log("Checking every package in a fresh Python …")
        check = verify(plan, target)
        if check.problems:
            raise InstallError("installed, but " + "; ".join(check.problems))
        progress.check()
        with open(os.path.join(target, STAMP), "w", encoding="utf-8") as handle:
            json.dump({"key": plan.key(), "requirements": plan.pip_requirements(), "constraints": plan.constraints,
                       "torch": asdict(plan.torch) if plan.torch else None, "versions": check.versions,
                       "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=1)
        if os.path.exists(folder):  # the previous install steps aside, the new one in, then the old one goes
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.old-")
            os.rename(folder, os.path.join(old, "site"))
        os.rename(target, folder)
    except BaseException:
        if old and not os.path.exists(folder):
            os.rename(os.path.join(old, "site"), folder)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    progress.report(1.0)
    size = folder_size(folder)
    return InstallResult(folder, False, check.versions, check.device, time.monotonic() - t0, size, plan.torch,
                         pruned)


def make_plan(folder: str, requirements: List[str], python: str, torch_build: str = "auto",
              wheels_folder: str = "", index_url: str = "", reinstall: bool = False,
              smi_text: Optional[str] = None) -> InstallPlan:
    """The plan for QGIS's interpreter ``python``: constraints asked from it, the torch build chosen when torch
    is among the requirements."""
    has_torch = any(normalise(split_requirement(r)[0]) == "torch" for r in requirements)
    build = choose_torch_build(torch_build, smi_text) if has_torch else None
    return InstallPlan(folder=folder, requirements=list(requirements), python=python,
                       constraints=qgis_constraints(python), torch=build, wheels_folder=wheels_folder,
                       index_url=index_url, reinstall=reinstall)

"""Writing files safely: one temp-file-then-rename helper, the output-path rules, and the sidecar rule.

Why one place: every output (map, confidence, model, reports, images) must (1) never be half-written, (2) get
the permissions the user's umask gives ordinary files (``mkstemp`` makes 0600), (3) leave nothing behind
when a run fails, is cancelled or gets SIGTERM, whatever the moment, and (4) never replace a file the run reads
or one the user made by hand. Torch- and QGIS-free, so the algorithms call the same checks before any work.

Temporaries belong to the run that made them (:func:`run_scope`): QGIS runs algorithms side by side in
background threads, and one failing run must remove its own temporaries, never another run's. Creating and
registering a temporary, and moving a set of finished files into place, are each one uninterrupted step
(:func:`~engine.stopping.uninterrupted`), so a stop signal can never fall between them.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Set, Tuple

from .errors import OutputPathError
from .stopping import uninterrupted

TEMP_PREFIX = ".difflc-"
# written into every .qml the plugin makes: only such a sidecar may be replaced silently
SIDECAR_MARKER = "written by Diffusion Land Cover"
SIDECAR_SUFFIXES = ("", ".aux.xml", ".qml")  # what GDAL or the plugin may write beside a temporary


class RunTemporaries:
    """The temporaries of one run not yet moved into place, and the outputs it has already completed."""

    def __init__(self) -> None:
        self._live: Set[str] = set()
        self.completed: List[str] = []  # outputs moved into place during this run, in order
        self._lock = threading.Lock()

    def add(self, tmp: str) -> None:
        with self._lock:
            self._live.add(tmp)

    def forget(self, tmp: str) -> None:
        with self._lock:
            self._live.discard(tmp)

    def live(self) -> List[str]:
        with self._lock:
            return sorted(self._live)

    def remove_all(self) -> List[str]:
        """Remove every temporary of this run still alive (and the sidecars GDAL wrote beside it)."""
        with uninterrupted():
            live = self.live()
            for tmp in live:
                discard(tmp)
        return live


_process_run = RunTemporaries()  # temporaries made outside any run_scope (engine scripts, benchmarks)
_current_run: contextvars.ContextVar[Optional[RunTemporaries]] = contextvars.ContextVar(
    "difflc_run_temporaries", default=None)


def current_run() -> RunTemporaries:
    return _current_run.get() or _process_run


@contextlib.contextmanager
def run_scope() -> Iterator[RunTemporaries]:
    """One run's own register of temporaries (a new thread starts outside any scope, as QGIS tasks do)."""
    run = RunTemporaries()
    token = _current_run.set(run)
    try:
        yield run
    finally:
        _current_run.reset(token)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only portable way, and put it back at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What ``open()`` would give a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def temp_beside(path: str, suffix: str = ".tmp") -> str:
    """A unique, not yet existing name in the target's folder (same filesystem, so the move is atomic),
    registered with the current run before this returns: a stop at any moment leaves nothing unregistered."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    run = current_run()
    with uninterrupted():
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
        except OSError as exc:
            raise OutputPathError(f"cannot write into the folder {folder} ({exc.strerror or exc}): choose a "
                                  f"folder you can write to for {os.path.basename(path)}") from None
        run.add(tmp)
        os.close(fd)
        os.remove(tmp)  # writers (GDAL, zipfile) create it themselves; we only wanted the name
    return tmp


def forget(tmp: str) -> None:
    current_run().forget(tmp)


def discard(*paths: Optional[str]) -> None:
    """Remove temporaries (and GDAL's sidecars of them); missing ones are fine."""
    for tmp in paths:
        if not tmp:
            continue
        for suffix in SIDECAR_SUFFIXES:
            with contextlib.suppress(OSError):
                os.remove(tmp + suffix)
        forget(tmp)


def remove_temporaries() -> List[str]:
    """Remove the current run's temporaries still alive (failure/cancel/stop path); returns what was removed."""
    return current_run().remove_all()


def _move(tmp: str, path: str) -> None:
    try:
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        discard(tmp)
        raise OutputPathError(f"cannot write {path} ({exc.strerror or exc}): check the folder's permissions "
                              "and free space, or choose another file") from None
    forget(tmp)


def commit(tmp: str, path: str) -> None:
    """Give ``tmp`` the umask's permissions and move it onto ``path`` (atomic on one filesystem)."""
    commit_all([(tmp, path)])


def commit_all(moves: Sequence[Tuple[str, str]]) -> None:
    """Move several finished temporaries into place as one step a stop signal cannot split (a map never
    lands without its sidecar or its confidence raster)."""
    run = current_run()
    with uninterrupted():
        for tmp, path in moves:
            _move(tmp, path)
            if run is not _process_run:  # a run's record; outside any run nobody reads it
                run.completed.append(path)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary name beside ``path``; on success it becomes ``path``, on any failure it is removed."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        raise
    commit(tmp, path)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


# ------------------------------------------------------------------------------------------- sidecars

def is_own_sidecar(path: str) -> bool:
    """True when ``path`` does not exist or carries the plugin's marker (so replacing it loses nothing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return SIDECAR_MARKER in fh.read(4096)
    except FileNotFoundError:
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------- output rules

@dataclass(frozen=True)
class OutputSpec:
    """One output an algorithm is about to write: its parameter, path and the extensions its format takes."""

    name: str
    path: str
    extensions: Sequence[str] = ()  # lower case with the dot; empty = any
    create_folder: bool = False  # the folder may be created (e.g. the download cache)


@dataclass(frozen=True)
class InputSpec:
    name: str
    path: str


def real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.path.expanduser(path))))


def _folder_problem(folder: str, create: bool) -> Optional[str]:
    if os.path.isdir(folder):
        return None if _writable(folder) else "is not writable"
    if os.path.exists(folder):
        return "is not a folder"
    if not create:
        return "does not exist"
    parent = folder
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    if not os.path.isdir(parent):
        return f"cannot be created ({parent} is not a folder)"
    return None if _writable(parent) else f"cannot be created ({parent} is not writable)"


def _writable(folder: str) -> bool:
    """Tried, not guessed: os.access is wrong for root, ACLs and read-only mounts. An unnamed file (Linux
    O_TMPFILE) leaves nothing behind whatever happens; elsewhere a named probe made and removed in one step."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            os.close(os.open(folder, tmpfile | os.O_WRONLY, 0o600))
            return True
        except IsADirectoryError:  # the filesystem has no O_TMPFILE: probe by name
            pass
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: no O_TMPFILE here either
                return False
    with uninterrupted():
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".probe")
        except OSError:
            return False
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(probe)
    return True


def check_outputs(outputs: Sequence[OutputSpec], inputs: Sequence[InputSpec]) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other or cannot be written.

    Compares resolved real paths (symlinks, ``..``, case on Windows). Each refusal names the parameter and
    the path and says what to do; the first problem found is raised as :class:`OutputPathError`.
    """
    seen = {}
    sources = {}
    for spec in inputs:
        if spec.path:
            sources.setdefault(real(spec.path), spec)
    for out in outputs:
        if not out.path:
            continue
        path = out.path
        key = real(path)
        if key in sources:
            src = sources[key]
            raise OutputPathError(f"{out.name}: {path} is the input {src.name}; writing it would destroy that "
                                  "input: choose another output file")
        if key in seen:
            raise OutputPathError(f"{out.name}: {path} is also the output {seen[key].name}; one would overwrite "
                                  "the other: give each output its own file")
        seen[key] = out
        ext = os.path.splitext(path)[1].lower()
        if out.extensions and ext not in out.extensions:
            raise OutputPathError(
                f"{out.name}: {path} — '{ext or 'no extension'}' does not fit what is written here "
                f"({', '.join(out.extensions)}): give a name ending in {out.extensions[0]}")
        if os.path.isdir(path):
            raise OutputPathError(f"{out.name}: {path} is a folder: give a file name inside it")
        folder = os.path.dirname(os.path.abspath(path))
        problem = _folder_problem(folder, out.create_folder)
        if problem:
            raise OutputPathError(f"{out.name}: the folder {folder} {problem}: choose a folder you can write "
                                  "to")

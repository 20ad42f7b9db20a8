"""Stop signals (SIGTERM, SIGINT) that unwind a run like Cancel, and the few steps they must not split.

Why: a signal handler runs wherever the main thread happens to be. Raised between "a temporary file exists" and
"it is registered for removal", or between moving a map and its sidecar into place, it would leave a hidden or a
partial file. So the steps that must finish once begun run inside :func:`uninterrupted`; a stop that arrives
meanwhile is held and raised as soon as the step is over. Everything else unwinds at once, so every writer's
clean-up (and the run's :class:`~engine.files.RunTemporaries`) runs. Torch-, GDAL- and QGIS-free.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator, List, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(BaseException):
    """A stop signal during a run. A BaseException (like KeyboardInterrupt), so no ``except Exception`` on the
    way up can swallow it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


class _Gate(threading.local):
    depth = 0
    pending: Optional[int] = None


_gate = _Gate()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A step that must not be split by a stop signal (it is held until the step ends, then raised).

    Nested sections hold it until the outermost ends. Meant for short steps: creating and registering a
    temporary, moving a set of finished files into place, removing temporaries.
    """
    outer = _gate.depth == 0
    _gate.depth += 1
    try:
        yield
    except BaseException:
        _gate.depth -= 1
        if outer:  # the run is unwinding anyway (the handler recorded the stop): nothing left to raise later
            _gate.pending = None
        raise
    _gate.depth -= 1
    if outer and _gate.pending is not None:
        signum, _gate.pending = _gate.pending, None
        raise Terminated(signum)


def _hold_or_raise(signum: int) -> None:
    if _gate.depth > 0:
        _gate.pending = signum
        return
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_unwind(on_stop: Optional[Callable[[int], None]] = None) -> Iterator[List[int]]:
    """While the body runs in the main thread, SIGTERM and SIGINT raise :class:`Terminated` in it.

    ``on_stop(signum)`` runs first (e.g. to set the run's cancel flag, so a library that swallows the exception
    still stops at the next progress check). From the first signal on, a second one gets the default action, so
    clean-up can never keep the process alive. The previous handlers come back afterwards. Yields the list of
    signals received. Outside the main thread (QGIS desktop's background tasks) Python cannot install handlers:
    nothing changes there.
    """
    received: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    closing = []

    def handler(signum, frame):
        if closing:  # the body is over (its outputs are in place): nothing left to stop
            return
        for s in STOP_SIGNALS:  # a second signal is not delayed by our clean-up
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, signal.SIG_DFL)
        received.append(signum)
        if on_stop is not None:
            on_stop(signum)
        _hold_or_raise(signum)

    previous = {}
    try:
        for s in STOP_SIGNALS:
            previous[s] = signal.signal(s, handler)
    except (ValueError, OSError):  # not the interpreter's main thread after all
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        yield received
        return
    try:
        yield received
    finally:
        closing.append(True)
        _gate.pending = None
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)

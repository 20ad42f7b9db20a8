"""GDAL, OGR and OSR raise Python exceptions inside the plugin's own calls, and only there.

Why: ``gdal.UseExceptions()`` at import time switches the error mode for QGIS and every other plugin in the
process, which may rely on GDAL's return codes. The plugin's GDAL code (``raster_io``, ``labels``) is written for
exceptions, so each of its functions runs inside :func:`raising`, which puts the process's modes back afterwards.

GDAL 3.7 and newer scope the mode per thread (``ExceptionMgr``). Older bindings (Debian 12 has 3.6) keep one
mode per module for the whole process: there the first of the plugin's calls in flight switches exceptions on
and the last one out restores what it found, so between the plugin's calls the process's mode is untouched.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Dict, Iterator

from osgeo import gdal, ogr, osr

_MODULES = (gdal, ogr, osr)
_lock = threading.Lock()
_depth = 0
_saved = (0, 0, 0)
_THREAD_LOCAL_MODE = hasattr(gdal, "ExceptionMgr") and hasattr(ogr, "ExceptionMgr") and hasattr(osr, "ExceptionMgr")


@contextlib.contextmanager
def raising() -> Iterator[None]:
    if _THREAD_LOCAL_MODE:
        with gdal.ExceptionMgr(useExceptions=True), ogr.ExceptionMgr(useExceptions=True), \
                osr.ExceptionMgr(useExceptions=True):
            yield
        return
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = tuple(m.GetUseExceptions() for m in _MODULES)
            for m, was in zip(_MODULES, _saved):
                if not was:
                    m.UseExceptions()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for m, was in reversed(list(zip(_MODULES, _saved))):  # 3.6 keeps a stack of handlers: LIFO
                    if not was and m.GetUseExceptions():
                        with contextlib.suppress(RuntimeError):  # another handler pushed since: leave it
                            m.DontUseExceptions()


def _scoped(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with raising():
            return fn(*args, **kwargs)
    return call


def scope_module(namespace: Dict[str, object]) -> None:
    """Run every function and method defined in the module whose globals are ``namespace`` inside
    :func:`raising` (called once at the end of that module; properties and generated methods are left)."""
    source = namespace.get("__file__")

    def own(fn) -> bool:
        return inspect.isfunction(fn) and fn.__code__.co_filename == source

    for name, value in list(namespace.items()):
        if own(value):
            namespace[name] = _scoped(value)
        elif inspect.isclass(value) and value.__module__ == namespace.get("__name__"):
            for attr, member in list(vars(value).items()):
                if isinstance(member, staticmethod) and own(member.__func__):
                    setattr(value, attr, staticmethod(_scoped(member.__func__)))
                elif isinstance(member, classmethod) and own(member.__func__):
                    setattr(value, attr, classmethod(_scoped(member.__func__)))
                elif own(member):
                    setattr(value, attr, _scoped(member))

"""Processing algorithms of the ``difflc`` provider.

Adding an algorithm = adding its module name to :data:`ALGORITHM_MODULES`. A module that is listed but
missing or broken is logged and skipped, so one bad module never takes the whole provider down (and
qgis_process, which loads every enabled provider at every call, keeps working).
"""
from __future__ import annotations

import importlib
import inspect
import traceback
from typing import List, Type

ALGORITHM_MODULES = [
    "checkenvironment",
    "installdependencies",
    "createlabellayer",
    "downloadbackbone",
    "buildrepresentations",
    "adaptbackbone",
    "trainclassifier",
    "classify",
    "classifymany",
    "trainandclassify",
    "accuracy",
    "cleanmap",
    "changestatistics",
    "detectchanges",
    "applychangemodel",
    "segmentobjects",
    "trainobjectclassifier",
    "classifyobjects",
    "trainandclassifyobjects",
]

LOG_TAG = "Diffusion Land Cover"


def _log(message: str) -> None:
    try:
        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning)
    except Exception:  # pragma: no cover - only without QGIS
        import sys

        print(f"{LOG_TAG}: {message}", file=sys.stderr)


def algorithm_classes(modules=None) -> List[Type]:
    """Every concrete :class:`~.base.DiffLcAlgorithm` subclass defined in the listed modules, in list order."""
    from .base import DiffLcAlgorithm

    found: List[Type] = []
    for name in ALGORITHM_MODULES if modules is None else modules:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception as exc:  # ImportError for a missing module, anything for a broken one
            _log(f"algorithm module '{name}' could not be loaded and is skipped: {exc!r}\n"
                 f"{traceback.format_exc()}")
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (issubclass(obj, DiffLcAlgorithm) and obj is not DiffLcAlgorithm
                    and obj.__module__ == module.__name__ and getattr(obj, "NAME", "")):
                found.append(obj)
    return found

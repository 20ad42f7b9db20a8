"""Qt spellings that differ between QGIS 3 (Qt 5, PyQt5) and QGIS 4 (Qt 6, PyQt6), chosen at call time.

Everything else in the plugin is spelt the one way both accept (``qgis.PyQt`` imports, fully scoped enums,
``exec()``); ``tests/qgis/test_qt6_spellings.py`` checks every module against PyQt5 and PyQt6.
"""
from __future__ import annotations

from qgis.core import Qgis

# QgsField(name, QMetaType.Type) exists from QGIS 3.38; QGIS 4 (PyQt6) has no QVariant.Type at all
QMETATYPE_FIELDS = 33800


def field_type(meta_type):
    """A ``QMetaType.Type`` (e.g. ``QMetaType.Type.Int``) as the ``QgsField`` constructor of this QGIS takes it.

    QGIS >= 3.38 takes the ``QMetaType.Type`` itself. Older QGIS (3.22 here) accepts only a ``QVariant.Type``,
    whose values in Qt 5 are the ``QMetaType`` ones (``QVariant::Int == QMetaType::Int``), and sip takes that
    value as a plain int, so no ``QVariant`` spelling is needed.
    """
    return meta_type if Qgis.versionInt() >= QMETATYPE_FIELDS else int(meta_type)

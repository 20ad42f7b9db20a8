"""QGIS 3 and QGIS 4 from one code base: every Qt spelling in the plugin resolves in PyQt5 and in PyQt6.

QGIS 4 cannot be installed here; PyQt6 (requirements/dev.txt) is, and is only ever imported in a child
interpreter (this process has QGIS's PyQt5 loaded). See tests/qgis/qt_spellings.py for what a chain is.
"""
from __future__ import annotations

import ast
import configparser
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qt_spellings  # noqa: E402


def _pyqt6_available() -> bool:
    try:
        return qt_spellings.resolve([qt_spellings.Chain("-", 0, "QtCore", ("Qt",))], "PyQt6") == [True]
    except RuntimeError:
        return False


pytestmark = pytest.mark.skipif(not _pyqt6_available(), reason="PyQt6 (requirements/dev.txt) is not installed")


def test_every_plugin_module_spells_qt_the_way_pyqt5_and_pyqt6_both_accept():
    files = qt_spellings.plugin_files()
    assert len(files) > 40  # the walk found the plugin (guards against a silent empty pass)
    chains = [c for f in files for c in qt_spellings.chains_in(f)]
    assert {c.path for c in chains} >= {"plugin/plugin.py", "algorithms/base.py", "algorithms/createlabellayer.py"}
    assert qt_spellings.problems(files) == []


def test_engine_imports_no_qgis_and_no_qt():
    for path in (qt_spellings.REPO / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in {"qgis", "PyQt5", "PyQt6"}, f"{path}: imports {name}"


def test_the_checker_reports_pyqt5_only_spellings(tmp_path):
    """Plant PyQt5-only spellings in a module and check each one is reported, and good ones are not."""
    (tmp_path / "bad.py").write_text(textwrap.dedent("""
        from qgis.PyQt.QtCore import Qt, QVariant, QMetaType
        from qgis.PyQt.QtWidgets import QAction, QMessageBox, QDialog
        from qgis.PyQt import QtCore

        def f(widget, dialog):
            widget.setAlignment(Qt.AlignLeft)                 # unscoped enum
            field = QVariant.Int                              # QVariant type code
            answer = QMessageBox.Yes                          # unscoped enum
            QMessageBox().exec_()                             # method removed in PyQt6, on an instance
            dialog.exec_()                                    # same, on any object
            flags = QtCore.Qt.AlignRight                      # through the module
            # good spellings, must not be reported
            widget.setAlignment(Qt.AlignmentFlag.AlignLeft)
            ok = QMessageBox.StandardButton.Yes, QMetaType.Type.Int, QDialog.DialogCode.Accepted
            QMessageBox().exec(), QAction("y").menu().exec()
            from qgis.PyQt.QtWebKitWidgets import QWebPage  # qt5-only: exempt from the PyQt6 check
    """))
    report = qt_spellings.problems([tmp_path / "bad.py"], root=tmp_path)
    text = "\n".join(report)
    for expected in ("bad.py:7: QtCore.Qt.AlignLeft does not exist in PyQt6",
                     "bad.py:8: QtCore.QVariant.Int does not exist in PyQt6",
                     "bad.py:9: QtWidgets.QMessageBox.Yes does not exist in PyQt6",
                     "bad.py:10: QtWidgets.QMessageBox().exec_ does not exist in PyQt6",
                     "bad.py:10: .exec_() is PyQt5-only",
                     "bad.py:11: .exec_() is PyQt5-only",
                     "bad.py:12: QtCore.Qt.AlignRight does not exist in PyQt6"):
        assert expected in text, (expected, report)
    assert len(report) == 7, report  # nothing from lines 13-17: scoped spellings, exec(), the qt5-only line


def test_a_spelling_missing_in_pyqt5_is_reported_too(tmp_path):
    (tmp_path / "new.py").write_text("from qgis.PyQt.QtGui import QAction\nx = QAction\n")  # Qt 6 only
    report = qt_spellings.problems([tmp_path / "new.py"], root=tmp_path)
    assert report == ["new.py:1: QtGui.QAction does not exist in PyQt5"], report


def test_metadata_declares_qgis_4():
    parser = configparser.ConfigParser()
    parser.read(qt_spellings.REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    assert general["qgisMaximumVersion"] == "4.99"
    assert general["supportsQt6"] == "True"


def test_field_type_is_what_this_qgis_takes(qgis_app):
    from qgis.core import Qgis, QgsField
    from qgis.PyQt.QtCore import QMetaType

    from diffusion_landcover.algorithms.qtcompat import field_type

    field = QgsField("n", field_type(QMetaType.Type.Int))
    assert field.type() == QMetaType.Type.Int
    assert QgsField("s", field_type(QMetaType.Type.QString)).type() == QMetaType.Type.QString
    if Qgis.versionInt() < 33800:
        with pytest.raises(TypeError):  # why the helper exists: 3.22 refuses the QMetaType itself
            QgsField("n", QMetaType.Type.Int)

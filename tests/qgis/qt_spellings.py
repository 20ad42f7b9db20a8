"""Which Qt spellings in the plugin's modules would break on QGIS 4 (Qt 6 / PyQt6) or on QGIS 3 (PyQt5).

Every module is parsed with ``ast`` (nothing is imported). A *chain* is an attribute path rooted at a name
imported from ``qgis.PyQt.<module>``: ``Qt.AlignmentFlag.AlignLeft``, ``QVariant.Int``, ``QMessageBox().exec_``
(an attribute of a class's instance is looked up on the class; after any other call the chain stops). Each chain is resolved in a separate interpreter
that imports only PyQt6 (or only PyQt5): the pytest process has QGIS's PyQt5 loaded and must never import
PyQt6. Method names that PyQt6 removed (``exec_``, ``print_``) are also caught on any object, since
``dialog.exec_()`` has no imported root to resolve.

A line ending in ``# qt5-only: <reason>`` is exempt from the PyQt6 check (it must still resolve in PyQt5):
for code that runs only on Qt 5 builds, e.g. QtWebKit, which QGIS 4 does not have.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
# every Python file the plugin ships or runs (tests and benchmarks are not the plugin)
PLUGIN_SOURCES = ("__init__.py", "plugin", "algorithms", "engine", "scripts")
REMOVED_METHODS = {"exec_": "exec", "print_": "print"}
QT5_ONLY_MARK = "# qt5-only:"
# QGIS's own Qt 6 shim keeps these importable from qgis.PyQt.QtWidgets although Qt 6 moved them to QtGui
# (qgis/QGIS pull requests 55658 and 57467): that is where QGIS 3.22's PyQt5 has them.
QGIS_QT6_MOVED = {("QtWidgets", "QAction"): "QtGui", ("QtWidgets", "QShortcut"): "QtGui",
                  ("QtWidgets", "QActionGroup"): "QtGui"}


@dataclass(frozen=True)
class Chain:
    path: str  # file, relative to the repository
    line: int
    qt_module: str  # "QtCore"
    names: Tuple[str, ...]  # ("Qt", "AlignmentFlag", "AlignLeft"); "()" marks a call's result
    qt5_only: bool = False

    @property
    def text(self) -> str:
        return ".".join(self.names).replace(".()", "()")


def plugin_files(root: Path = REPO) -> List[Path]:
    files = []
    for name in PLUGIN_SOURCES:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*.py")) if "__pycache__" not in p.parts)
    return files


def _qt_imports(tree: ast.AST) -> Dict[str, Tuple[str, Optional[str]]]:
    """Local name -> (Qt module, imported name or None for the module itself)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "qgis.PyQt":
                for alias in node.names:
                    names[alias.asname or alias.name] = (alias.name, None)
            elif node.module.startswith("qgis.PyQt."):
                module = node.module.split(".", 2)[2]
                for alias in node.names:
                    names[alias.asname or alias.name] = (module, alias.name)
    return names


def _unwind(node: ast.AST) -> Optional[Tuple[str, List[str]]]:
    """``a.b().c`` -> ("a", ["b", "()", "c"]); None when the chain does not start at a plain name."""
    parts: List[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        elif isinstance(node, ast.Name):
            return node.id, parts[::-1]
        else:
            return None


def chains_in(path: Path, root: Path = REPO) -> List[Chain]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    lines = source.splitlines()
    imports = _qt_imports(tree)
    rel = path.relative_to(root).as_posix()
    found = set()

    def exempt(lineno: int) -> bool:
        return QT5_ONLY_MARK in lines[lineno - 1]

    for node in ast.walk(tree):  # every imported name is a chain of its own (the import must work)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("qgis.PyQt"):
            for alias in node.names:
                module, name = imports[alias.asname or alias.name]
                found.add(Chain(rel, node.lineno, module, (name,) if name else (), exempt(node.lineno)))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) or (isinstance(parent, ast.Call) and parent.func is node
                                                 and isinstance(parents.get(parent), ast.Attribute)):
            continue  # not the outermost attribute of its chain (a.b.c, a.b().c are looked at from c)
        unwound = _unwind(node)
        if unwound is None or unwound[0] not in imports:
            continue
        module, name = imports[unwound[0]]
        names = ((name,) if name else ()) + tuple(unwound[1])
        while names and names[-1] == "()":
            names = names[:-1]
        found.add(Chain(rel, node.lineno, module, names, exempt(node.lineno)))
    return sorted(found, key=lambda c: (c.path, c.line, c.names))


def removed_methods_in(path: Path, root: Path = REPO) -> List[str]:
    """``exec_``/``print_`` on any object: PyQt6 has only ``exec``/``print``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = path.relative_to(root).as_posix()
    return [f"{rel}:{node.lineno}: .{node.attr}() is PyQt5-only, use .{REMOVED_METHODS[node.attr]}()"
            for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in REMOVED_METHODS]


_RESOLVER = r"""
import importlib, json, sys
binding, moved = sys.argv[1], json.loads(sys.argv[2])
out = []
for module, names in json.loads(sys.stdin.read()):
    if names and binding == "PyQt6" and f"{module}.{names[0]}" in moved:
        module = moved[f"{module}.{names[0]}"]
    try:
        obj = importlib.import_module(f"{binding}.{module}")
        for name in names:
            if name == "()":
                if not isinstance(obj, type):
                    break  # what a function returns is not known statically: resolved as far as it can be
                continue  # an instance's attributes are looked up on its class
            obj = getattr(obj, name)
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
"""


def resolve(chains: Iterable[Chain], binding: str, python: str = sys.executable) -> List[bool]:
    """Whether each chain exists in ``binding`` ("PyQt5" or "PyQt6"), asked in a fresh interpreter."""
    chains = list(chains)
    moved = {f"{m}.{n}": target for (m, n), target in QGIS_QT6_MOVED.items()}
    payload = json.dumps([[c.qt_module, list(c.names)] for c in chains])
    proc = subprocess.run([python, "-c", _RESOLVER, binding, json.dumps(moved)], input=payload,
                          capture_output=True, text=True, timeout=300,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise RuntimeError(f"resolving against {binding} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def problems(files: Iterable[Path], root: Path = REPO, python: str = sys.executable) -> List[str]:
    """Every spelling that would fail on PyQt6 (unless marked qt5-only) or on PyQt5, as 'file:line: text'."""
    files = list(files)
    chains = [c for f in files for c in chains_in(f, root)]
    report = [msg for f in files for msg in removed_methods_in(f, root)]
    for binding, results in (("PyQt6", resolve(chains, "PyQt6", python)), ("PyQt5", resolve(chains, "PyQt5", python))):
        for chain, ok in zip(chains, results):
            if not ok and not (binding == "PyQt6" and chain.qt5_only):
                report.append(f"{chain.path}:{chain.line}: {chain.qt_module}.{chain.text} does not exist in {binding}")
    return report

"""DESIGN.md's layering rules, checked on the source (AST, so that comments,
strings and lazy imports inside functions are all seen)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUI_TOOLKITS = {"PySide6", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "vtk", "vtkmodules"}


def imported_top_modules(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = path.relative_to(ROOT).parts[: -node.level]
                mod = ".".join(pkg + ((node.module,) if node.module else ()))
            else:
                mod = node.module or ""
            found.add((mod.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add((str(node.args[0].value).split(".")[0], node.lineno))
    return found


def violations(layer: str, forbidden: set[str]) -> list[str]:
    out = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for mod, line in imported_top_modules(path):
            if mod in forbidden:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return out


@pytest.mark.parametrize("layer", ["core", "devices"])
def test_core_and_devices_never_import_gui_toolkits(layer):
    assert violations(layer, GUI_TOOLKITS) == []


def test_core_never_imports_upper_layers():
    assert violations("core", {"app", "widgets", "devices"}) == []


def test_devices_never_import_app_or_widgets():
    assert violations("devices", {"app", "widgets"}) == []


def test_checker_catches_a_violation(tmp_path, monkeypatch):
    """The rule must be able to fail: a planted bad import is reported."""
    bad = tmp_path / "core"
    bad.mkdir()
    (bad / "x.py").write_text("def f():\n    from PySide6 import QtCore\n    import devices.robot\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("core", GUI_TOOLKITS) == ["core/x.py:2 imports PySide6"]
    assert violations("core", {"devices"}) == ["core/x.py:3 imports devices"]


def test_core_imports_without_qt_loaded():
    """Importing every core module must not pull in Qt or VTK (checked in a fresh interpreter)."""
    import subprocess
    import sys
    mods = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / "core").rglob("*.py") if p.name != "__init__.py")
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "bad = [m for m in ('PySide6', 'pyqtgraph', 'vtkmodules') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""

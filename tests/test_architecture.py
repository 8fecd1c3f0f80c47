"""DESIGN.md's layers, checked: the import-linter contracts in setup.cfg, no import cycle
between modules, and ``core`` importable with no Qt or VTK loaded. Lazy imports inside
functions count (import-linter and grimp read the source)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "devices", "app", "widgets")


def lint(config: Path, cwd: Path, path: Path) -> subprocess.CompletedProcess:
    """import-linter in its own interpreter: its logging set-up (``dictConfig``) would disable
    every logger already made in this one."""
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(path)!r})
        from importlinter.cli import lint_imports
        sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))""")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_import_linter_contracts_are_kept():
    out = lint(ROOT / "setup.cfg", ROOT, ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_a_planted_violation_breaks_a_contract(tmp_path, monkeypatch):
    """The contracts can fail: a core module importing Qt lazily and a widget importing app."""
    for pkg, body in {"core": "def f():\n    from PySide6 import QtCore\n",
                      "widgets": "import app.x\n", "app": "X = 1\n", "devices": ""}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "x.py").write_text(body)
    cfg = tmp_path / "setup.cfg"
    own = (ROOT / "setup.cfg").read_text()
    cfg.write_text(own[own.index("[importlinter]"):own.index("[importlinter:contract:core-rooms]")])
    out = lint(cfg, tmp_path, tmp_path)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "core.x -> PySide6" in out.stdout
    assert "widgets.x -> app.x" in out.stdout


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative, in sorted
    module order so that the report is the same on every machine)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter; counter += 1
        stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter; counter += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycle(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    assert import_cycles(grimp.build_graph(*PACKAGES, cache_dir=None)) == []


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyc import a\n")   # a lazy import closes it
    (pkg / "c.py").write_text("from cyc import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyc", cache_dir=None)) == [["cyc.a", "cyc.b"]]


def test_core_imports_without_qt_loaded():
    """Importing every core module must not pull in Qt or VTK (checked in a fresh interpreter)."""
    mods = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / "core").rglob("*.py") if p.name != "__init__.py")
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "bad = [m for m in ('PySide6', 'pyqtgraph', 'vtkmodules') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""

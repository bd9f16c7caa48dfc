"""The layering rule, harness <- evals <- methods <- reproduce: no module imports a higher layer,
and methods never import evals (validation is injected: harness.validation). Every import counts,
at module level or inside a function, ``import x`` / ``from x import y`` / relative imports."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "harness": {"evals", "methods", "reproduce", "bench"},
    "evals": {"methods", "reproduce", "bench"},
    "methods": {"evals", "reproduce", "bench"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("methods", "vold", "trainer")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # a relative import stays inside the module's own top-level package
            top = rel[0] if node.level else (node.module or "").split(".")[0]
            out.append((node.lineno, top))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value.split(".")[0]))  # importlib.import_module("x.y")
    return out


def violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, top in imported_packages(path):
            if top in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {top}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_layer(layer):
    assert (ROOT / layer).is_dir()
    assert violations(layer) == []


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    pkg = tmp_path / "methods" / "x"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("import os\n\ndef f():\n    from evals.benchmarks import get_benchmark\n"
                              "    import reproduce.cli\n    importlib.import_module('evals.validation')\n"
                              "    from . import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("methods") == ["methods/x/m.py:4: imports evals", "methods/x/m.py:5: imports reproduce",
                                      "methods/x/m.py:6: imports evals"]

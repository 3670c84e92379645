"""The layering rules of design.md, checked on the source with ``ast`` (and once for real, in a subprocess).

Two kinds of rule:

- *never imports*: every import anywhere in a module (inside functions too, and
  ``importlib.import_module("x")`` with a literal name) counts;
- *light at import time*: only imports that run when the module is imported count (module level,
  class bodies, module-level ``if``/``try``/``with``), except under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accelerate_core", "templates_db", "workers", "scheduler")
HEAVY = ("torch", "transformers", "duckdb", "celery", "jinja2")

NEVER: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("accelerate_core/**", ("templates_db", "workers", "scheduler", "jinja2", "celery"), "core imports nothing above"),
    ("templates_db/**", ("workers", "scheduler", "celery"), "templates_db imports only accelerate_core"),
    ("scheduler/**", ("workers",), "scheduler and workers never import each other"),
    ("workers/**", ("scheduler",), "scheduler and workers never import each other"),
)
"""(files, forbidden top-level packages, rule) for imports anywhere in a module."""

LIGHT: tuple[tuple[str, str], ...] = (
    ("accelerate_core/__init__.py", "import accelerate_core stays light"),
    ("accelerate_core/config.py", "config stays light"),
    ("accelerate_core/backends/*", "backends stay light (torch only inside functions)"),
    ("scheduler/__init__.py", "import scheduler stays light"),
    ("scheduler/cli/*", "the CLI starts without heavy imports"),
)
"""(files, rule) that must not import any of HEAVY at import time."""


@dataclass(frozen=True)
class Import:
    """One imported module name and where."""

    name: str
    line: int
    at_import_time: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, base] if base else pkg)
    return [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Nodes executed when the module is imported: not function bodies, not TYPE_CHECKING blocks."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in stmt.decorator_list:
                yield from ast.walk(decorator)
        elif isinstance(stmt, ast.ClassDef):
            yield from _import_time_nodes(stmt.body)
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from ast.walk(stmt.test)
                yield from _import_time_nodes(stmt.body)
            yield from _import_time_nodes(stmt.orelse)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            for block in (stmt.body, *(h.body for h in stmt.handlers), stmt.orelse, stmt.finalbody):
                yield from _import_time_nodes(block)
        elif isinstance(stmt, ast.With | ast.For | ast.While):
            header = (
                stmt.items if isinstance(stmt, ast.With) else [stmt.iter if isinstance(stmt, ast.For) else stmt.test]
            )
            for node in header:
                yield from ast.walk(node)
            yield from _import_time_nodes(stmt.body)
            yield from _import_time_nodes(getattr(stmt, "orelse", []))
        else:
            yield from ast.walk(stmt)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import of a module's source, flagged with whether it runs at import time."""
    tree = ast.parse(source)
    eager = {id(n) for n in _import_time_nodes(tree.body)}
    found: list[Import] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(node, module, is_package)
        elif isinstance(node, ast.Call) and (dyn := _dynamic(node)):
            names = [dyn]
        found += [Import(n, node.lineno, id(node) in eager) for n in names if n]  # type: ignore[attr-defined]
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def violations(rel: str, source: str) -> list[str]:
    """Every rule broken by the file at ``rel`` (a path relative to the repository root)."""
    path = ROOT / rel
    found = imports_of(source, _module_name(path), path.name == "__init__.py")
    out: list[str] = []
    for pattern, forbidden, rule in NEVER:
        if fnmatch(rel, pattern):
            out += [f"{rel}:{i.line}: {rule}: imports {i.name}" for i in found if _top(i.name) in forbidden]
    for pattern, rule in LIGHT:
        if fnmatch(rel, pattern):
            out += [
                f"{rel}:{i.line}: {rule}: imports {i.name} at import time (move it into a function)"
                for i in found
                if i.at_import_time and _top(i.name) in HEAVY
            ]
    return out


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_follows_the_layer_rules() -> None:
    # Given every module of the four packages
    files = _sources()
    assert len(files) > 10, "the packages were not found"
    # When their imports are checked against the rules
    broken = [v for f in files for v in violations(str(f.relative_to(ROOT)), f.read_text(encoding="utf-8"))]
    # Then none is broken
    assert not broken, "layer rules broken:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("accelerate_core/x.py", "def f():\n    import jinja2\n", "core imports nothing above: imports jinja2"),
        ("accelerate_core/x.py", "from scheduler.cli import app\n", "imports scheduler.cli"),
        ("accelerate_core/x.py", "import importlib\nimportlib.import_module('celery')\n", "imports celery"),
        ("templates_db/x.py", "from workers import tasks\n", "templates_db imports only accelerate_core"),
        ("scheduler/x.py", "def f():\n    from workers.job import execute\n", "never import each other"),
        ("workers/x.py", "from ..scheduler import plan\n", "imports scheduler"),
        ("accelerate_core/config.py", "import duckdb\n", "config stays light: imports duckdb at import time"),
        ("accelerate_core/backends/cuda.py", "try:\n    import torch\nexcept ImportError:\n    pass\n", "torch"),
        ("scheduler/cli/foo.py", "class A:\n    from transformers import AutoModel\n", "transformers"),
        ("scheduler/__init__.py", "if True:\n    import celery\n", "import scheduler stays light"),
    ],
)
def test_the_checker_flags_each_rule(rel: str, source: str, expected: str) -> None:
    # Given a module that breaks one rule; When it is checked; Then the message names file, line and rule
    found = violations(rel, source)
    assert any(expected in v and v.startswith(f"{rel}:") for v in found), found


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("accelerate_core/backends/cuda.py", "def sync():\n    import torch\n    torch.cuda.synchronize()\n"),
        ("scheduler/cli/foo.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import duckdb\n"),
        ("accelerate_core/dispatch.py", "import torch\n"),  # dispatch may be heavy; it is not in LIGHT
        ("templates_db/render.py", "import jinja2\n"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(rel: str, source: str) -> None:
    assert violations(rel, source) == []


def test_relative_imports_are_resolved() -> None:
    found = imports_of("from .. import errors\nfrom .base import Backend\n", "accelerate_core.backends.cuda")
    assert {i.name for i in found} >= {"accelerate_core.errors", "accelerate_core.backends.base"}


def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_core_loads_no_heavy_module() -> None:
    # Given a fresh interpreter; When the light core modules are imported; Then no heavy module is loaded
    assert _loaded_after("import accelerate_core, accelerate_core.config, accelerate_core.backends") == []


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _loaded_after("import scheduler, scheduler.cli") == []

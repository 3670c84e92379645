"""The layering rules of design.md, checked on the source with ``ast`` (and once for real, in a subprocess).

Three kinds of rule:

- *never imports*: every import anywhere in a module (inside functions too, and
  ``importlib.import_module("x")`` with a literal name) counts;
- *light at import time*: only imports that run when the module is imported count (module level,
  class bodies, module-level ``if``/``try``/``with``), except under ``if TYPE_CHECKING:``;
- *no cycles*: the modules of the packages, linked by every import that can run (inside functions
  too; not under ``if TYPE_CHECKING:``, not a module's own parent packages), form no circle. A cycle
  hidden in a function-level import is still one: neither module can be understood or moved alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accelerate_core", "templates_db", "workers", "scheduler")
ACYCLIC = ("accelerate_core", "templates_db", "scheduler")
"""Packages whose modules must not import each other in a circle."""
HEAVY = ("torch", "transformers", "duckdb", "celery", "jinja2")

NEVER: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("accelerate_core/**", ("templates_db", "workers", "scheduler", "jinja2", "celery"), "core imports nothing above"),
    ("templates_db/**", ("workers", "scheduler", "celery"), "templates_db imports only accelerate_core"),
    ("scheduler/**", ("workers",), "scheduler and workers never import each other"),
    ("workers/**", ("scheduler",), "scheduler and workers never import each other"),
    (
        "scheduler/plan.py",
        ("templates_db", "accelerate_core.store", "accelerate_core.catalog", "duckdb", "redis", "celery"),
        "planning is pure (scheduler/planning_inputs.py gathers its inputs)",
    ),
)
"""(files, forbidden packages or modules, rule) for imports anywhere in a module."""

ALLOWED: tuple[tuple[str, str, str], ...] = (
    (
        "accelerate_core/service/pages.py",
        "jinja2",
        "the results pages are rendered with jinja2 (autoescape on); the service sits in the core because the "
        "writer (workers) and `accel serve` (scheduler) both host it, and the core is the one layer below both",
    ),
)
"""(file, package, why): the exceptions to NEVER, each with its reason."""

LIGHT: tuple[tuple[str, str], ...] = (
    ("accelerate_core/__init__.py", "import accelerate_core stays light"),
    ("accelerate_core/config.py", "config stays light"),
    ("accelerate_core/contracts.py", "the contracts stay light (every process imports them)"),
    ("accelerate_core/wire.py", "the wire format stays light (every process imports it)"),
    ("accelerate_core/broker.py", "broker agreements stay light (redis only inside functions)"),
    ("accelerate_core/limits.py", "the time-limit rule stays light"),
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


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of every node under an ``if TYPE_CHECKING:`` block (type-only imports never run)."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }


def imports_of(source: str, module: str, is_package: bool = False, *, typing_only: bool = True) -> list[Import]:
    """Every import of a module's source, flagged with whether it runs at import time.

    With ``typing_only=False``, imports under ``if TYPE_CHECKING:`` are left out.
    """
    tree = ast.parse(source)
    eager = {id(n) for n in _import_time_nodes(tree.body)}
    skipped = set() if typing_only else _type_checking_nodes(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def _under(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def violations(rel: str, source: str) -> list[str]:
    """Every rule broken by the file at ``rel`` (a path relative to the repository root)."""
    path = ROOT / rel
    found = imports_of(source, _module_name(path), path.name == "__init__.py")
    out: list[str] = []
    allowed = {package for pattern, package, _ in ALLOWED if fnmatch(rel, pattern)}
    for pattern, forbidden, rule in NEVER:
        if fnmatch(rel, pattern):
            out += [
                f"{rel}:{i.line}: {rule}: imports {i.name}"
                for i in found
                if _under(i.name, forbidden) and _top(i.name) not in allowed
            ]
    for pattern, rule in LIGHT:
        if fnmatch(rel, pattern):
            out += [
                f"{rel}:{i.line}: {rule}: imports {i.name} at import time (move it into a function)"
                for i in found
                if i.at_import_time and _under(i.name, HEAVY)
            ]
    return out


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` (name -> source) it may import at run time.

    An import names its deepest known module (``from a.b import c`` is ``a.b.c`` when that is a
    module, else ``a.b``); a module's own parent packages are left out (they are imported first anyway).
    """
    graph: dict[str, set[str]] = {}
    for name, source in modules.items():
        is_package = name in {m.rpartition(".")[0] for m in modules}
        found = imports_of(source, name, is_package, typing_only=False)
        targets = {_known(i.name, modules) for i in found}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def _known(name: str, modules: Iterable[str]) -> str:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (first module repeated at the end), or None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return list(reversed(e.args[1]))
    return None


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
        ("accelerate_core/service/api.py", "import jinja2\n", "core imports nothing above: imports jinja2"),
        ("accelerate_core/service/pages.py", "import celery\n", "core imports nothing above: imports celery"),
        ("accelerate_core/x.py", "from scheduler.cli import app\n", "imports scheduler.cli"),
        ("accelerate_core/x.py", "import importlib\nimportlib.import_module('celery')\n", "imports celery"),
        ("templates_db/x.py", "from workers import tasks\n", "templates_db imports only accelerate_core"),
        ("scheduler/x.py", "def f():\n    from workers.job import job_entry\n", "never import each other"),
        ("scheduler/plan.py", "def f():\n    from accelerate_core.store import ResultsStore\n", "planning is pure"),
        ("accelerate_core/wire.py", "import duckdb\n", "wire format stays light"),
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
        ("accelerate_core/service/pages.py", "import jinja2\n"),  # ALLOWED, with its reason
    ],
)
def test_the_checker_allows_what_the_rules_allow(rel: str, source: str) -> None:
    assert violations(rel, source) == []


def test_relative_imports_are_resolved() -> None:
    found = imports_of("from .. import errors\nfrom .base import Backend\n", "accelerate_core.backends.cuda")
    assert {i.name for i in found} >= {"accelerate_core.errors", "accelerate_core.backends.base"}


def test_no_package_imports_itself_in_a_circle() -> None:
    # Given every module of the packages that must stay acyclic (catalog inputs/fillers/multimodal were one)
    modules = {_module_name(f): f.read_text(encoding="utf-8") for f in _sources() if _top(_module_name(f)) in ACYCLIC}
    assert "accelerate_core.catalog.inputs" in modules
    # When their run-time imports are drawn as a graph
    cycle = import_cycle(import_graph(modules))
    # Then there is no cycle in it
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("modules", "cycle"),
    [
        ({"p.a": "from p.b import x\n", "p.b": "def f():\n    from p import a\n", "p": ""}, True),
        ({"p.a": "import importlib\nimportlib.import_module('p.b')\n", "p.b": "import p.a\n"}, True),
        (
            {
                "p.a": "from p.b import x\n",
                "p.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n",
            },
            False,
        ),  # a type-only import is no cycle
        ({"p": "from p.a import x\n", "p.a": "from p import b\n", "p.b": ""}, False),  # a package and its module
    ],
)
def test_the_cycle_checker(modules: dict[str, str], cycle: bool) -> None:
    # Given modules whose imports make (or do not make) a circle; When checked; Then the cycle is found or not
    found = import_cycle(import_graph(modules))
    assert (found is not None) == cycle, found
    if found:
        assert found[0] == found[-1] and len(found) >= 3


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

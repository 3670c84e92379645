"""Checks a generated test file must pass before it counts.

Two levels: :func:`validate_source` is fast (parse + ``compile``, pytest-collectable tests found in the
compiled module, no import) and runs on every rendered file; :func:`collect_check` runs the real
``pytest --collect-only`` when a template is added to the store. Collecting imports the rendered files,
so it runs the template's module-level code: it does so in a job box, exactly as a worker runs a job
(:mod:`accelerate_core.runner.box`: an allow-listed environment without the adder's secrets, limits on
time, memory, processes and file size, and every process it starts killed at the end).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import Any

from accelerate_core.errors import TemplateInvalidError

log = logging.getLogger(__name__)

__all__ = [
    "COLLECT_ENTRY",
    "COLLECT_MEM_CAP_MB",
    "SourceProblem",
    "collect_check",
    "collectable_tests",
    "validate_source",
]

COLLECT_ENTRY = "templates_db.validate:collect_entry"
"""The fork-server entry that collects rendered files inside the job box."""

COLLECT_MEM_CAP_MB = 2048
"""Memory cap of a collection: importing torch and transformers and a few model modules."""


class SourceProblem(Exception):
    """Raised by :func:`validate_source` with the rendered line (if any) and a one-line reason."""

    def __init__(self, lineno: int | None, reason: str) -> None:
        super().__init__(reason)
        self.lineno = lineno
        self.reason = reason


def collectable_tests(code: CodeType) -> list[str]:
    """Names pytest would collect at module level of a compiled module, in source order.

    Module-level ``test*`` functions and ``Test*`` classes that define ``test*`` methods and no
    ``__init__``. Read from the module's code object: every function or class body defined at module
    level is one of its constants, so no Python-level syntax tree has to be built (about 2x faster
    than ``ast.parse`` + ``compile``, which matters when validating every architecture).
    """
    names: list[str] = []
    for const in code.co_consts:
        if not isinstance(const, CodeType):
            continue
        is_function = bool(const.co_flags & inspect.CO_NEWLOCALS)
        if is_function and const.co_name.startswith("test"):
            names.append(const.co_name)
        elif not is_function and const.co_name.startswith("Test"):
            members = [c.co_name for c in const.co_consts if isinstance(c, CodeType)]
            if "__init__" not in members and any(m.startswith("test") for m in members):
                names.append(const.co_name)
    return names


def validate_source(source: str, *, filename: str = "<generated>") -> list[str]:
    """Check that ``source`` parses and compiles and holds pytest tests; return their names.

    ``compile`` runs the same parser as ``ast.parse`` and then the compiler's own checks (``return``
    outside a function, duplicate arguments, ...), so a file that passes would also import.

    Raises:
        SourceProblem: with the rendered line number (when known) and a one-line reason.
    """
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        text = (e.text or "").strip()
        detail = f": {text[:80]}" if text else ""
        raise SourceProblem(e.lineno, f"rendered Python is invalid ({e.msg}){detail}") from e
    except ValueError as e:  # e.g. null bytes in the source
        raise SourceProblem(None, f"rendered Python is invalid ({e})") from e
    names = collectable_tests(code)
    if not names:
        raise SourceProblem(None, "rendered file has no pytest tests (no module-level test_* function or Test* class)")
    return names


def collect_check(
    sources: Mapping[str, str],
    *,
    timeout_s: float = 180.0,
    label: str = "template",
    mem_cap_mb: int = COLLECT_MEM_CAP_MB,
) -> int:
    """Run ``pytest --collect-only`` on rendered files in a job box; return the number of tests.

    The files are written to a fresh temporary folder with an empty ``pytest.ini`` so that no project
    configuration or conftest leaks in: this is how the file will be collected on a worker.

    Args:
        sources: file name (``test_*.py``) -> rendered source.
        timeout_s: the collection's hard time limit.
        label: what is being checked, for error messages.
        mem_cap_mb: the memory cap of the collecting process tree (torch and transformers included).

    Raises:
        TemplateInvalidError: collection errors, no tests collected, or the box stopped the collection
            (time limit, memory cap, process or file-size limit, crash).
    """
    from accelerate_core.runner import ForkServer

    with tempfile.TemporaryDirectory(prefix="accel-collect-") as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        for file_name, source in sources.items():
            (folder / file_name).write_text(source, encoding="utf-8")
        with ForkServer(COLLECT_ENTRY, preload=("pytest",)) as runner:
            outcome = runner.run("collect", {"folder": str(folder)}, time_limit_s=timeout_s, mem_cap_mb=mem_cap_mb)
    if not outcome.ok or outcome.value is None:
        why = f"{outcome.error_class}: {outcome.error_message}"
        raise TemplateInvalidError(f"{label}: pytest --collect-only was stopped ({_quoted(why)})")
    count = int(outcome.value.get("collected", 0))
    code = outcome.value.get("exit_code")
    if code != 0 or not count:
        error = outcome.value.get("error") or f"exit status {code}, {count} tests collected"
        raise TemplateInvalidError(f"{label}: pytest --collect-only failed: {_quoted(error)}")
    log.debug("collect check of %s: %d tests in %d files", label, count, len(sources))
    return count


class _Collection:
    """A pytest plugin that keeps the number of collected tests and the first collection error."""

    def __init__(self) -> None:
        self.count = 0
        self.error: str | None = None

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed and self.error is None:
            reason = _first_error(str(report.longrepr))
            self.error = f"{report.nodeid}: {reason}" if report.nodeid else reason

    def pytest_collection_finish(self, session: Any) -> None:
        self.count = len(session.items)


def collect_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """The boxed job of :func:`collect_check`: ``pytest --collect-only`` on ``payload["folder"]``, in-process."""
    import pytest

    folder = str(payload["folder"])
    os.chdir(folder)
    sys.dont_write_bytecode = True
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # as on a worker: no third-party plugin
    collection = _Collection()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", folder], plugins=[collection])
    return {"exit_code": int(code), "collected": collection.count, "error": collection.error}


def _first_error(output: str) -> str:
    """The most telling line of a collection error: the first ``E   XxxError: ...`` line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = next((line[1:].strip() for line in lines if line.startswith("E ") and "Error" in line), None)
    return reason or next((line for line in lines if "Error" in line), None) or (lines[-1] if lines else "no output")


def _quoted(text: object) -> str:
    """One line, at most 240 characters, control characters escaped (it comes from template code)."""
    return json.dumps(str(text)[:240])[1:-1]

"""Helpers every ``accel`` command shares: settings, one-line errors, JSON output, progress bars.

Exit codes: 0 success, 1 the job itself failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from accelerate_core.config import Settings
from accelerate_core.errors import AccelerateError

ModelsOpt = Annotated[
    str | None,
    typer.Option(
        "--models",
        help="all, a,b or @file: model types, checkpoint dirs, cached hub ids (default: the config's models, else all)",
    ),
]
"""The ``--models`` option of every command that selects models (``accelerate_core.selection``)."""

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2

# Emoji codes off: a ':name:' inside a model name or an error message is printed as written.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


@dataclass
class CliState:
    """Per-invocation state handed to every command through ``ctx.obj``."""

    config_file: Path | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings, loaded once (a bad value exits 2 with one line)."""
        if self._settings is None:
            self._settings = Settings.load(self.config_file)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """Return the invocation state stored on the root context."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``accel: error: message`` on stderr and return the Exit to raise."""
    err.print(f"accel: error: {message}", markup=False)
    return typer.Exit(code)


def report_error(e: AccelerateError) -> int:
    """Print one line for an AccelerateError and return its exit code."""
    err.print(f"accel: error: {e}", markup=False)
    return e.exit_code


def report_usage_error(e: typer.TyperException, command_path: str) -> int:
    """Print one line for a command-line mistake (click's error, seen through typer) and return 2.

    The line says what was wrong and where to look: ``accel: error: no such option: -Q (see `accel worker
    --help`)``; the command is the one click was parsing, else ``command_path`` (the commands named on the
    command line: click raises some errors without its context). A bare group (``accel``, ``accel config``)
    is answered with its help on stdout, as ``--help`` would, but still exits 2: ``accel "$EMPTY"`` in a
    script must fail, not succeed silently.
    """
    if type(e).__name__ == "NoArgsIsHelpError":  # typer vendors click: the class is not public
        # typer's rich help prints itself while the error is built; plain help comes back as the message
        sys.stdout.write(e.format_message())
        return EXIT_USAGE
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else command_path
    message = " ".join(e.format_message().split()).rstrip(".")
    err.print(f"accel: error: {message[:1].lower()}{message[1:]} (see `{where} --help`)", markup=False)
    return EXIT_USAGE


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (for ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def is_tty() -> bool:
    """True when stderr is a terminal (progress bars are shown only then)."""
    return err.is_terminal


@contextmanager
def progress(total: int, description: str) -> Iterator[Progress]:
    """A rich progress bar on stderr; silent when stderr is not a terminal."""
    bar = Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeRemainingColumn(),
        console=err,
        disable=not is_tty(),
        transient=False,
    )
    with bar:
        bar.add_task(description, total=total, detail="")
        yield bar

"""The ``accel`` command line: one root app; each concept's commands live in their own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from accelerate_core.database import ctrl_c_kept
from accelerate_core.errors import AccelerateError
from scheduler.cli import (
    bench,
    cancel,
    core,
    dead_letters,
    endpoint,
    fleet,
    models,
    nodes,
    plan,
    run,
    runs,
    serve,
    templates,
)
from scheduler.cli.common import CliState, out, report_error, report_usage_error

app = typer.Typer(
    name="accel",
    help="accelerate-fleet: test and benchmark every transformers architecture on a hardware fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        out.print(version_line(), markup=False)
        raise typer.Exit(0)


def version_line() -> str:
    """``accel 0.1.0 (transformers 5.24.0, torch 2.13.0+cpu, python 3.11.9)``, read without importing them."""
    python = ".".join(map(str, sys.version_info[:3]))
    return (
        f"accel {_installed('accelerate-fleet')} (transformers {_installed('transformers')}, "
        f"torch {_installed('torch')}, python {python})"
    )


def _installed(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (default: $ACCEL_CONFIG or ./accel.toml)")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Show the versions and exit."),
    ] = False,
) -> None:
    ctx.obj = CliState(config_file=config)


for module in (core, models, bench, endpoint, templates, runs, run, plan, fleet, nodes, cancel, serve, dead_letters):
    module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the exit status."""
    try:
        with ctrl_c_kept():
            result = app(args=argv, prog_name="accel", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool):  # click returns a typer.Exit's code here
            return result
    except AccelerateError as e:
        return report_error(e)
    except typer.TyperException as e:  # every click-level error: usage, bad value, missing argument
        return report_usage_error(e, _command_path(sys.argv[1:] if argv is None else argv))
    except typer.Exit as e:
        return int(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        return 130
    return 0


def _command_path(argv: list[str]) -> str:
    """``accel templates diff``: the (sub)commands named in ``argv`` (click raises some errors without a context)."""
    words = ["accel"]
    command = typer.main.get_command(app)
    for word in argv:
        sub = getattr(command, "commands", {}).get(word)
        if sub is not None:
            words.append(word)
            command = sub
    return " ".join(words)


if __name__ == "__main__":
    sys.exit(main())

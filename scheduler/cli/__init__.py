"""The ``accel`` command line: one root app; each concept's commands live in their own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from accelerate_core.errors import AccelerateError
from scheduler.cli import bench, core, endpoint, fleet, models, run, runs, serve, templates
from scheduler.cli.common import EXIT_USAGE, CliState, report_error

app = typer.Typer(
    name="accel",
    help="accelerate-fleet: test and benchmark every transformers architecture on a hardware fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (default: $ACCEL_CONFIG or ./accel.toml)")
    ] = None,
) -> None:
    ctx.obj = CliState(config_file=config)


for module in (core, models, bench, endpoint, templates, runs, run, fleet, serve):
    module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``accel`` console script; returns the exit status."""
    try:
        result = app(args=argv, prog_name="accel", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool):  # click returns a typer.Exit's code here
            return result
    except AccelerateError as e:
        return report_error(e)
    except typer.Exit as e:
        return int(e.exit_code)
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code if e.exit_code else EXIT_USAGE
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`accel dead-letters`: the messages the results writer set aside because it could not decode or apply them."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from scheduler.cli.common import emit_json, out, state


def register(app: typer.Typer) -> None:
    """Add ``dead-letters`` to the root app."""
    app.command("dead-letters")(dead_letters_command)


def dead_letters_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="how many of the newest to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print them as JSON")] = False,
) -> None:
    """Show the writer's dead letters, newest first: what each message was and why it was set aside."""
    import redis

    from accelerate_core import broker, dead_letters, wire

    settings = state(ctx).settings
    url = broker.require_url(settings)
    client = broker.connect(url)
    try:
        total = dead_letters.count(client)
        letters = dead_letters.read(client, limit)
    except redis.RedisError as e:
        raise broker.broker_error(url, e) from e
    finally:
        client.close()
    if as_json:
        emit_json({"count": total, "letters": [wire.encode(d) for d in letters]})
        return
    out.print(f"{total} dead letters on this broker" + (f" (the newest {len(letters)}):" if letters else ""),
              markup=False)  # fmt: skip
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.at))
        names = " ".join(x for x in (d.task, d.run_id and f"run {d.run_id}") if x)
        out.print(f"- {when} {names}: {d.reason}", markup=False)
        out.print(f"    {d.message[:300]!r}", markup=False)

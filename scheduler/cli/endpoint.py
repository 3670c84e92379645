"""``accel endpoint bench|check URL --model NAME``: benchmark or check an OpenAI-compatible server.

The token comes from the environment only (``--token-env VAR``, else ``ACCEL_ENDPOINT_TOKEN``) and is
never printed: not in the table, the JSON, or an error. Before a benchmark the server is probed once;
one that cannot be reached stops the command with one line (exit 2). A benchmark in which every request
failed exits 1 with the error classes.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.bench import parse_sizes
from scheduler.cli.common import EXIT_JOB_FAILED, emit_json, err, fail, is_tty, out

if TYPE_CHECKING:
    from accelerate_core.endpoint import EndpointReport, EndpointTarget, LevelReport

endpoint_app = typer.Typer(
    help="Served models (OpenAI-compatible endpoints): benchmark and check them.", no_args_is_help=True
)

_Url = Annotated[str, typer.Argument(help="base URL of the server, e.g. http://127.0.0.1:8000", metavar="URL")]
_Model = Annotated[str, typer.Option("--model", help="the model name the server serves (the request's `model`)")]
_TokenEnv = Annotated[
    str | None,
    typer.Option("--token-env", help="environment variable holding the bearer token (default ACCEL_ENDPOINT_TOKEN)"),
]
_Timeout = Annotated[float, typer.Option("--timeout", help="seconds each request may take, send to stream end")]
_Json = Annotated[bool, typer.Option("--json", help="print JSON (with every request's raw sample)")]


def _target(url: str, model: str, token_env: str | None) -> EndpointTarget:
    from accelerate_core.config import endpoint_token
    from accelerate_core.endpoint import EndpointTarget, Secret

    token = endpoint_token(env_var=token_env)
    return EndpointTarget("bench", url, model, Secret(token) if token else None)


def _require_reachable(target: EndpointTarget, timeout_s: float) -> None:
    import asyncio

    from accelerate_core.endpoint import probe_endpoint

    problem = asyncio.run(probe_endpoint(target, min(timeout_s, 10.0)))
    if problem is not None:
        error_class, message = problem
        raise fail(f"cannot reach {target.describe()['url']} ({error_class}: {message}): is the server running?")


def bench(
    url: _Url,
    model: _Model,
    concurrency: Annotated[str, typer.Option("--concurrency", help="levels, e.g. 1,4,16")] = "1",
    requests: Annotated[
        int | None, typer.Option("--requests", help="requests per level (default max(16, 4 x concurrency))")
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="seconds per level, not --requests")] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="prompt length in tokens")] = 128,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="max_tokens of each request")] = 64,
    rate: Annotated[
        float | None, typer.Option("--rate", help="open loop: requests/s (concurrency caps those in flight)")
    ] = None,
    arrival: Annotated[str, typer.Option("--arrival", help="open-loop gaps: poisson or fixed")] = "poisson",
    timeout: _Timeout = 60.0,
    warmup: Annotated[int, typer.Option("--warmup", help="uncounted requests first (>= 1)")] = 2,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="dir with the model's tokenizer.json: exact prompt lengths")
    ] = None,
    token_env: _TokenEnv = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of prompts and Poisson arrivals")] = 0,
    as_json: _Json = False,
) -> None:
    """Stream chat completions at each concurrency: TTFT, ITL, end-to-end latency, tokens/s, errors."""
    from accelerate_core.endpoint import EndpointBenchConfig, bench_endpoint

    target = _target(url, model, token_env)
    config = EndpointBenchConfig(
        concurrency=parse_sizes(concurrency, "--concurrency") or (1,),
        requests=requests,
        duration_s=duration,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        rate=rate,
        arrival=arrival,
        timeout_s=timeout,
        warmup=warmup,
        tokenizer=tokenizer,
        seed=seed,
    )
    _require_reachable(target, timeout)
    with err.status(f"benchmarking {target.describe()['url']} ...", spinner="dots") if is_tty() else nullcontext():
        report = bench_endpoint(target, config)
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    if report.all_failed:
        raise fail(f"every request failed: {_classes(report.error_totals())}", EXIT_JOB_FAILED)


def check(
    url: _Url, model: _Model, timeout: _Timeout = 60.0, token_env: _TokenEnv = None, as_json: _Json = False
) -> None:
    """Functional check: a completion returns text, usage adds up, streamed and whole agree on tokens."""
    from accelerate_core.endpoint import check_endpoint

    target = _target(url, model, token_env)
    _require_reachable(target, timeout)
    result = check_endpoint(target, timeout_s=timeout)
    if as_json:
        emit_json(result.to_dict())
    else:
        out.print(f"{'pass' if result.ok else 'FAIL'}: {result.reason}", markup=False)
    if not result.ok:
        raise typer.Exit(EXIT_JOB_FAILED)


def _classes(errors: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(errors.items())) or "none"


def _ms3(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    return " / ".join(f"{stats[k] * 1000:.1f}" for k in ("p50", "p90", "p99"))


def _row(level: LevelReport) -> list[str]:
    lat = level.latencies
    return [
        str(level.concurrency), str(level.sent), str(level.ok), _classes(level.errors),
        _ms3(lat["ttft_s"]), _ms3(lat["itl_s"]), _ms3(lat["e2e_s"]),
        f"{level.output_tokens_per_s:,.1f}", f"{level.requests_per_s:,.2f}",
    ]  # fmt: skip


_COLUMNS = ("conc", "sent", "ok", "errors", "TTFT ms p50/p90/p99", "ITL ms p50/p90/p99", "E2E ms p50/p90/p99",
            "out tok/s", "req/s")  # fmt: skip


def print_report(report: EndpointReport) -> None:
    """Print one row per concurrency level, then the error examples and how prompts were counted."""
    from rich.console import Console

    from scheduler.cli.text import PlainTable

    target = report.target
    table = PlainTable(title=f"{target['model']} at {target['url']} ({report.config['mode']})")
    for column in _COLUMNS:
        table.add_column(column, justify="right", no_wrap=column != "errors")
    for level in report.levels:
        table.add_row(*_row(level))
    # Piped output has no terminal width (rich assumes 80): give the table room rather than truncate it.
    console = out if out.is_terminal else Console(highlight=False, emoji=False, width=max(out.width, 160))
    console.print(table)
    for level in report.levels:
        for name, example in sorted(level.error_examples.items()):
            out.print(f"concurrency {level.concurrency}: {name}: {example}", markup=False)
    server = [lv.server_prompt_tokens for lv in report.levels if lv.server_prompt_tokens is not None]
    counted = f"server counted {server[0]:.0f} with the chat template" if server else "server sent no usage"
    out.print(
        f"prompts {report.prompt_tokens} tokens ({report.prompts_counted_by}; {counted}); "
        f"max_tokens {report.config['max_tokens']}; stream_options include_usage "
        f"{'sent' if report.include_usage else 'refused by the server'}; percentiles: linear interpolation",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``accel endpoint bench|check`` to the root app."""
    endpoint_app.command("bench")(bench)
    endpoint_app.command("check")(check)
    app.add_typer(endpoint_app, name="endpoint")

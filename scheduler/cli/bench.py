"""``accel bench TYPE``: benchmark one model (tiny, or ``--size full``) in an isolated, pinned child process.

The CLI process never imports torch: the model is built and measured in a child of a
:class:`~accelerate_core.runner.ForkServer` (entry ``accelerate_core.bench.job:bench_entry``), pinned
to the device by environment, under the test job's hard time limit and the memory cap.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from accelerate_core import wire
from accelerate_core.config import BenchConfig
from accelerate_core.constants import COMPILE_OFF, JOB_KIND_TEST, SIZE_TINY, SOURCE_TYPE
from accelerate_core.contracts import BenchReport, BenchRequest, Measurement, ModelSource, check_compile
from accelerate_core.errors import ConfigError, ContractError
from scheduler.cli.common import EXIT_JOB_FAILED, EXIT_USAGE, emit_json, err, fail, out, state

if TYPE_CHECKING:
    from accelerate_core.runner import ChildOutcome

ENTRY = "accelerate_core.bench.job:bench_entry"
"""The fork-server entry that builds and measures the model."""


def parse_sizes(raw: str | None, option: str) -> tuple[int, ...] | None:
    """``"1,4"`` -> ``(1, 4)``; None stays None.

    Raises:
        ConfigError: not positive integers separated by commas (one line naming ``option``).
    """
    if raw is None:
        return None
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{option} {raw!r} is invalid: give positive integers separated by commas, e.g. 1,4")
    return values


def bench(
    ctx: typer.Context,
    model_type: Annotated[
        str, typer.Argument(help="model type (bert), checkpoint directory or hub id in the local HF cache")
    ],
    hardware: Annotated[str, typer.Option("--hardware", help="cpu, cuda, rocm or mps")] = "cpu",
    batch: Annotated[str | None, typer.Option("--batch", help="batch sizes, e.g. 1,4")] = None,
    seq: Annotated[str | None, typer.Option("--seq", help="sequence lengths, e.g. 32,128")] = None,
    device: Annotated[int, typer.Option("--device", help="device index of the hardware kind")] = 0,
    threads: Annotated[int | None, typer.Option("--threads", help="intra-op threads of the child")] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=1, help="image size of vision models (sets config image_size)")
    ] = None,
    size: Annotated[
        str, typer.Option("--size", help="tiny (shrunk config) or full (default config, random weights, no download)")
    ] = SIZE_TINY,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16")] = "float32",
    attn: Annotated[str | None, typer.Option("--attn", help="attention implementation, e.g. sdpa or eager")] = None,
    compile_: Annotated[
        str | None, typer.Option("--compile", help="time torch.compile with this backend, e.g. inductor")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Benchmark one model type: load time, first call, latency p50/p90/p99, throughput, memory."""
    settings = state(ctx).settings
    config = _bench_config(settings.bench, parse_sizes(batch, "--batch"), parse_sizes(seq, "--seq"))
    if image_size is not None:
        config = replace(config, image_size=image_size)
    request = replace(_request(model_type, hardware, config, size, dtype, attn), compile_backend=_compile(compile_))
    env = _pin(hardware, device, threads)
    outcome = _run(request, env, settings.time_limit(JOB_KIND_TEST).hard_s, settings.mem_cap_mb)
    report = _checked(outcome, model_type, hardware)
    if as_json:
        emit_json(wire.encode(report))
    else:
        print_table(report)


def _request(
    model_type: str, hardware: str, config: BenchConfig, size: str, dtype: str, attn: str | None
) -> BenchRequest:
    """The child's request; a bad ``--size`` or ``--dtype``, an unknown model or an uncached hub id is one line."""
    from accelerate_core.backends import normalize_dtype

    source = _source(model_type)
    try:
        return BenchRequest(source.model_type, hardware, config, size=size, dtype=normalize_dtype(dtype),
                            source=None if source.kind == SOURCE_TYPE else source, attn=attn)  # fmt: skip
    except ContractError as e:
        option = "--size" if "size" in str(e) else "--attn" if "attention" in str(e) else "--dtype"
        raise ConfigError(f"{option}: {e}") from e


def _compile(raw: str | None) -> str | None:
    """``--compile BACKEND`` (``off``: None); an unknown backend is one line."""
    if raw is None or raw == COMPILE_OFF:
        return None
    try:
        return check_compile(raw)
    except ContractError as e:
        raise ConfigError(f"--compile: {e}") from e


def _source(name: str) -> ModelSource:
    """What ``MODEL`` names (``accelerate_core.sources``); a hub id not in the cache names the command to fetch it."""
    from accelerate_core.sources import fetch_command, resolve_source

    source = resolve_source(name, None)  # a type is checked by the child, as the catalog builds it
    if not source.available:
        raise ConfigError(
            f"{source.ref} is not in the local Hugging Face cache (not-in-cache): fetch it with "
            f"`{fetch_command(source.ref)}`, then run again"
        )
    return source


def _bench_config(base: BenchConfig, batch: tuple[int, ...] | None, seq: tuple[int, ...] | None) -> BenchConfig:
    return replace(base, batch_sizes=batch or base.batch_sizes, seq_lens=seq or base.seq_lens)


def _pin(hardware: str, device: int, threads: int | None) -> dict[str, str]:
    """The child's environment; raises HardwareUnavailableError (one line, exit 2) when not present."""
    from accelerate_core.backends import get_backend, require

    require(hardware, [device])
    return get_backend(hardware).pin_env(device, threads)


def _run(request: BenchRequest, env: dict[str, str], limit_s: float, cap_mb: int) -> ChildOutcome:
    from rich.text import Text

    from accelerate_core.runner import ForkServer

    model_type, hardware = request.model_type, request.hardware
    payload = wire.encode(request)
    with (
        err.status(Text(f"benchmarking {request.size} {model_type} on {hardware}..."), spinner="dots"),
        ForkServer(ENTRY) as runner,
    ):
        return runner.run(f"bench-{model_type}-{hardware}", payload, env=env, time_limit_s=limit_s, mem_cap_mb=cap_mb)


def _checked(outcome: ChildOutcome, model_type: str, hardware: str) -> BenchReport:
    """The child's report; a failed job exits 1 and a usage error exits 2, each with one line."""
    if not outcome.ok or outcome.value is None:
        raise fail(
            f"bench {model_type} on {hardware} failed: {outcome.error_class} ({outcome.error_type}: "
            f"{outcome.error_message})",
            EXIT_JOB_FAILED,
        )
    try:
        report = wire.decode(BenchReport, outcome.value)
    except ContractError as e:
        raise fail(f"bench {model_type} on {hardware} returned a malformed report: {e}", EXIT_JOB_FAILED) from e
    if report.usage_error is not None:
        raise fail(report.usage_error, EXIT_USAGE)
    return report


_COLUMNS = (
    "batch",
    "seq",
    "n",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "mean ms",
    "stdev ms",
    "samples/s",
    "tokens/s",
    "ttft ms",
    "decode ms/token",
    "peak MiB",
)


def _fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(report: BenchReport) -> None:
    """Print the benchmark result as a rich table, one row per shape."""
    from rich.console import Console

    from scheduler.cli.text import PlainTable

    by_metric: dict[tuple[int, int], dict[str, Measurement]] = {}
    single: dict[str, float | None] = {}
    for m in report.measurements:
        if m.metric in ("load_time", "first_call", "param_count"):
            single[m.metric] = m.p50
        else:
            by_metric.setdefault((m.batch_size, m.seq_len), {})[m.metric] = m
    env = report.environment
    what = report.source or report.size
    title = (
        f"{what} {report.model_type} ({report.model_class}, {report.dtype}) on {report.hardware}: "
        f"{env.get('device_name')}"
    )
    if report.image_size:
        title += f", images {report.image_size}x{report.image_size}"
    table = PlainTable(title=title)
    for column in _COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    for (batch, seq), metrics in sorted(by_metric.items()):
        lat = metrics.get("latency")
        table.add_row(
            str(batch), str(seq), str(lat.n if lat else "-"),
            *(_fmt_ms(getattr(lat, k) if lat else None) for k in ("p50", "p90", "p99", "mean", "stdev")),
            *(_fmt(_p50(metrics, k)) for k in ("throughput", "tokens_per_s")),
            *(_fmt_ms(_p50(metrics, k)) for k in ("ttft", "itl")), _fmt(_p50(metrics, "peak_memory")),
        )  # fmt: skip
    # Piped output has no terminal width (rich assumes 80): give the table room rather than truncate it.
    console = out if out.is_terminal else Console(highlight=False, emoji=False, width=max(out.width, 140))
    console.print(table)
    out.print(
        f"load {_fmt_ms(single.get('load_time'))} ms, first call {_fmt_ms(single.get('first_call'))} ms; "
        f"params {report.param_count or 0:,}; torch {env.get('torch')}, transformers {env.get('transformers')}, "
        f"{env.get('torch_threads')} threads; percentiles: linear interpolation",
        markup=False,
    )
    compiles = [m.p50 for m in report.measurements if m.metric == "compile_time"]
    if report.compile_backend is not None and compiles:
        out.print(f"compiled with {report.compile_backend}: compile time {_fmt_ms(compiles[0])} ms at the first shape, "
                  "apart from the loop", markup=False)  # fmt: skip
    for note in report.notes:
        err.print(f"note: {note}", markup=False)


def _p50(metrics: dict[str, Measurement], metric: str) -> float | None:
    found = metrics.get(metric)
    return found.p50 if found else None


def register(app: typer.Typer) -> None:
    """Add ``accel bench`` to the root app."""
    app.command("bench")(bench)

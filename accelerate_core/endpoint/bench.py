"""``bench_endpoint``: warm up, then run each concurrency level against one target, and report.

Resolve, build, run, return: the prompts are made before any timing; one client (connection pool)
serves the warm-up and every level; the warm-up's first request also learns whether the server accepts
``stream_options: {"include_usage": true}`` (a 400/422 answer means it does not: the rest go without).
A server that is down is not an exception here: its requests are classified samples like any other
failure (the CLI probes first and stops with one line instead).
"""

from __future__ import annotations

import asyncio
import platform
import socket
from collections.abc import Awaitable
from importlib.metadata import version
from typing import Any

from accelerate_core.endpoint.client import REJECTS_OPTION, EndpointClient
from accelerate_core.endpoint.load import LevelRun, run_level
from accelerate_core.endpoint.prompts import POOL, PromptSource
from accelerate_core.endpoint.report import EndpointReport, LevelReport, level_report
from accelerate_core.endpoint.sample import RequestSample
from accelerate_core.endpoint.spec import EndpointBenchConfig, EndpointTarget

__all__ = ["bench_endpoint", "probe_endpoint", "run_bench"]


def bench_endpoint(target: EndpointTarget, config: EndpointBenchConfig) -> EndpointReport:
    """Benchmark ``target`` under ``config`` (from synchronous code; async callers use :func:`run_bench`).

    Raises:
        ConfigError: the tokenizer given in ``config`` cannot be loaded.
    """
    return asyncio.run(run_bench(target, config))


async def run_bench(target: EndpointTarget, config: EndpointBenchConfig) -> EndpointReport:
    """The coroutine behind :func:`bench_endpoint`."""
    prompts = PromptSource(config.prompt_tokens, seed=config.seed, tokenizer=config.tokenizer)
    prompts.prepare(_prompt_count(config))
    async with EndpointClient(target, timeout_s=config.timeout_s, connections=max(config.concurrency)) as client:
        include_usage, warmup = await _warm_up(client, prompts, config)

        def send(i: int) -> Awaitable[RequestSample]:
            return client.stream_chat(prompts[i], index=i, max_tokens=config.max_tokens, include_usage=include_usage)

        levels: list[LevelReport] = []
        first = config.warmup
        for concurrency in config.concurrency:
            run = await run_level(
                send,
                concurrency=concurrency,
                requests=config.requests_for(concurrency),
                duration_s=config.duration_s,
                rate=config.rate,
                arrival=config.arrival,
                seed=config.seed,
                first_index=first,
            )
            levels.append(level_report(run, config.mode))
            first += len(run.samples)
    return EndpointReport(
        target=target.describe(),
        config=config.describe(),
        prompt_tokens=config.prompt_tokens,
        prompts_counted_by=prompts.counted_by,
        include_usage=include_usage,
        warmup=warmup,
        levels=levels,
        environment=_environment(),
    )


def _prompt_count(config: EndpointBenchConfig) -> int:
    """How many prompts the run will use (the whole pool when it runs for a duration)."""
    if config.duration_s is not None:
        return POOL
    return config.warmup + sum(config.requests_for(c) or 0 for c in config.concurrency)


async def _warm_up(
    client: EndpointClient, prompts: PromptSource, config: EndpointBenchConfig
) -> tuple[bool, LevelReport]:
    """Send the warm-up requests one by one; the first tells whether ``stream_options`` is accepted."""
    include_usage = True
    started = asyncio.get_running_loop().time()
    samples: list[RequestSample] = []
    for i in range(config.warmup):
        sample = await client.stream_chat(
            prompts[i], index=i, max_tokens=config.max_tokens, include_usage=include_usage
        )
        if i == 0 and sample.status in REJECTS_OPTION:
            # Refused: was it stream_options? Only if the same request without it goes through.
            retry = await client.stream_chat(prompts[i], index=i, max_tokens=config.max_tokens, include_usage=False)
            if retry.status is not None and retry.status < 400:
                include_usage, sample = False, retry
        samples.append(sample)
    wall = asyncio.get_running_loop().time() - started
    run = LevelRun(1, samples, samples[0].started if samples else 0.0, wall)
    return include_usage, level_report(run, "warm-up")


async def probe_endpoint(target: EndpointTarget, timeout_s: float) -> tuple[str, str] | None:
    """None when the server answers HTTP at all, else ``(error class, one-line message)``."""
    async with EndpointClient(target, timeout_s=timeout_s, connections=1) as client:
        return await client.probe()


def _environment() -> dict[str, Any]:
    from accelerate_core import __version__

    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "accelerate_fleet": __version__,
        "httpx2": version("httpx2"),
    }

"""Served models as benchmark targets: OpenAI-compatible endpoints (vLLM, TGI, SGLang, ``transformers serve``...).

Measured as a serving benchmark would (vLLM's ``benchmark_serving``, genai-perf, llmperf): streamed
chat completions at fixed concurrency (closed loop) or request rate (open loop), reporting TTFT,
inter-token latency, end-to-end latency, output tokens/s, requests/s and errors by class, with the raw
per-request samples. No Celery, no torch: a job or the CLI calls

- :func:`bench_endpoint` ``(EndpointTarget, EndpointBenchConfig) -> EndpointReport``; the report's
  :meth:`~EndpointReport.measurements` are measurement rows (``batch_size`` = concurrency);
- :func:`check_endpoint` ``(EndpointTarget) -> CheckResult``: the functional check (pass/fail, reason).

Modules, one concept each: :mod:`.spec` (target, settings, :class:`Secret`), :mod:`.prompts`,
:mod:`.client` (one streamed request, timed), :mod:`.classify` (error classes), :mod:`.sample`,
:mod:`.load` (closed/open loop), :mod:`.report`, :mod:`.bench`, :mod:`.check`.
"""

from __future__ import annotations

from accelerate_core.endpoint.bench import bench_endpoint, probe_endpoint, run_bench
from accelerate_core.endpoint.check import CheckResult, check_endpoint
from accelerate_core.endpoint.report import EndpointReport, LevelReport
from accelerate_core.endpoint.sample import RequestSample
from accelerate_core.endpoint.spec import EndpointBenchConfig, EndpointTarget, Secret

__all__ = [
    "CheckResult",
    "EndpointBenchConfig",
    "EndpointReport",
    "EndpointTarget",
    "LevelReport",
    "RequestSample",
    "Secret",
    "bench_endpoint",
    "check_endpoint",
    "probe_endpoint",
    "run_bench",
]

"""Synthetic runs for tests and benchmarks: plans and results with made-up timings, labelled as such.

Every run made here carries ``params.synthetic = True`` and the report says so, so synthetic numbers
can never pass for measured ones.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from accelerate_core.config import BenchConfig
from accelerate_core.constants import STATUS_DONE, STATUS_FAILED
from accelerate_core.contracts import JobResult, JobSpec, Measurement, RunParams, RunPlan, TemplateRef, job_key

SYNTHETIC_SHA = "0" * 40
"""The template sha every synthetic job carries."""
SYNTHETIC_TEMPLATE = TemplateRef(name="synthetic", sha=SYNTHETIC_SHA, body="# synthetic\n", version=1)
"""The template every synthetic job carries."""


@dataclass
class SyntheticRun:
    """The shape of a synthetic run; :meth:`plan` and :meth:`results` build it."""

    run_id: str
    phase: str = "synthetic"
    models: Sequence[str] = ("bert", "gpt2")
    hardware: Sequence[str] = ("cpu",)
    shapes: Sequence[tuple[int, int]] = ((1, 16),)
    samples: int = 5
    created_at: float = 1_700_000_000.0
    slots: int = 2
    modalities: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0

    def key(self, model: str, hardware: str) -> str:
        """The job key of one model on one hardware kind."""
        return job_key(self.run_id, model, hardware, "test")

    def plan(self) -> RunPlan:
        """The run's plan: every model on every hardware kind, one test job each."""
        bench = BenchConfig(
            batch_sizes=tuple(sorted({b for b, _ in self.shapes})), seq_lens=tuple(sorted({s for _, s in self.shapes}))
        )
        jobs = tuple(
            JobSpec(
                key=self.key(m, hw),
                run_id=self.run_id,
                model_type=m,
                hardware=hw,
                kind="test",
                template=SYNTHETIC_TEMPLATE,
                bench=bench,
                expected_s=1.0,
            )
            for m in self.models
            for hw in self.hardware
        )
        params = RunParams(
            hardware=tuple(self.hardware),
            bench=bench,
            n_jobs=len(jobs),
            slots=self.slots,
            synthetic=True,
            modalities=dict(self.modalities),
        )
        return RunPlan(self.run_id, self.phase, self.created_at, params, jobs, code_version="synthetic")

    def result(
        self,
        model: str,
        hardware: str,
        *,
        latency: float | Sequence[float] = 0.01,
        spread: float = 0.02,
        status: str = STATUS_DONE,
        error: tuple[str, str, str] | None = None,
        template_sha: str | None = None,
        start: float | None = None,
        duration: float = 1.0,
    ) -> JobResult:
        """One job's result; ``latency`` is the centre (or the exact raw samples) of every shape's samples."""
        rng = random.Random(f"{self.seed}:{model}:{hardware}")
        started = self.created_at + 1.0 if start is None else start
        measurements = () if status != STATUS_DONE else self._measurements(rng, latency, spread)
        error_class, error_type, message = error or (None, None, None)
        if status == STATUS_FAILED and error is None:
            error_class, error_type, message = "forward-error", "RuntimeError", f"{model} failed"
        return JobResult(
            key=self.key(model, hardware),
            run_id=self.run_id,
            model_type=model,
            hardware=hardware,
            kind="test",
            status=status,
            error_class=error_class,
            error_type=error_type,
            error_message=message,
            started_at=started,
            finished_at=started + duration,
            duration_s=duration,
            worker_id=f"synthetic-{hardware}-0",
            host="synthetic-host",
            device_name=f"Synthetic {hardware.upper()}",
            template_name="synthetic",
            template_sha=template_sha or SYNTHETIC_SHA,
            generated_source="def test_synthetic():\n    pass\n",
            tests_passed=2 if status == STATUS_DONE else 0,
            tests_failed=0 if status == STATUS_DONE else 1,
            measurements=measurements,
            environment={"torch": "synthetic", "transformers": "synthetic", "synthetic": True},
        )

    def _measurements(
        self, rng: random.Random, latency: float | Sequence[float], spread: float
    ) -> tuple[Measurement, ...]:
        out: list[Measurement] = []
        for batch, seq in self.shapes:
            if isinstance(latency, int | float):
                scale = latency * batch
                samples = [scale * (1 + spread * (2 * rng.random() - 1)) for _ in range(self.samples)]
            else:
                samples = [float(x) * batch for x in latency]
            out.append(_metric("latency", "s", batch, seq, samples))
            out.append(_metric("throughput", "samples/s", batch, seq, [batch / x for x in samples]))
            out.append(_metric("peak_memory", "MiB", batch, seq, [100.0 + batch]))
        out.append(_metric("load_time", "s", 1, 0, [0.5 + 0.1 * rng.random()]))
        return tuple(out)


def _metric(metric: str, unit: str, batch: int, seq: int, samples: Sequence[float]) -> Measurement:
    """A measurement with its statistics, as ``accelerate_core.bench.sample_stats`` would give them."""
    ordered = sorted(samples)
    n = len(ordered)

    def pct(q: float) -> float:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    mean = sum(ordered) / n
    stdev = (sum((x - mean) ** 2 for x in ordered) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return Measurement(metric, unit, batch, seq, tuple(samples), n, pct(0.5), pct(0.9), pct(0.99), mean, stdev)

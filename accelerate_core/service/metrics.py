"""Prometheus metrics of the results (not of the fleet's tasks: Flower has those), in the text format.

Label cardinality is bounded: per-run series cover only the latest ``metrics_runs`` runs plus at most
``metrics_unfinished`` unfinished ones, so a store with thousands of runs still exports at most
``(metrics_runs + metrics_unfinished) x hardware kinds x job statuses`` job series. The writer's backlog
and lag come from the host (:data:`WriterProbe`); ``accel serve`` has no writer, so they are absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelerate_core.service.views import status_pass_rate

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's content type."""


@dataclass(frozen=True, slots=True)
class WriterFigures:
    """What the hosting writer reports about its intake.

    Args:
        backlog: messages waiting on the results queue, not yet taken.
        lag_s: age of the oldest message taken but not yet committed, or 0 when all is written.
        dead_letters: messages set aside as undecodable (None when the writer does not count them).
    """

    backlog: int
    lag_s: float
    dead_letters: int | None = None


WriterProbe = Callable[[], WriterFigures]
"""Called on each scrape by the host (the writer) for its current :class:`WriterFigures`."""


class _ResultsCollector:
    """A one-shot collector over figures already read from the store."""

    def __init__(self, counts: dict[str, Any], writer: WriterFigures | None) -> None:
        self.counts = counts
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily(
            "accel_jobs",
            "Jobs of a recent or unfinished run by hardware kind and status",
            labels=["run_id", "hardware", "status"],
        )
        per_run: dict[str, dict[str, int]] = {}
        for run_id, hardware, status, n in self.counts["jobs"]:
            jobs.add_metric([run_id, hardware, status], n)
            slot = per_run.setdefault(run_id, {})
            slot[status] = slot.get(status, 0) + n
        yield jobs
        rate = GaugeMetricFamily("accel_run_pass_rate", "Done / judged jobs of a recent run", labels=["run_id"])
        info = GaugeMetricFamily("accel_run_status", "1 for a recent run's status", labels=["run_id", "status"])
        for run_id, status in sorted(self.counts["runs"].items()):
            info.add_metric([run_id, status], 1)
            value = status_pass_rate(per_run.get(run_id, {}))
            if value is not None:
                rate.add_metric([run_id], value)
        yield rate
        yield info
        runs = GaugeMetricFamily("accel_runs", "Runs in the results store by status", labels=["status"])
        for status, n in sorted(self.counts["runs_by_status"].items()):
            runs.add_metric([status], n)
        yield runs
        yield from self._writer()

    def _writer(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if self.writer is None:
            return
        yield GaugeMetricFamily(
            "accel_writer_backlog_messages", "Messages waiting on the results queue", value=self.writer.backlog
        )
        yield GaugeMetricFamily(
            "accel_writer_lag_seconds", "Age of the oldest message not yet written", value=self.writer.lag_s
        )
        if self.writer.dead_letters is not None:
            yield GaugeMetricFamily(
                "accel_writer_dead_letters", "Messages set aside as undecodable", value=self.writer.dead_letters
            )


def metrics_text(counts: dict[str, Any], writer: WriterFigures | None = None) -> bytes:
    """The exposition text of ``counts`` (see :func:`accelerate_core.store.browse.job_counts`) and writer figures."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ResultsCollector(counts, writer))  # type: ignore[arg-type]
    return generate_latest(registry)

"""The comparison of a run with its baseline: regressions, improvements, new/missing/newly failing models.

A p50 latency change is flagged when it is beyond ``threshold`` *and* a two-sided Mann-Whitney U test
on the raw samples gives p < ``alpha``. Results made from different template versions (shas), on different
device models (an A100 and an H100 are both ``cuda``) or under different torch or transformers versions are not
compared at all: they are listed as not comparable, with what changed.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING

from accelerate_core.constants import API_HARDWARE, STATUS_DONE, STATUS_SKIPPED, TERMINAL_STATUSES, hardware_kind
from accelerate_core.report.collect import JobFact, Pair, RunData, latency_samples
from accelerate_core.report.model import Change, Comparison
from accelerate_core.report.stats import mann_whitney_p, relative_change

if TYPE_CHECKING:
    from accelerate_core.store import ResultsStore

DEFAULT_THRESHOLD = 0.10
"""A p50 change smaller than this fraction is never flagged."""
DEFAULT_ALPHA = 0.05
"""A change is real only when the Mann-Whitney U p-value is below this."""

_FAILED = TERMINAL_STATUSES - {STATUS_DONE, STATUS_SKIPPED}
Candidate = tuple[Pair, int, int, float, float]  # (pair, batch, seq, baseline p50, current p50)


def compare_runs(
    store: ResultsStore,
    current: RunData,
    baseline: RunData,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare ``current`` with ``baseline`` (both read by :func:`collect_run`)."""
    out = Comparison(baseline_run_id=baseline.run.run_id, threshold=threshold, alpha=alpha)
    _presence(current, baseline, out)
    candidates: list[Candidate] = []
    for pair in sorted(set(current.jobs) & set(baseline.jobs)):
        cur, base = current.jobs[pair], baseline.jobs[pair]
        if cur.status != STATUS_DONE or base.status != STATUS_DONE:
            continue
        changed = changes(cur, base, served=hardware_kind(pair[1]) == API_HARDWARE)
        if changed:
            out.not_comparable.append(
                {**_name(pair), "reason": "; ".join(changed), "current_sha": cur.template_sha,
                 "baseline_sha": base.template_sha}
            )  # fmt: skip
            continue
        candidates.extend(_shape_changes(pair, current, baseline, out, threshold))
    _test(store, candidates, current, baseline, out, alpha)
    return out


def changes(current: JobFact, baseline: JobFact, *, served: bool = False) -> list[str]:
    """What makes two results of one model not comparable (empty: comparable): the template, the device model,
    torch or transformers changed. A fact one side did not record (an older row) is not held against it.

    A ``served`` endpoint (hardware ``api:NAME``) has no device model: its row's device name is the endpoint's
    address and model, which may move (another port or host) while ``api:NAME`` stays the endpoint it was."""
    found = []
    if current.template_sha != baseline.template_sha:
        found.append(f"template {str(baseline.template_sha)[:12]} -> {str(current.template_sha)[:12]}")
    facts = (
        *(() if served else (("device model", device_model_of),)),
        ("torch", attrgetter("torch")),
        ("transformers", attrgetter("transformers")),
    )
    for what, fact in facts:
        before, now = fact(baseline), fact(current)
        if before and now and before != now:
            found.append(f"{what} {before} -> {now}")
    return found


def device_model_of(job: JobFact) -> str | None:
    """The device model a result ran on: recorded with it, else the slug of its device's name (older rows)."""
    from accelerate_core.backends.device_model import slug

    return job.device_model or (slug(job.device_name) if job.device_name else None)


def _name(pair: Pair) -> dict[str, str]:
    return {"model_type": pair[0], "hardware": pair[1]}


def _presence(current: RunData, baseline: RunData, out: Comparison) -> None:
    out.new = [_name(p) for p in sorted(set(current.jobs) - set(baseline.jobs))]
    out.missing = [_name(p) for p in sorted(set(baseline.jobs) - set(current.jobs))]
    for pair in sorted(set(current.jobs) & set(baseline.jobs)):
        cur, base = current.jobs[pair], baseline.jobs[pair]
        if base.status == STATUS_DONE and cur.status in _FAILED:
            out.newly_failing.append(
                {
                    **_name(pair),
                    "status": cur.status,
                    "error_class": cur.error_class,
                    "error_message": (cur.error_message or "").strip().splitlines()[0][:300]
                    if cur.error_message and cur.error_message.strip()
                    else "",
                }
            )
        elif base.status in _FAILED and cur.status == STATUS_DONE:
            out.newly_passing.append(_name(pair))


def _shape_changes(
    pair: Pair, current: RunData, baseline: RunData, out: Comparison, threshold: float
) -> list[Candidate]:
    base = {(s.batch_size, s.seq_len): s.p50_s for s in baseline.shapes.get(pair, ())}
    found: list[Candidate] = []
    for s in current.shapes.get(pair, ()):
        b50 = base.get((s.batch_size, s.seq_len))
        if s.p50_s is None or b50 is None:
            continue
        out.compared += 1
        if abs(relative_change(b50, s.p50_s)) > threshold:
            found.append((pair, s.batch_size, s.seq_len, b50, s.p50_s))
    return found


def _test(
    store: ResultsStore,
    candidates: list[Candidate],
    current: RunData,
    baseline: RunData,
    out: Comparison,
    alpha: float,
) -> None:
    keys = [current.jobs[c[0]].job_key for c in candidates] + [baseline.jobs[c[0]].job_key for c in candidates]
    samples = latency_samples(store, keys)
    pairs = [
        (
            samples.get((baseline.jobs[pair].job_key, b, s), []),
            samples.get((current.jobs[pair].job_key, b, s), []),
        )
        for pair, b, s, _, _ in candidates
    ]
    for (pair, b, s, b50, c50), p in zip(candidates, mann_whitney_p(pairs), strict=True):
        change = relative_change(b50, c50)
        if p is None:
            verdict = "untested"
        elif p >= alpha:
            verdict = "noise"
        else:
            verdict = "regression" if change > 0 else "improvement"
        item = Change(pair[0], pair[1], b, s, b50, c50, change, p, verdict)
        {"regression": out.regressions, "improvement": out.improvements}.get(verdict, out.within_noise).append(item)
    out.regressions.sort(key=lambda c: -c.change)
    out.improvements.sort(key=lambda c: c.change)

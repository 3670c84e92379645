"""Limits hold by construction: a job's hard limit travels with it, and a worker clamps one whose Celery backstop
would reach its own visibility timeout (accelerate_core.limits, workers.tasks.fit_limits)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accelerate_core.config import MAX_TIME_LIMIT_S, Settings, TimeLimit
from accelerate_core.constants import LIMITS_CLAMPED_KEY, STATUS_DONE
from accelerate_core.contracts import JobLimits, JobSpec, job_key
from accelerate_core.limits import backstop_limits, fit_hard_s, visibility_timeout_s
from workers import tasks


@given(
    hard_s=st.floats(min_value=1.0, max_value=MAX_TIME_LIMIT_S),
    visibility_s=st.integers(min_value=31, max_value=int(MAX_TIME_LIMIT_S * 2)),
)
def test_a_fitted_hard_limit_ends_before_the_visibility_timeout(hard_s: float, visibility_s: int) -> None:
    fitted = fit_hard_s(hard_s, visibility_s)
    assert 1 <= fitted <= hard_s
    assert backstop_limits(fitted)[1] < visibility_s
    if backstop_limits(hard_s)[1] < visibility_s:
        assert fitted == hard_s  # a job that fits is never cut
    else:
        assert backstop_limits(fitted + 1)[1] >= visibility_s  # and one that does not loses no more than it must


def _spec(hard_s: float) -> JobSpec:
    return JobSpec(key=job_key("r", "m", "cpu", "dry"), run_id="r", model_type="m", hardware="cpu", kind="dry",
                   limits=JobLimits(soft_s=hard_s / 2, hard_s=hard_s))  # fmt: skip


class _NoCounting:
    def count(self, key: str) -> int:
        raise AssertionError("a first delivery is not counted")


def test_a_worker_clamps_a_job_whose_limit_reaches_its_visibility_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # Given a worker whose own limits are short (so is its visibility timeout: 45 s)
    settings = Settings(time_limits={"test": TimeLimit(3, 10), "dry": TimeLimit(1, 2)})
    assert settings.visibility_timeout_s == visibility_timeout_s([10]) == 45
    ctx = tasks.WorkerContext(settings, "cpu0@h", "h", _NoCounting())  # type: ignore[arg-type]
    # When it gets a job planned with the default limits (hard 180 s: backstop 216 s)
    with caplog.at_level(logging.WARNING, logger="workers.tasks"):
        result = tasks.handle_delivery(_spec(180), ctx, redelivered=False)
    # Then it runs it with a hard limit that ends in time, says so in its log, and its row says so
    fitted, why = tasks.fit_limits(_spec(180), 45)
    assert fitted.limits.hard_s == fit_hard_s(180, 45) == 37 and fitted.limits.soft_s == 18.5
    assert result.status == STATUS_DONE and result.environment[LIMITS_CLAMPED_KEY] == why
    assert why is not None and "180 s to 37 s" in why and "time_limits.dry.hard_s >= 180" in why
    assert any("180 s to 37 s" in r.getMessage() for r in caplog.records)
    # and a job that fits runs untouched, with nothing in its row
    fitting = tasks.handle_delivery(_spec(20), ctx, redelivered=False)
    assert LIMITS_CLAMPED_KEY not in fitting.environment
    assert tasks.fit_limits(_spec(20), 45) == (_spec(20), None)

"""``accel run --wait`` never waits forever: :class:`scheduler.stall.StallWatch` on a clock the test moves."""

from __future__ import annotations

from accelerate_core.contracts import StatusSnapshot
from accelerate_core.errors import ConfigError, RunStalledError
from scheduler.stall import Liveness, StallWatch, waiting_by_target

ALL = Liveness(writer=True, served=frozenset({"hw.cpu", "hw.cuda"}))


def _snap(terminal: int, total: int = 10, *, cuda_left: int = 0, model: str | None = None) -> StatusSnapshot:
    by_hw = {"cpu": {"total": total - cuda_left, "done": terminal}}
    if cuda_left:
        by_hw["cuda" if model is None else f"cuda.{model}"] = {"total": cuda_left, "queued": cuda_left}
    return StatusSnapshot(run_id="r1", phase="p", status="running", total=total, terminal=terminal, by_hardware=by_hw)


def _watch(stall_s: float = 100, grace_s: float = 30) -> StallWatch:
    return StallWatch("r1", stall_s, lambda target: f"hw.{target}", started=0.0, grace_s=grace_s)


def test_progress_keeps_a_run_alive_and_its_absence_is_a_stall_naming_what_to_do() -> None:
    watch = _watch(stall_s=100)
    assert watch.observe(_snap(1), ALL, 50) is None
    assert watch.observe(_snap(2), ALL, 140) is None  # progress at 140 restarts the clock
    assert watch.observe(_snap(2), None, 239) is None
    line = watch.observe(_snap(2), None, 240)
    assert line is not None and "no job finished for 100 s (2/10 finished)" in line
    assert "accel status r1" in line and "accel run --resume r1 --wait" in line


def test_a_run_with_no_status_at_all_stalls_too() -> None:
    line = _watch(stall_s=10).observe(None, ALL, 10)
    assert line is not None and "no status yet" in line


def test_no_live_writer_past_the_grace_is_a_stall() -> None:
    watch = _watch(grace_s=30)
    gone = Liveness(writer=False, served=frozenset({"hw.cpu"}))
    assert watch.observe(_snap(1), gone, 5) is None
    assert watch.observe(_snap(1), ALL, 20) is None  # it came back: the grace starts again
    assert watch.observe(_snap(1), gone, 25) is None
    assert watch.observe(_snap(1), gone, 54) is None
    line = watch.observe(_snap(1), gone, 55)
    assert line is not None and "no live writer" in line and "accel writer" in line


def test_a_kind_with_waiting_jobs_and_no_live_worker_is_a_stall_naming_the_queue() -> None:
    watch = _watch(grace_s=30)
    cpu_only = Liveness(writer=True, served=frozenset({"hw.cpu"}))
    assert watch.observe(_snap(3, cuda_left=4), cpu_only, 0) is None
    assert watch.observe(_snap(4, cuda_left=4), cpu_only, 29) is None
    line = watch.observe(_snap(5, cuda_left=4), cpu_only, 30)
    assert line is not None and "4 of its jobs wait on hw.cuda" in line and "accel worker --hardware cuda" in line
    # a kind whose jobs are all finished needs no worker
    assert _watch(grace_s=1).observe(_snap(10), Liveness(True, frozenset()), 5) is None


def test_jobs_of_one_device_model_stall_on_its_queue_whatever_nodes_of_other_models_serve() -> None:
    # Given a run whose cuda jobs target the h100 model, and live cuda nodes of the a100 model only
    watch = _watch(grace_s=30)
    a100s = Liveness(writer=True, served=frozenset({"hw.cpu", "hw.cuda", "hw.cuda.a100"}))
    assert watch.observe(_snap(3, cuda_left=4, model="h100"), a100s, 0) is None
    # When the grace passes
    line = watch.observe(_snap(4, cuda_left=4, model="h100"), a100s, 30)
    # Then the line names the model's queue and what to start, not the kind's queue the a100 nodes consume
    assert line is not None and "4 of its jobs wait on hw.cuda.h100 and no live worker" in line
    assert "`accel worker --hardware cuda` on a h100 node" in line
    # and an h100 node that comes back serves it
    h100 = Liveness(writer=True, served=frozenset({"hw.cpu", "hw.cuda", "hw.cuda.h100"}))
    assert _watch(grace_s=1).observe(_snap(4, cuda_left=4, model="h100"), h100, 5) is None


def test_the_grace_never_exceeds_the_stall_time() -> None:
    watch = _watch(stall_s=3, grace_s=30)
    assert watch.grace_s == 3
    assert watch.observe(_snap(0), Liveness(False, frozenset({"hw.cpu"})), 0) is None
    assert "no live writer" in (watch.observe(_snap(0), Liveness(False, frozenset({"hw.cpu"})), 3) or "")


def test_waiting_by_target_counts_unfinished_jobs() -> None:
    assert waiting_by_target(_snap(3, cuda_left=2, model="h100")) == {"cpu": 5, "cuda.h100": 2}
    assert waiting_by_target(_snap(3, cuda_left=2)) == {"cpu": 5, "cuda": 2}
    assert waiting_by_target(_snap(10)) == {}


def test_a_missing_writer_is_named_rather_than_the_lack_of_progress_it_causes() -> None:
    watch = _watch(stall_s=3, grace_s=3)
    assert watch.observe(None, Liveness(False, frozenset({"hw.cpu"})), 1.5) is None  # found missing late
    line = watch.observe(None, None, 3)  # not probed again: the last probe stands; the run stalled
    assert line is not None and "no live writer" in line


def test_a_stall_exits_1_like_a_run_that_did_not_complete_never_2_for_usage() -> None:
    assert RunStalledError("run r1 stalled").exit_code == 1 != ConfigError("bad").exit_code

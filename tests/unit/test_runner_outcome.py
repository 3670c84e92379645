"""Classification of job failures and the runner's wire protocol, without any process."""

from __future__ import annotations

import errno
import os

import pytest

from accelerate_core import wire
from accelerate_core.constants import ERR_BUILD, ERR_FILE_SIZE, ERR_FORWARD, ERR_MISSING_DEPENDENCY, ERR_OOM
from accelerate_core.errors import ContractError, RunnerError
from accelerate_core.runner import ChildOutcome, JobFailure, classify_exception
from accelerate_core.runner.protocol import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TASKS, JobRequest, LineReader, encode


def _raised(make):
    try:
        make()
    except BaseException as e:
        return e
    raise AssertionError("did not raise")


def test_plain_exceptions_are_forward_errors():
    assert classify_exception(ValueError("shape mismatch")) == ERR_FORWARD


def test_a_tag_on_the_exception_wins_over_the_default():
    assert classify_exception(JobFailure(ERR_BUILD, "config rejected")) == ERR_BUILD


def test_memory_failures_are_out_of_memory_whatever_wraps_them():
    def wrapped():
        try:
            raise MemoryError
        except MemoryError as e:
            raise JobFailure(ERR_BUILD, "build failed") from e

    allocator = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2097152000 bytes")
    assert classify_exception(_raised(wrapped)) == ERR_OOM
    assert classify_exception(allocator) == ERR_OOM
    assert classify_exception(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) == ERR_OOM


def test_a_write_past_the_file_size_limit_wins_over_a_tag():
    def wrapped():
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as e:
            raise JobFailure(ERR_BUILD, "save failed") from e

    assert classify_exception(_raised(wrapped)) == ERR_FILE_SIZE
    assert classify_exception(OSError(errno.ENOSPC, "No space left on device")) == ERR_FORWARD


def test_import_errors_and_requires_library_messages_are_missing_dependencies():
    assert classify_exception(ModuleNotFoundError("No module named 'natten'")) == ERR_MISSING_DEPENDENCY
    assert classify_exception(ImportError("cannot import name x")) == ERR_MISSING_DEPENDENCY
    message = "DetrConvEncoder requires the timm library but it was not found in your environment."
    assert classify_exception(RuntimeError(message)) == ERR_MISSING_DEPENDENCY


def test_job_failure_is_not_an_error_of_the_fleet():
    from accelerate_core.errors import AccelerateError

    assert not isinstance(JobFailure(ERR_BUILD, "x"), AccelerateError)


def test_outcome_round_trips_by_the_one_wire_rule():
    outcome = ChildOutcome.failure("j", ERR_OOM, "MemoryError", "too big", peak_rss_mb=12.5)
    data = wire.encode(outcome)

    assert wire.decode(ChildOutcome, data) == outcome
    assert data["ok"] is False and data["error_class"] == ERR_OOM
    # an unknown key is ignored only when a newer minor schema wrote it
    newer = f"{wire.SCHEMA_MAJOR}.{wire.SCHEMA_MINOR + 1}"
    assert wire.decode(ChildOutcome, {**data, "v": newer, "future_field": 1}) == outcome
    with pytest.raises(ContractError, match="future_field"):
        wire.decode(ChildOutcome, {**data, "future_field": 1})


def test_job_request_validates_and_round_trips():
    request = JobRequest("j", {"a": 1}, 2.5, 100, {"OMP_NUM_THREADS": "1"})

    assert wire.decode(JobRequest, wire.encode(request)) == request
    with pytest.raises(RunnerError, match="time_limit_s"):
        JobRequest("j", {}, 0, 100)
    with pytest.raises(ContractError, match="payload"):
        wire.decode(JobRequest, {"v": wire.SCHEMA_VERSION, "job_id": "j"})
    with pytest.raises(ContractError, match="time_limit_s"):
        wire.decode(JobRequest, {**wire.encode(request), "time_limit_s": 0})
    with pytest.raises(RunnerError, match="max_tasks=1"):
        JobRequest("j", {}, 1, 100, max_tasks=1)
    with pytest.raises(RunnerError, match="max_file_mb=0"):
        JobRequest("j", {}, 1, 100, max_file_mb=0)


def test_a_request_without_box_limits_gets_the_defaults():
    data = wire.encode(JobRequest("j", {}, 1, 100))
    del data["max_tasks"], data["max_file_mb"]

    request = wire.decode(JobRequest, data)

    assert (request.max_tasks, request.max_file_mb) == (DEFAULT_MAX_TASKS, DEFAULT_MAX_FILE_MB)


def test_line_reader_splits_partial_lines_and_sees_end_of_stream():
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = LineReader(r)
    line = encode({"event": "pong", "n": 1})

    os.write(w, line[:5])
    assert reader.read() == []
    os.write(w, line[5:] + encode({"event": "x"}))
    assert reader.read() == [{"event": "pong", "n": 1}, {"event": "x"}]
    os.close(w)
    assert reader.read() == [] and reader.eof
    os.close(r)


def test_line_reader_skips_a_corrupt_line_and_keeps_the_stream(caplog):
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = LineReader(r)

    os.write(w, b'{"op": "sub\n' + encode({"op": "ping"}))

    assert reader.read() == [{"op": "ping"}]
    assert "corrupt" in caplog.text
    os.close(w)
    os.close(r)

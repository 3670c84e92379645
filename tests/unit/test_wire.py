"""Property tests of the wire format (accelerate_core.wire): every decoder, the one decoding rule, round trips.

Every contract that crosses a process edge is decoded by one function. Whatever JSON arrives, it gives the
contract or exactly one ContractError, never another exception; what was encoded decodes to an equal object;
and the version rule holds: another major is a VersionSkewError naming both versions, a newer minor's unknown
keys are ignored, an unknown key at our own minor is refused.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelerate_core import wire
from accelerate_core.bench.measurements_file import MeasurementsFile
from accelerate_core.config import BenchConfig
from accelerate_core.constants import (
    ATTN_IMPLEMENTATIONS,
    COMPILE_BACKENDS,
    DEVICE_MODEL_PATTERN,
    DTYPES,
    HARDWARE_KINDS,
    JOB_KINDS,
    MODEL_SIZES,
    SOURCE_KINDS,
    TERMINAL_STATUSES,
)
from accelerate_core.contracts import (
    BenchReport,
    BenchRequest,
    EndpointJob,
    FailureRow,
    JobLimits,
    JobResult,
    JobSpec,
    Makespan,
    Measurement,
    ModelSource,
    RunParams,
    RunPlan,
    RunRecord,
    SkipReason,
    StatusSnapshot,
    TemplateRef,
    WorkerInfo,
    job_key,
    parse_job_key,
)
from accelerate_core.errors import ContractError, VersionSkewError
from accelerate_core.runner.outcome import ChildOutcome
from accelerate_core.runner.protocol import JobRequest

CONTRACTS: tuple[type[Any], ...] = (
    TemplateRef,
    JobLimits,
    SkipReason,
    BenchConfig,
    JobSpec,
    Measurement,
    JobResult,
    Makespan,
    RunParams,
    RunPlan,
    RunRecord,
    WorkerInfo,
    FailureRow,
    StatusSnapshot,
    BenchRequest,
    BenchReport,
    MeasurementsFile,
    JobRequest,
    ChildOutcome,
)
"""Every contract decoded at a process edge (broker, fork-server pipe, DuckDB JSON column, snapshot, file)."""

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=8)
any_json = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
positive = st.integers(1, 4096)
positive_sizes = st.lists(positive, min_size=1, max_size=3).map(tuple)


@st.composite
def bench_configs(draw: st.DrawFn) -> BenchConfig:
    low = draw(st.floats(0, 10, allow_nan=False))
    return BenchConfig(
        batch_sizes=draw(positive_sizes),
        seq_lens=draw(positive_sizes),
        image_size=draw(st.none() | positive),
        warmup=draw(st.integers(0, 50)),
        min_iters=draw(positive),
        min_duration_s=low,
        max_duration_s=low + draw(st.floats(0, 10, allow_nan=False)),
        new_tokens=draw(positive),
        p50_ci_rel=draw(st.none() | st.floats(1e-6, 0.99)),
    )


@st.composite
def job_limits(draw: st.DrawFn) -> JobLimits:
    soft = draw(st.floats(0.001, 1e6, allow_nan=False))
    return JobLimits(soft, soft + draw(st.floats(0.001, 1e6, allow_nan=False)), draw(positive))


SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    str: st.text(max_size=8),
    int: st.integers(-(2**31), 2**31),
    float: finite,
    bool: st.booleans(),
}

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,10}", fullmatch=True)
"""Run ids, phases, model types, template names: the names pattern (accelerate_core.names)."""

FIELD_STRATEGIES: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (TemplateRef, "name"): names,
    (JobSpec, "run_id"): names,
    (JobSpec, "model_type"): names,
    (JobResult, "run_id"): names,
    (JobResult, "model_type"): names,
    (RunPlan, "run_id"): names,
    (RunPlan, "phase"): names,
    (JobSpec, "size"): st.sampled_from(MODEL_SIZES),
    (JobSpec, "dtype"): st.sampled_from(DTYPES),
    (BenchRequest, "size"): st.sampled_from(MODEL_SIZES),
    (BenchRequest, "dtype"): st.sampled_from(DTYPES),
    (JobSpec, "attn"): st.none() | st.sampled_from(ATTN_IMPLEMENTATIONS),
    (JobSpec, "device_model"): st.none() | st.from_regex(DEVICE_MODEL_PATTERN, fullmatch=True),
    (BenchRequest, "attn"): st.none() | st.sampled_from(ATTN_IMPLEMENTATIONS),
    (JobSpec, "compile_backend"): st.none() | st.sampled_from(COMPILE_BACKENDS),
    (BenchRequest, "compile_backend"): st.none() | st.sampled_from(COMPILE_BACKENDS),
    (ModelSource, "kind"): st.sampled_from(SOURCE_KINDS),
    (ModelSource, "label"): names,
    (ModelSource, "model_type"): st.just("") | names,
    (JobSpec, "hardware"): st.sampled_from(HARDWARE_KINDS),
    (JobSpec, "kind"): st.sampled_from(JOB_KINDS),
    (JobResult, "status"): st.sampled_from(sorted(TERMINAL_STATUSES)),
    (JobRequest, "job_id"): st.text(min_size=1, max_size=12),
    (JobRequest, "time_limit_s"): st.floats(0.001, 1e6, allow_nan=False),
    (JobRequest, "mem_cap_mb"): positive,
    (JobRequest, "max_tasks"): st.integers(2, 4096),
    (JobRequest, "max_file_mb"): positive,
    (EndpointJob, "name"): names,
    (EndpointJob, "url"): st.text(min_size=1, max_size=12),
    (EndpointJob, "concurrency"): positive_sizes,
    (EndpointJob, "requests"): positive,
    (EndpointJob, "prompt_tokens"): positive,
    (EndpointJob, "max_tokens"): positive,
    (EndpointJob, "timeout_s"): st.floats(0.001, 1e6, allow_nan=False),
}
"""Fields whose contract checks admit only some values."""


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a type hint, as the contracts declare them (the same hints the decoder walks)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return any_json
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else strategy(a) for a in args))
    if origin is tuple:
        return st.lists(strategy(args[0]), max_size=2).map(tuple)
    if origin in (Mapping, dict):
        return st.dictionaries(st.text(max_size=6), strategy(args[1]), max_size=2)
    scalar = SCALARS.get(hint)
    return scalar if scalar is not None else contracts(hint)


def contracts(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Instances of a contract, every field drawn (nested contracts too)."""
    if cls is BenchConfig:
        return bench_configs()
    if cls is JobLimits:
        return job_limits()
    if cls is JobSpec:
        return job_specs()
    return st.builds(cls, **field_strategies(cls))


def field_strategies(cls: type[Any], *, leave: tuple[str, ...] = ()) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per field of a contract (but those in ``leave``, which keep their defaults)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: FIELD_STRATEGIES.get((cls, f.name), st.deferred(lambda h=hints[f.name]: strategy(h)))
        for f in dataclasses.fields(cls)
        if f.name not in leave
    }


@st.composite
def job_specs(draw: st.DrawFn) -> JobSpec:
    """Jobs, some of them a served endpoint's (whose hardware is then ``api:NAME``)."""
    spec = draw(st.builds(JobSpec, **field_strategies(JobSpec, leave=("endpoint",))))
    endpoint = draw(st.none() | contracts(EndpointJob))
    if endpoint is None:
        return spec
    return dataclasses.replace(spec, endpoint=endpoint, hardware=endpoint.hardware, device_model=None)


def _json(value: Any) -> Any:
    """What the other side of a process edge gets: a JSON text parsed again."""
    return json.loads(json.dumps(value))


@st.composite
def mutated(draw: st.DrawFn, cls: type[Any]) -> Any:
    """A valid encoding of ``cls`` with one thing changed somewhere inside it: the near misses."""
    data = _json(wire.encode(draw(contracts(cls))))
    paths = list(_paths(data))
    path = draw(st.sampled_from(paths))
    target = data
    for step in path[:-1]:
        target = target[step]
    action = draw(st.sampled_from(("replace", "drop", "add")))
    key = path[-1]
    if action == "replace" or isinstance(target, list):
        target[key] = draw(any_json)
    elif action == "drop":
        del target[key]
    else:
        target[draw(st.text(max_size=6))] = draw(any_json)
    return data


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> typing.Iterator[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield (*prefix, key)
        yield from _paths(inner, (*prefix, key))


# -- the properties -------------------------------------------------------------------------------------------


def _decodes_or_one_contract_error(cls: type[Any], data: Any) -> None:
    try:
        got = wire.decode(cls, data)
    except ContractError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(got, cls)


@pytest.mark.parametrize("cls", CONTRACTS, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_any_json_decodes_to_the_contract_or_one_contract_error(cls: type[Any], data: st.DataObject) -> None:
    # Given any JSON value, a versioned object of any keys, or a valid message with one change inside it
    versioned = st.dictionaries(st.text(max_size=8), any_json, max_size=6).map(
        lambda d: {**d, "v": wire.SCHEMA_VERSION}
    )
    value = data.draw(any_json | versioned | mutated(cls))
    # When it is decoded, Then it is the contract or exactly one ContractError, never another exception
    _decodes_or_one_contract_error(cls, value)


@pytest.mark.parametrize("cls", CONTRACTS, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_what_is_encoded_decodes_to_an_equal_object(cls: type[Any], data: st.DataObject) -> None:
    obj = data.draw(contracts(cls))
    message = _json(wire.encode(obj))
    assert message["v"] == wire.SCHEMA_VERSION
    assert wire.decode(cls, message) == obj


@pytest.mark.parametrize("cls", (JobSpec, JobResult, RunPlan, WorkerInfo, StatusSnapshot), ids=lambda c: c.__name__)
@RULE
@given(data=st.data())
def test_the_version_rule(cls: type[Any], data: st.DataObject) -> None:
    obj = data.draw(contracts(cls))
    message = _json(wire.encode(obj))
    extra = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in message))
    # Another major (older or newer): a VersionSkewError naming both versions
    major = data.draw(st.integers(0, 99).filter(lambda m: m != wire.SCHEMA_MAJOR))
    theirs = f"{major}.{data.draw(st.integers(0, 99))}"
    with pytest.raises(VersionSkewError) as info:
        wire.decode(cls, {**message, "v": theirs})
    assert (info.value.theirs, info.value.ours) == (theirs, wire.SCHEMA_VERSION)
    assert theirs in str(info.value) and wire.SCHEMA_VERSION in str(info.value)
    # A newer minor: its unknown optional key is ignored
    newer = f"{wire.SCHEMA_MAJOR}.{wire.SCHEMA_MINOR + data.draw(st.integers(1, 50))}"
    assert wire.decode(cls, {**message, "v": newer, extra: data.draw(any_json)}) == obj
    # Our own minor: an unknown key is refused (nothing newer wrote it)
    with pytest.raises(ContractError, match="unknown keys"):
        wire.decode(cls, {**message, extra: data.draw(any_json)})


def test_a_message_without_a_version_predates_versioning() -> None:
    spec = JobSpec(key="k", run_id="r", model_type="bert", hardware="cpu", kind="test")
    body = {k: v for k, v in wire.encode(spec).items() if k != "v"}
    with pytest.raises(VersionSkewError) as info:
        wire.decode(JobSpec, body)
    assert info.value.theirs == wire.UNVERSIONED and "upgrade its sender" in str(info.value)
    for bad in ("1", "1.x", 1.0, None):
        with pytest.raises(ContractError, match="malformed schema version"):
            wire.decode(JobSpec, {**body, "v": bad})


def test_errors_name_the_path_of_the_bad_value() -> None:
    spec = JobSpec(key="k", run_id="r", model_type="bert", hardware="cpu", kind="test")
    message = wire.encode(spec)
    with pytest.raises(ContractError, match=r"^JobSpec\.bench\.warmup must be an integer, got a boolean$"):
        wire.decode(JobSpec, {**message, "bench": {**message["bench"], "warmup": True}})
    with pytest.raises(ContractError, match=r"JobSpec has no 'run_id'"):
        wire.decode(JobSpec, {k: v for k, v in message.items() if k != "run_id"})
    with pytest.raises(ContractError, match=r"JobSpec\.limits\.hard_s must be a number, got a string"):
        wire.decode(JobSpec, {**message, "limits": {**message["limits"], "hard_s": "180"}})


def test_unknown_keys_of_a_newer_minor_are_logged_once_per_contract_and_key(caplog: pytest.LogCaptureFixture) -> None:
    spec = JobSpec(key="k", run_id="r", model_type="bert", hardware="cpu", kind="test")
    newer = {**wire.encode(spec), "v": f"{wire.SCHEMA_MAJOR}.{wire.SCHEMA_MINOR + 1}", "zz_logged_once": 1}
    with caplog.at_level("WARNING", logger="accelerate_core.wire"):
        for _ in range(3):
            assert wire.decode(JobSpec, newer) == spec
    assert [r.getMessage() for r in caplog.records].count(
        f"ignoring JobSpec key 'zz_logged_once' of a newer schema minor (this is {wire.SCHEMA_VERSION})"
    ) == 1


@FAST
@given(
    run_id=st.text(min_size=1, max_size=12),
    model=st.text(min_size=1, max_size=12),
    hardware=st.sampled_from([*HARDWARE_KINDS, "api:local"]),
    kind=st.sampled_from(JOB_KINDS),
)
def test_a_job_key_names_its_job(run_id: str, model: str, hardware: str, kind: str) -> None:
    # A reader that cannot decode a message can still name the job from its key alone
    assert parse_job_key(job_key(run_id, model, hardware, kind)) == (run_id, model, hardware, kind)
    assert parse_job_key(f"{run_id}:{model}") is None


def test_a_key_with_a_line_break_is_named_on_one_line() -> None:
    # Found by the property above: a mapping key holding a line break split the error over two lines
    from accelerate_core.runner.protocol import JobRequest

    data = {"v": wire.SCHEMA_VERSION, "job_id": "0", "payload": {}, "time_limit_s": 1.0, "mem_cap_mb": 1,
            "env": {"a\nb": None}}  # fmt: skip
    with pytest.raises(ContractError, match=r"JobRequest\.env\['a\\nb'\] must be a string") as e:
        wire.decode(JobRequest, data)
    assert "\n" not in str(e.value)

"""The body of one job, run in a child forked by the fork server (entry ``constants.JOB_ENTRY``: :func:`job_entry`).

A ``test`` job renders the model's test from the template it carries, with facts introspected from this
process's own transformers (``accelerate_core.catalog.template_context``), writes it to a temporary
folder and runs it with pytest *in this process* (the child was forked from a parent that already
imported torch and transformers, so this costs milliseconds, not a fresh interpreter). The generated
benchmark test writes its measurements to ``$ACCEL_BENCH_OUT``; they are read back and returned with the
outcome of every test, the generated source and the environment, as an encoded ``JobResult``.

A model that fails (does not build, raises in forward, fails an assertion) is a *result*, never an
exception: :func:`job_entry` returns it with status ``failed`` and its error class. Time limits, memory
caps and crashes are the runner's business (``accelerate_core.job_outcome.outcome_to_result``).

The heavy imports are at module level on purpose: the fork server imports this module once, so every
forked child starts with them loaded.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from accelerate_core import bench as accel_bench
from accelerate_core import catalog, wire
from accelerate_core.bench.compile import COMPILE_UNSUPPORTED
from accelerate_core.constants import (
    BENCH_OUT_ENV,
    ERR_BUILD,
    ERR_FORWARD,
    ERR_RENDER,
    ERR_TEST_FAILED,
    ERR_UNSUPPORTED,
    ERROR_CLASSES,
    JOB_KIND_DRY,
    JOB_TIMINGS_KEY,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_SKIPPED,
)
from accelerate_core.contracts import JobResult, JobSpec, Measurement, TemplateRef
from accelerate_core.dispatch import ATTN_UNSUPPORTED
from accelerate_core.errors import AccelerateError, TemplateError
from accelerate_core.runner import classify_exception
from templates_db.context import job_context
from templates_db.render import render_job

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 2000
_PYTEST_INI = "[pytest]\naddopts =\nfilterwarnings =\n    ignore\n"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]+")
_UNUSED_PLUGINS = ("cacheprovider", "unraisableexception", "threadexception", "debugging", "pastebin", "junitxml",
                   "doctest", "setuponly", "setupplan", "stepwise")  # fmt: skip
_NO_PLUGINS = tuple(arg for name in _UNUSED_PLUGINS for arg in ("-p", f"no:{name}"))
"""pytest plugins a generated test does not need (none gives a test a fixture). The two exception plugins call
``gc.collect()`` several times at the end of a session: with torch and transformers loaded that costs ~0.6 s
per job. Every plugin also costs the session's start (its hooks and fixtures are parsed for each job): the
other seven took ~14% of it (bench_full_run's ``pytest_start`` stage, ~0.25 s a job on a loaded machine)."""


def _preload_pytest_plugins() -> None:
    """Import pytest's built-in plugins now, in the fork server, so no child pays for it."""
    from _pytest.config import default_plugins

    for name in default_plugins:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"_pytest.{name}")


_PRELOAD: Final = (
    "transformers.modeling_utils",
    "transformers.activations",
    "transformers.modeling_outputs",
    "transformers.cache_utils",
    "transformers.masking_utils",
    "transformers.generation.utils",
    "transformers.models.auto.modeling_auto",
    "transformers.modeling_layers",
    "transformers.models.auto.processing_auto",
    "accelerate_core.catalog.api",
    "accelerate_core.backends.device_model",
)
"""What every model's build imports: ~4 s per job when each forked child imports it again. ``modeling_layers``
(with ``processing_utils``, audio and video utils) is imported by nearly every modeling module and the auto
processing mappings (tokenizer, image, video, feature extractor) by most: ~0.12 s a job on a loaded machine."""


def _warm_catalog() -> None:
    """Load the catalog's heavy half and its cached index now, in the fork server, so no child repeats it."""
    try:
        for module in _PRELOAD:
            importlib.import_module(module)
        from accelerate_core.catalog.index import load_index
        from accelerate_core.catalog.overrides import load_table

        load_table()  # the exceptions table every build reads (override_for): a TOML parse of ~45 ms a job
        entries = load_index()
        if entries:
            catalog.template_context(entries[0].model_type)
    except Exception as e:  # a child reports the real error with its job; the server must still start
        logger.warning("catalog not preloaded: %s", e)


_preload_pytest_plugins()
_warm_catalog()


def job_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job and return its encoded result; a failing model is a result, not an exception.

    This is the fork-server edge: the job arrives encoded (``wire.encode(JobSpec)``) and its result
    leaves encoded; in between it is a :class:`JobSpec` and a :class:`JobResult`.

    Returns:
        The result: ``done`` when every generated test passed, else ``failed`` with its error class.
    """
    spec = wire.decode(JobSpec, payload)
    started = time.time()
    # The preloaded heap (torch, transformers) is shared with the fork server: keep the garbage collector
    # off it, or each full collection walks (and copies) hundreds of MB of pages in this child.
    gc.freeze()
    _apply_thread_count()
    if spec.kind == JOB_KIND_DRY:
        return wire.encode(_result(spec, started, status=STATUS_DONE))
    return wire.encode(run_test_job(spec, started))


def run_test_job(spec: JobSpec, started: float) -> JobResult:
    """Render the job's test, run it with pytest in this process and collect its measurements."""
    template = spec.template
    if template is None:
        return _failed(spec, started, ERR_RENDER, "ValueError", "the job carries no template: plan it again")
    try:
        source = render_test(spec, template)
    except TemplateError as e:
        return _failed(spec, started, ERR_RENDER, type(e).__name__, str(e), template=template)
    except Exception as e:  # building the render context means building the tiny config
        error_class = classify_exception(e)
        error_class = ERR_BUILD if error_class == ERR_FORWARD else error_class
        return _failed(spec, started, error_class, type(e).__name__, str(e), template=template)
    rendered = time.time()
    with tempfile.TemporaryDirectory(prefix="accel-job-") as tmp:
        run = run_pytest(source, Path(tmp), spec.model_type)
        tested = time.time()
        measurements, environment = _read_measurements(Path(tmp) / "bench.json", spec.hardware)
    environment[JOB_TIMINGS_KEY] = {"render_s": round(rendered - started, 4), **run.stages(tested - rendered)}
    environment["tests"] = {"passed": run.passed, "failed": run.failed, "skipped": run.skipped}
    status = STATUS_DONE if run.ok else STATUS_FAILED
    if not run.ok and unsupported_combination(spec, run.error_message):
        status, run.error_class = STATUS_SKIPPED, ERR_UNSUPPORTED  # a combination this stack lacks, not a failure
    return _result(
        spec,
        started,
        status=status,
        error_class=None if run.ok else run.error_class,
        error_type=None if run.ok else run.error_type,
        error_message=None if run.ok else run.error_message,
        template=template,
        source=source,
        tests_passed=len(run.passed),
        tests_failed=len(run.failed),
        measurements=measurements,
        environment=environment,
    )


_DTYPE_UNSUPPORTED: Final = re.compile(
    r"not implemented for '(Half|BFloat16)'|(Half|BFloat16) (is )?not supported", re.I
)
"""How torch says an operator has no kernel for a dtype on this device."""


def unsupported_combination(spec: JobSpec, message: str | None) -> bool:
    """True when the job failed because its dtype (not float32), attention, shape or compile backend is not available
    for this model here."""
    if message is None:
        return False
    if spec.dtype != "float32" and _DTYPE_UNSUPPORTED.search(message) is not None:
        return True
    if accel_bench.SHAPE_UNSUPPORTED in message:
        return True
    backend = spec.compile_backend
    if backend is not None and COMPILE_UNSUPPORTED.format(backend=backend) in message:
        return True
    return spec.attn is not None and ATTN_UNSUPPORTED.format(attn=spec.attn) in message


def render_context(spec: JobSpec) -> dict[str, Any]:
    """The facts a template is rendered with: the catalog's, plus the job's shapes and benchmark loop."""
    context = job_context(spec.architecture, spec.hardware, spec.bench)
    source = spec.source
    context.update(job_key=spec.key, run_id=spec.run_id, dtype=spec.dtype, size=spec.size, attn=spec.attn,
                   compile_backend=spec.compile_backend,
                   checkpoint=source.path if source is not None else None)  # fmt: skip
    return context


def render_test(spec: JobSpec, template: TemplateRef) -> str:
    """The generated test source of ``spec``."""
    return render_job(template, render_context(spec))


@dataclass
class PytestRun:
    """What pytest reported for one generated test file."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    exit_code: int = 0
    phase_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every test passed and at least one ran."""
        return not self.failed and self.error_class is None and bool(self.passed)

    def add_phase(self, report: pytest.TestReport) -> None:
        """Count one test phase's time under its stage (see :data:`_TEST_STAGES`)."""
        name = report.nodeid.rsplit("::", 1)[-1]
        stage = _TEST_STAGES.get(name, "tests_s") if report.when == "call" else f"{report.when}_s"
        stage = "build_s" if stage == "setup_s" else stage
        self.phase_s[stage] = self.phase_s.get(stage, 0.0) + report.duration

    def stages(self, pytest_s: float) -> dict[str, float]:
        """Seconds per stage: the test phases, and ``pytest_start_s`` for the rest of the pytest session
        (start, collection, importing the generated module, reporting); ``pytest_s`` is the whole session."""
        out = {k: round(v, 4) for k, v in self.phase_s.items()}
        out["pytest_start_s"] = round(max(0.0, pytest_s - sum(self.phase_s.values())), 4)
        out["pytest_s"] = round(pytest_s, 4)
        return out


_TEST_STAGES: Final = {"test_forward": "forward_s", "test_generate": "generate_s", "test_benchmark": "loop_s"}
"""Stage of a generated test's call phase; any other test counts as ``tests_s``. Setup phases are ``build_s``
(the module fixtures build the model and its inputs), teardowns ``teardown_s``."""


class _Collector:
    """pytest plugin: the outcome of every test and the first failure's exception."""

    def __init__(self, run: PytestRun) -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.run.add_phase(report)
        name = report.nodeid.rsplit("::", 1)[-1]
        if report.failed and name not in self.run.failed:
            self.run.failed.append(name)
        elif report.skipped and report.when in ("setup", "call"):
            self.run.skipped.append(name)
        elif report.passed and report.when == "call":
            self.run.passed.append(name)

    def pytest_exception_interact(
        self, node: pytest.Item | pytest.Collector, call: pytest.CallInfo[Any], report: Any
    ) -> None:
        if self.run.error_class is not None or call.excinfo is None:
            return
        exc = call.excinfo.value
        entries = call.excinfo.traceback
        in_test = bool(entries) and Path(str(entries[-1].path)) == Path(str(node.path))
        self.run.error_class = classify_failure(exc, getattr(report, "when", "call"), node.name, in_test=in_test)
        self.run.error_type = type(exc).__name__
        self.run.error_message = _one_line(f"{node.name}: {exc}")


def classify_failure(exc: BaseException, when: str, test_name: str, *, in_test: bool = True) -> str:
    """The error class of a generated test's failure.

    Tagged exceptions, missing dependencies and memory errors keep the runner's class; otherwise a
    failure while collecting the module, in a fixture, or in a build test is a ``build-error``; an
    ``AssertionError`` raised by the test itself (``in_test``) is ``test-failed``; anything else raised
    by the model (an ``assert`` inside transformers included) is a ``forward-error``.
    """
    error_class = classify_exception(exc)
    if error_class != ERR_FORWARD:
        return error_class if error_class in ERROR_CLASSES else ERR_FORWARD
    if when in ("collect", "setup") or "build" in test_name or "instantiate" in test_name:
        return ERR_BUILD
    if isinstance(exc, AssertionError) and in_test:
        return ERR_TEST_FAILED
    return ERR_FORWARD


def run_pytest(source: str, workdir: Path, model_type: str) -> PytestRun:
    """Write ``source`` as a test module in ``workdir`` and run pytest on it in this process."""
    test_file = workdir / f"test_{_SAFE_NAME.sub('_', model_type)}.py"
    test_file.write_text(source, encoding="utf-8")
    ini = workdir / "pytest.ini"
    ini.write_text(_PYTEST_INI, encoding="utf-8")
    run = PytestRun()
    args = [str(test_file), "-q", "-c", str(ini), "--rootdir", str(workdir), *_NO_PLUGINS]
    os.environ[BENCH_OUT_ENV] = str(workdir / "bench.json")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # this child only: no third-party plugin scan
    run.exit_code = int(pytest.main(args, plugins=[_Collector(run)]))
    if not run.ok and run.error_class is None:
        run.error_class = ERR_BUILD if not run.passed and not run.failed else ERR_TEST_FAILED
        run.error_type = "PytestExit"
        run.error_message = f"pytest exited {run.exit_code} with {len(run.passed)} passed, {len(run.failed)} failed"
    return run


def _read_measurements(path: Path, hardware: str) -> tuple[tuple[Measurement, ...], dict[str, Any]]:
    """The measurements the benchmark test wrote, and the environment (measured here if it wrote none)."""
    measurements: tuple[Measurement, ...] = ()
    environment: dict[str, Any] = {}
    if path.is_file():
        try:
            found = accel_bench.read_measurements(path)
            measurements = tuple(found.measurements)
            environment = dict(found.environment)
        except AccelerateError as e:
            logger.warning("unreadable measurements %s: %s", path, e)
    if not environment:
        try:
            environment = dict(accel_bench.environment(hardware))
        except Exception as e:  # the environment is a courtesy: never let it fail the job
            environment = {"error": f"{type(e).__name__}: {e}"}
    return measurements, environment


def _apply_thread_count() -> None:
    """Honour ``OMP_NUM_THREADS`` from the job's env: torch read it before the fork, so set it again."""
    raw = os.environ.get("OMP_NUM_THREADS")
    if raw and raw.isdigit() and int(raw) > 0:
        import torch

        if torch.get_num_threads() != int(raw):
            torch.set_num_threads(int(raw))


def _failed(
    spec: JobSpec,
    started: float,
    error_class: str,
    error_type: str,
    message: str,
    *,
    template: TemplateRef | None = None,
) -> JobResult:
    return _result(
        spec,
        started,
        status=STATUS_FAILED,
        error_class=error_class,
        error_type=error_type,
        error_message=_one_line(message),
        template=template,
    )


def _result(
    spec: JobSpec,
    started: float,
    *,
    status: str,
    template: TemplateRef | None = None,
    source: str | None = None,
    **fields_: Any,
) -> JobResult:
    return JobResult.for_spec(
        spec,
        status=status,
        started_at=started,
        finished_at=time.time(),
        template_name=template.name if template else None,
        template_sha=template.sha if template else None,
        generated_source=source,
        **fields_,
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."

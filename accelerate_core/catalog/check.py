"""``models check``: build and run every architecture in isolation, and classify every outcome.

:func:`check_one` is the per-type job (run in a forked child): build the tiny model, run one forward
pass, :func:`~accelerate_core.catalog.outputs.check_outputs`, and a short fixed-length ``generate``
where :func:`~accelerate_core.catalog.api.generate_supported` says so. :func:`sweep` runs it for many
types, isolated; :func:`count_outcomes` counts outcomes per modality and per failure class.

A selected model may also be a checkpoint directory or a cached hub id (``accelerate_core.selection``): its
row is named by its label, says its ``source``, and checks the checkpoint's own weights and config; a hub id
not in the cache is a ``skipped`` row (``not-in-cache``, with the command that fetches it).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import ERR_BUILD, ERR_FORWARD, ERR_MISSING_DEPENDENCY, ERR_TEST_FAILED, SOURCE_TYPE

if TYPE_CHECKING:
    from accelerate_core.catalog.api import BuiltModel
    from accelerate_core.contracts import ModelSource
    from accelerate_core.selection import Target

GENERATE_TOKENS = 4
OPTIONAL_DEPS = ("scipy", "PIL")
"""Small optional libraries transformers imports for some architectures (recorded per type when used)."""
STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_SKIPPED = "skipped"
_REQUIRES = re.compile(r"requires the (\w[\w.-]*) librar", re.IGNORECASE)
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_MISSING_ARG = re.compile(r"forward\(\) missing \d+ required positional argument")
REASON_NO_FORWARD = "no-forward"
REASON_SPECIAL_INPUTS = "needs-special-inputs"


def missing_library(message: str) -> str | None:
    """The library an ImportError-like message says is missing, or None."""
    m = _REQUIRES.search(message) or _NO_MODULE.search(message)
    return m.group(1).split(".")[0].lower() if m else None


def _error(phase: str, e: BaseException) -> dict[str, Any]:
    message = f"{e}".strip().splitlines()
    text = " ".join(message)[:1000]
    lib = missing_library(text)
    if lib or isinstance(e, ImportError):
        cls = ERR_MISSING_DEPENDENCY
    elif isinstance(e, AssertionError) and phase == "check":
        cls = ERR_TEST_FAILED
    elif isinstance(e, NotImplementedError) and 'missing the required "forward"' in text:
        cls = REASON_NO_FORWARD
    elif isinstance(e, TypeError) and _MISSING_ARG.search(text):
        cls = REASON_SPECIAL_INPUTS
    else:
        cls = ERR_BUILD if phase == "build" else ERR_FORWARD
    out = {"ok": False, "phase": phase, "error_class": cls, "error_type": type(e).__name__, "error_message": text}
    if lib:
        out["needs"] = [lib]
    return out


def _generate(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    from accelerate_core.catalog.api import generate_supported

    if not generate_supported(model) or "input_ids" not in inputs:
        return {"supported": False}
    try:
        with torch.no_grad():
            out = model.generate(
                inputs["input_ids"],
                max_new_tokens=GENERATE_TOKENS,
                min_new_tokens=GENERATE_TOKENS,
                do_sample=False,
            )
        seq = out if isinstance(out, torch.Tensor) else out.sequences
        return {"supported": True, "ok": True, "shape": list(seq.shape)}
    except Exception as e:
        return {"supported": True, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}


def _build(model_type: str, checkpoint: str | None) -> BuiltModel:
    """The tiny model of ``model_type``, or the checkpoint's (its weights and config), with catalog inputs."""
    from accelerate_core.catalog import api

    if checkpoint is None:
        return api.build(model_type)
    from accelerate_core.catalog.describe import describe
    from accelerate_core.dispatch import build_model

    model = build_model(model_type, checkpoint=checkpoint)
    return api.BuiltModel(model, api.make_inputs(model_type, model), describe(model_type), model.config.to_dict())


def check_one(model_type: str, checkpoint: str | None = None) -> dict[str, Any]:
    """Build, run and check one type (or a checkpoint of it); a JSON-able outcome (never raises for a model's
    failure)."""
    import torch

    from accelerate_core.catalog.components import watch
    from accelerate_core.catalog.outputs import check_outputs
    from accelerate_core.catalog.overrides import override_for

    loaded_before = {m for m in OPTIONAL_DEPS if m in sys.modules}
    t0 = time.perf_counter()
    try:
        built = _build(model_type, checkpoint)
    except Exception as e:
        return _error("build", e)
    t1 = time.perf_counter()
    params = sum(p.numel() for p in built.model.parameters())
    try:
        with torch.no_grad(), watch(built.model) as ran:
            outputs = built.model(**built.inputs)
    except Exception as e:
        return {**_error("forward", e), "param_count": params}
    t2 = time.perf_counter()
    try:
        summary = check_outputs(outputs, 1, allow_nonfinite=override_for(model_type).allow_nonfinite)
    except AssertionError as e:
        return {**_error("check", e), "param_count": params}
    gen = _generate(built.model, built.inputs)
    return {
        "ok": True,
        "optional_deps_used": sorted(m for m in OPTIONAL_DEPS if m in sys.modules and m not in loaded_before),
        "param_count": params,
        "build_s": round(t1 - t0, 4),
        "forward_s": round(t2 - t1, 4),
        "output": summary,
        "input_names": sorted(built.inputs),
        "components_run": sorted(ran),
        "generate": gen,
    }


def check_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Fork-server entry: ``check_one(payload["model_type"], payload.get("checkpoint"))``."""
    checkpoint = payload.get("checkpoint")
    return check_one(str(payload["model_type"]), None if checkpoint is None else str(checkpoint))


def _static(target: Target[Any]) -> dict[str, Any]:
    """A model's catalog facts, named by its label; a checkpoint's row also names its source."""
    from accelerate_core.catalog.describe import describe
    from accelerate_core.sources import describe_source

    source, skip = target.source, target.skip()
    row: dict[str, Any] = {"model_type": source.label}
    if source.kind != SOURCE_TYPE:
        row["source"] = describe_source(source)
    if target.entry is None:
        assert skip is not None  # a target without a catalog entry cannot be built here
        unknown: dict[str, Any] = {"modality": "unknown", "family": "", "model_class": None, "runnable": False}
        return {
            **row,
            **unknown,
            "reason_class": skip.reason_class,
            "reason": skip.reason,
            "needs": [],
            "tested_through": None,
        }
    info = describe(target.entry.model_type)
    runnable = skip is None
    return {
        **row,
        "modality": info.modality,
        "family": info.family,
        "model_class": info.model_class,
        "runnable": runnable,
        "reason_class": info.reason_class if source.kind == SOURCE_TYPE or not runnable else None,
        "reason": info.reason if source.kind == SOURCE_TYPE or not runnable else None,
        "needs": list(info.needs),
        "tested_through": info.tested_through if source.kind == SOURCE_TYPE else None,
    }


def outcome(static: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    """Merge a type's static facts and its run result into one classified outcome row."""
    row = dict(static)
    if result is None:
        row["status"] = STATUS_SKIPPED
        return row
    row.update({k: v for k, v in result.items() if k not in ("needs", "ok")})
    row["needs"] = sorted(set(static["needs"]) | set(result.get("needs", [])))
    row["status"] = STATUS_PASS if result.get("ok") else STATUS_FAIL
    if not result.get("ok"):
        row["reason_class"] = result.get("error_class")
        row["reason"] = f"{result.get('error_type')}: {result.get('error_message')}"[:500]
    return row


def sweep(
    targets: Sequence[Target[Any]], run: Callable[[Sequence[ModelSource]], Iterator[tuple[str, dict[str, Any]]]]
) -> Iterator[dict[str, Any]]:
    """Yield one outcome per model: skipped ones from the catalog, the rest through ``run`` (isolated)."""
    statics = {t.source.label: _static(t) for t in targets}
    for t in targets:
        if not statics[t.source.label]["runnable"]:
            yield outcome(statics[t.source.label], None)
    runnable = [t.source for t in targets if statics[t.source.label]["runnable"]]
    for label, result in run(runnable):
        yield outcome(statics[label], result)


def count_outcomes(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts: total, passed, per status, per modality (pass/total), per failure class, per needed library."""
    by_modality: dict[str, dict[str, int]] = {}
    for r in rows:
        m = by_modality.setdefault(r["modality"], {"pass": 0, "total": 0})
        m["total"] += 1
        m["pass"] += r["status"] == STATUS_PASS
    failures = Counter(r["reason_class"] for r in rows if r["status"] != STATUS_PASS)
    needs = Counter(lib for r in rows for lib in r.get("needs", []))
    used = Counter(lib for r in rows for lib in r.get("optional_deps_used", []))
    gen = Counter(
        "ok" if r.get("generate", {}).get("ok") else "failed" for r in rows if r.get("generate", {}).get("supported")
    )
    return {
        "total": len(rows),
        "passed": sum(r["status"] == STATUS_PASS for r in rows),
        "passed_through_parent": sum(r["status"] == STATUS_PASS and bool(r.get("tested_through")) for r in rows),
        "status": dict(Counter(r["status"] for r in rows)),
        "by_modality": dict(sorted(by_modality.items())),
        "by_reason_class": dict(failures.most_common()),
        "needs": dict(needs.most_common()),
        "optional_deps_used": dict(used.most_common()),
        "generate": dict(gen),
    }


def run_check(
    targets: Sequence[Target[Any]],
    *,
    jobs: int = 2,
    timeout_s: float = 60.0,
    mem_cap_mb: float = 6144.0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Check ``targets``, each in its own child of the fork server, ``jobs`` at a time; one row per model, sorted.

    Args:
        targets: The models to check (``accelerate_core.selection.select_models``).
        jobs: Children at once.
        timeout_s: Hard wall-clock limit per type.
        mem_cap_mb: Resident memory cap per type.
        on_row: Called with each row as it completes (progress).
    """
    import os
    import warnings

    from accelerate_core.catalog import components
    from accelerate_core.catalog.runners import fork_server

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    run = fork_server(jobs=max(1, jobs), timeout_s=timeout_s, mem_cap_mb=mem_cap_mb)
    rows = []
    for row in sweep(targets, run):
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return sorted(components.resolve(rows), key=lambda r: r["model_type"])

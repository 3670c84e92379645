"""``models check``: build and run every architecture in isolation, and classify every outcome.

:func:`check_one` is the per-type job (run in a forked child): build the tiny model, run one forward
pass, :func:`~accelerate_core.catalog.outputs.check_outputs`, and a short fixed-length ``generate``
where :func:`~accelerate_core.catalog.api.generate_supported` says so. :func:`sweep` runs it for many
types, isolated; :func:`count_outcomes` counts outcomes per modality and per failure class.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from accelerate_core.constants import ERR_BUILD, ERR_FORWARD, ERR_MISSING_DEPENDENCY, ERR_TEST_FAILED

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


def check_one(model_type: str) -> dict[str, Any]:
    """Build, run and check one type; a JSON-able outcome (never raises for a model's failure)."""
    import torch

    from accelerate_core.catalog import api
    from accelerate_core.catalog.components import watch
    from accelerate_core.catalog.outputs import check_outputs
    from accelerate_core.catalog.overrides import override_for

    loaded_before = {m for m in OPTIONAL_DEPS if m in sys.modules}
    t0 = time.perf_counter()
    try:
        built = api.build(model_type)
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
    """Fork-server entry: ``check_one(payload["model_type"])``."""
    return check_one(str(payload["model_type"]))


def _static(model_type: str) -> dict[str, Any]:
    from accelerate_core.catalog.describe import describe

    info = describe(model_type)
    return {
        "model_type": model_type,
        "modality": info.modality,
        "family": info.family,
        "model_class": info.model_class,
        "runnable": info.runnable,
        "reason_class": info.reason_class,
        "reason": info.reason,
        "needs": list(info.needs),
        "tested_through": info.tested_through,
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
    types: Sequence[str], run: Callable[[Sequence[str]], Iterator[tuple[str, dict[str, Any]]]]
) -> Iterator[dict[str, Any]]:
    """Yield one outcome per type: skipped ones from the catalog, the rest through ``run`` (isolated)."""
    statics = {t: _static(t) for t in types}
    for t in types:
        if not statics[t]["runnable"]:
            yield outcome(statics[t], None)
    runnable = [t for t in types if statics[t]["runnable"]]
    for model_type, result in run(runnable):
        yield outcome(statics[model_type], result)


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
    types: Sequence[str],
    *,
    jobs: int = 2,
    timeout_s: float = 60.0,
    mem_cap_mb: float = 6144.0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Check ``types``, each in its own child of the fork server, ``jobs`` at a time; one row per type, sorted.

    Args:
        types: Model types to check.
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
    for row in sweep(types, run):
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return sorted(components.resolve(rows), key=lambda r: r["model_type"])

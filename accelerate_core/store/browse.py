"""Reads for browsing results: a run's results page by page, a model across runs, hardware side by side.

These back the results service (its JSON API and pages). Like :mod:`accelerate_core.store.reads`, each
function runs a few set-wise queries on the connection it is given and returns plain data; none writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from statistics import median
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import TERMINAL_STATUSES
from accelerate_core.errors import ConfigError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

PAGE_MAX = 500
"""Most results one page of :func:`run_results` returns."""
HISTORY_RUNS_MAX = 200
"""Most runs :func:`model_history` goes back."""
MESSAGE_CHARS = 300
"""Error messages are cut to this many characters in result listings."""
VERSION_KEYS = ("torch", "transformers")
"""Library versions (keys of a job's recorded environment) a model's history follows."""

_TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES)) + ")"
_RESULT_COLUMNS = (
    "job_key", "model_type", "hardware", "kind", "status", "error_class", "error_type", "error_message",
    "attempts", "duration_s", "started_at", "finished_at", "worker_id", "host", "device_name", "template_sha",
)  # fmt: skip


def _in_list(column: str, name: str, values: Sequence[str] | None, params: dict[str, Any]) -> str:
    if values is None:
        return ""
    params[name] = list(values)
    return f" AND {column} IN (SELECT unnest(${name}))"


def run_results(
    conn: DuckDBPyConnection,
    run_id: str,
    *,
    statuses: Sequence[str] | None = None,
    hardware: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of a run's job results (model order), each with its latency per shape.

    A filter that is None is not applied; an empty one matches nothing.

    Raises:
        ConfigError: ``limit`` outside 1..PAGE_MAX or a negative ``offset``.
    """
    if not 1 <= limit <= PAGE_MAX or offset < 0:
        raise ConfigError(f"limit={limit} offset={offset} invalid: need 1 <= limit <= {PAGE_MAX} and offset >= 0")
    params: dict[str, Any] = {"run": run_id, "limit": limit, "offset": offset}
    where = "run_id = $run" + _in_list("status", "statuses", statuses, params)
    where += _in_list("hardware", "hardware", hardware, params) + _in_list("model_type", "models", models, params)
    rows = conn.execute(
        f"""SELECT {", ".join(_RESULT_COLUMNS)}, count(*) OVER () FROM jobs WHERE {where}
            ORDER BY model_type, hardware, kind LIMIT $limit OFFSET $offset""",
        params,
    ).fetchall()
    items = [dict(zip(_RESULT_COLUMNS, row, strict=False)) for row in rows]
    shapes = _latency_shapes(conn, [i["job_key"] for i in items])
    for item in items:
        item["error_message"] = _cut(item["error_message"])
        item["shapes"] = shapes.get(item["job_key"], [])
    total = int(rows[0][-1]) if rows else _count(conn, where, params)
    return {"run_id": run_id, "total": total, "limit": limit, "offset": offset, "items": items}


def _count(conn: DuckDBPyConnection, where: str, params: dict[str, Any]) -> int:
    counted = {k: v for k, v in params.items() if k not in ("limit", "offset")}
    row = conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", counted).fetchone()
    return int(row[0]) if row else 0


def _cut(message: str | None) -> str | None:
    if message is None or len(message) <= MESSAGE_CHARS:
        return message
    return message[: MESSAGE_CHARS - 3] + "..."


def _latency_shapes(conn: DuckDBPyConnection, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Latency p50/p90/n per shape of the given jobs, smallest shape first."""
    if not keys:
        return {}
    rows = conn.execute(
        """SELECT job_key, batch_size, seq_len, p50, p90, n FROM measurements
           WHERE metric = 'latency' AND job_key IN (SELECT unnest($keys))
           ORDER BY job_key, batch_size, seq_len""",
        {"keys": list(keys)},
    ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for key, batch, seq, p50, p90, n in rows:
        out.setdefault(key, []).append({"batch_size": batch, "seq_len": seq, "p50_s": p50, "p90_s": p90, "n": n})
    return out


def run_models(conn: DuckDBPyConnection, run_id: str) -> list[str]:
    """The model types of a run, sorted."""
    rows = conn.execute("SELECT DISTINCT model_type FROM jobs WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()
    return [str(r[0]) for r in rows]


def model_history(
    conn: DuckDBPyConnection, model_type: str, *, hardware: Sequence[str] | None = None, runs: int = 50
) -> list[dict[str, Any]]:
    """A model's finished results in its latest ``runs`` runs, oldest first: one point per run and hardware kind.

    Each point has the run, its status, device name, library versions (:data:`VERSION_KEYS`), template
    sha, latency per shape, and ``changes``: what differs from the previous point on the same hardware.

    Raises:
        ConfigError: ``runs`` outside 1..HISTORY_RUNS_MAX.
    """
    if not 1 <= runs <= HISTORY_RUNS_MAX:
        raise ConfigError(f"runs={runs} invalid: give 1..{HISTORY_RUNS_MAX}")
    params: dict[str, Any] = {"model": model_type, "runs": runs}
    hw = _in_list("j.hardware", "hardware", hardware, params)
    rows = conn.execute(
        f"""WITH latest AS (
                SELECT r.run_id, r.phase, r.created_at FROM runs r
                WHERE r.run_id IN (SELECT run_id FROM jobs j WHERE j.model_type = $model{hw}
                                   AND j.status IN {_TERMINAL_SQL})
                ORDER BY r.created_at DESC, r.run_id DESC LIMIT $runs)
            SELECT l.run_id, l.phase, l.created_at, j.job_key, j.hardware, j.status, j.error_class, j.device_name,
                   j.template_sha, j.duration_s, j.environment
            FROM latest l JOIN jobs j ON j.run_id = l.run_id AND j.model_type = $model{hw}
            WHERE j.status IN {_TERMINAL_SQL}
            ORDER BY l.created_at, l.run_id, j.hardware, j.kind""",
        params,
    ).fetchall()
    shapes = _latency_shapes(conn, [r[3] for r in rows])
    points = [_point(row, shapes.get(row[3], [])) for row in rows]
    _mark_changes(points)
    return points


def _point(row: tuple[Any, ...], shapes: list[dict[str, Any]]) -> dict[str, Any]:
    run_id, phase, created, key, hw, status, error_class, device, sha, duration, env = row
    environment = json.loads(env) if env else {}
    versions = {k: _text(environment.get(k)) for k in VERSION_KEYS}
    return {
        "run_id": run_id,
        "phase": phase,
        "created_at": created,
        "job_key": key,
        "hardware": hw,
        "status": status,
        "error_class": error_class,
        "device_name": device or _text(environment.get("device_name")),
        "versions": versions,
        "template_sha": sha,
        "duration_s": duration,
        "shapes": shapes,
        "p50_s": shapes[0]["p50_s"] if shapes else None,
    }


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _mark_changes(points: list[dict[str, Any]]) -> None:
    """Set each point's ``changes``: device, template or versions that differ from the last known on its hardware.

    A value a point does not have (a job that failed before recording its environment) changes nothing.
    """
    known: dict[tuple[str, str], Any] = {}
    for p in points:
        p["changes"] = []
        facts = {"device": p["device_name"], "template": p["template_sha"], **p["versions"]}
        for what, value in facts.items():
            if value is None:
                continue
            before = known.get((p["hardware"], what))
            if before is not None and before != value:
                p["changes"].append({"what": what, "from": before, "to": value})
            known[(p["hardware"], what)] = value


def hardware_matrix(conn: DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """Every model of a run with every hardware kind side by side: status, error class, latency per shape."""
    rows = conn.execute(
        """SELECT job_key, model_type, hardware, status, error_class, device_name FROM jobs
           WHERE run_id = ? ORDER BY model_type, hardware, kind""",
        [run_id],
    ).fetchall()
    shapes = _latency_shapes(conn, [r[0] for r in rows])
    models: dict[str, dict[str, Any]] = {}
    kinds: set[str] = set()
    for key, model, hw, status, error_class, device in rows:
        kinds.add(hw)
        cells = models.setdefault(model, {})
        cells[hw] = {"status": status, "error_class": error_class, "device_name": device, "shapes": shapes.get(key, [])}
        cells[hw]["p50_s"] = cells[hw]["shapes"][0]["p50_s"] if cells[hw]["shapes"] else None
    hardware = sorted(kinds, key=lambda h: (h != "cpu", h))
    return {
        "run_id": run_id,
        "hardware": hardware,
        "models": [{"model_type": m, "cells": c} for m, c in models.items()],
    }


def compare_hardware(matrix: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """Hardware ``b`` against ``a`` in one run (from :func:`hardware_matrix`): per model, the speed-up per shape.

    ``speedup`` is ``a``'s p50 / ``b``'s p50 (above 1: ``b`` is faster), per shared shape and as the median.

    Raises:
        ConfigError: ``a`` or ``b`` did not run in that run, or they are the same.
    """
    known = matrix["hardware"]
    if a == b or a not in known or b not in known:
        raise ConfigError(f"compare two different hardware kinds of run {matrix['run_id']}: it ran {known}")
    models, ratios = [], []
    for m in matrix["models"]:
        ca, cb = m["cells"].get(a), m["cells"].get(b)
        if ca is None or cb is None:
            continue
        shapes = _shared_shapes(ca["shapes"], cb["shapes"])
        found = [s["speedup"] for s in shapes if s["speedup"] is not None]
        speedup = float(median(found)) if found else None
        if speedup is not None:
            ratios.append(speedup)
        models.append({"model_type": m["model_type"], a: _brief(ca), b: _brief(cb), "shapes": shapes,
                       "speedup": speedup})  # fmt: skip
    overall = float(median(ratios)) if ratios else None
    return {"run_id": matrix["run_id"], "a": a, "b": b, "models": models, "median_speedup": overall,
            "compared": len(ratios)}  # fmt: skip


def _brief(cell: dict[str, Any]) -> dict[str, Any]:
    return {k: cell[k] for k in ("status", "error_class", "device_name", "p50_s")}


def _shared_shapes(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_shape = {(s["batch_size"], s["seq_len"]): s["p50_s"] for s in b}
    out = []
    for s in a:
        shape = (s["batch_size"], s["seq_len"])
        if shape not in by_shape:
            continue
        pa, pb = s["p50_s"], by_shape[shape]
        ratio = pa / pb if pa and pb else None
        out.append({"batch_size": shape[0], "seq_len": shape[1], "a_p50_s": pa, "b_p50_s": pb, "speedup": ratio})
    return out


def job_counts(conn: DuckDBPyConnection, *, latest: int, unfinished_max: int) -> dict[str, Any]:
    """Jobs by status and hardware of the ``latest`` runs and of up to ``unfinished_max`` unfinished runs.

    Returns ``{"runs": {run_id: run status}, "jobs": [(run_id, hardware, status, count)],
    "runs_by_status": {run status: count}}`` (the last over every run).
    """
    rows = conn.execute(
        """WITH picked AS (
               (SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT $latest)
               UNION
               (SELECT run_id FROM runs WHERE status NOT IN ('complete', 'interrupted')
                ORDER BY created_at DESC, run_id DESC LIMIT $unfinished))
           SELECT r.run_id, r.status, j.hardware, j.status, count(j.job_key)
           FROM runs r LEFT JOIN jobs j USING (run_id)
           WHERE r.run_id IN (SELECT run_id FROM picked) GROUP BY ALL ORDER BY ALL""",
        {"latest": latest, "unfinished": unfinished_max},
    ).fetchall()
    runs = {str(r): str(s) for r, s, *_ in rows}
    jobs = [(str(r), str(h), str(s), int(n)) for r, _, h, s, n in rows if n]
    by_status = {str(s): int(n) for s, n in conn.execute("SELECT status, count(*) FROM runs GROUP BY ALL").fetchall()}
    return {"runs": runs, "jobs": jobs, "runs_by_status": by_status}

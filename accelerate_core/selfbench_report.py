"""The ``accel selfbench`` report: Markdown with the original benchmark's sections, plus the JSON.

Sections, in order: System Information, Module Loading Performance, Basic Operations Performance,
Parallel Loading Performance, Summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECTIONS: tuple[str, ...] = (
    "System Information",
    "Module Loading Performance",
    "Basic Operations Performance",
    "Parallel Loading Performance",
    "Summary",
)
"""The report's section titles, in order (the original package's)."""

MARKDOWN_NAME = "selfbench.md"
JSON_NAME = "selfbench.json"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _system(results: dict[str, Any]) -> list[str]:
    sysinfo = results["system"]
    rows = [
        ("Date (UTC)", sysinfo["date_utc"]),
        ("Host", sysinfo["host"]),
        ("Platform", sysinfo["platform"]),
        ("Python", f"{sysinfo['python']} ({sysinfo['executable']})"),
        ("CPU", f"{sysinfo['cpu']} ({sysinfo['cores']} cores, {sysinfo['threads']} threads)"),
        ("Memory", f"{sysinfo['memory_mb']} MiB"),
        ("Hardware kinds", ", ".join(sysinfo["hardware"])),
        ("Load average", ", ".join(f"{x:.2f}" for x in sysinfo["load_average"] or [])),
        ("accelerate_core", sysinfo["accelerate_core"]),
    ]
    rows += [(name, version or "not installed") for name, version in sysinfo["versions"].items()]
    return ["| Item | Value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows]]


def _modules(results: dict[str, Any]) -> list[str]:
    loading = results["module_loading"]
    bare = loading["bare"]["wall"]
    lines = [
        f"Each module imported in a fresh interpreter, {bare['n']} times, interleaved with a bare interpreter "
        f"(`python -c pass`: median wall {_ms(bare['median_ms'])} ms). *Import* is `perf_counter` around the "
        "`import` inside the child; *over bare* is the child's wall time minus the bare interpreter's run just "
        "before it (median of the paired differences; and minimum minus minimum, the quiet-machine figure).",
        "",
        "| Module | Import median (ms) | p25-p75 (ms) | min-max (ms) | Over bare, wall: median / min (ms) | Heavy |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, m in loading["modules"].items():
        imp = m["import"]
        heavy = ", ".join(m["heavy"]) or "none"
        lines.append(
            f"| `{name}` | {_ms(imp['median_ms'])} | {_ms(imp['p25_ms'])}-{_ms(imp['p75_ms'])} | "
            f"{_ms(imp['min_ms'])}-{_ms(imp['max_ms'])} | {_ms(m['over_bare_ms'])} / {_ms(m['over_bare_min_ms'])} | "
            f"{heavy} |"
        )
    return lines


def _operations(results: dict[str, Any]) -> list[str]:
    lines = [
        "Warm: the access repeated in this process (the name is cached after its first access). "
        "Cold: the first access in a fresh interpreter, which imports the submodule.",
        "",
        "| Operation | Name | Warm (ns/access) | Warm (accesses/s) | Cold first access, median (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for label, op in results["basic_operations"].items():
        lines.append(
            f"| {label} | `{op['name']}` | {op['warm_ns']:.1f} | {op['warm_ops_per_s']:,.0f} | "
            f"{_ms(op['cold']['median_ms'])} |"
        )
    return lines


def _parallel(results: dict[str, Any]) -> list[str]:
    lines = [
        "Threads start together behind a barrier in a fresh interpreter; each attempt imports "
        "`accelerate_core`, `.config`, `.backends` and `.dispatch` in a per-thread order and checks the lazy names.",
        "",
        "| Threads x iterations | Rounds | Attempts | Successes | Success rate | Round time, median (ms) | Errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in results["parallel_loading"]:
        errors = "; ".join(p["errors"]) or "none"
        lines.append(
            f"| {p['threads']} x {p['iterations']} | {p['rounds']} | {p['attempts']} | {p['successes']} | "
            f"{p['success_rate']:.1%} | {_ms(p['seconds']['median_ms'])} | {errors} |"
        )
    return lines


def _summary(results: dict[str, Any]) -> list[str]:
    s = results["summary"]
    rates = ", ".join(f"{k}: {v:.1%}" for k, v in s["parallel_success_rates"].items())
    checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["checks"].items())
    speedup = s["speedup_vs_original"]
    return [
        f"- `import accelerate_core`: **{_ms(s['import_ms'])} ms** median in a fresh interpreter "
        f"(target < {s['target_import_ms']} ms; the original reported {s['original_import_ms']} ms"
        + (f", {speedup:.1f}x faster" if speedup else "")
        + f"); over a bare interpreter's wall time: {_ms(s['import_over_bare_wall_ms'])} ms median of paired runs, "
        f"{_ms(s['import_over_bare_min_wall_ms'])} ms min to min (whole-process figures, noisier).",
        f"- Heavy modules imported by the core: {', '.join(s['heavy_modules_imported']) or 'none'}.",
        f"- Parallel loading success: {rates}.",
        f"- Checks: {checks}. Overall: **{'PASS' if s['passed'] else 'FAIL'}** "
        f"(selfbench took {results['duration_s']:.1f} s).",
    ]


def render_markdown(results: dict[str, Any]) -> str:
    """The Markdown report of :func:`accelerate_core.selfbench.run_selfbench` results."""
    parts = ["# accelerate_core self-benchmark", ""]
    for title, body in zip(SECTIONS, (_system, _modules, _operations, _parallel, _summary), strict=True):
        parts += [f"## {title}", "", *body(results), ""]
    return "\n".join(parts)


def write_selfbench(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``selfbench.md`` and ``selfbench.json`` into ``out_dir`` (created); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / MARKDOWN_NAME
    js = out_dir / JSON_NAME
    md.write_text(render_markdown(results), encoding="utf-8")
    js.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"md": md, "json": js}

"""The aggregate report of a run: model, statistics and Markdown / HTML / JSON renderings.

``build_report(store, run_id, baseline_run_id=None) -> Report`` reads the run (and its baseline: by
default the previous run of the same phase) from a :class:`~accelerate_core.store.ResultsStore`;
``write_report(report, out_dir, formats)`` writes ``report.md``, ``report.html`` and ``report.json``.
Neither needs torch.
"""

from __future__ import annotations

from accelerate_core.report.build import build_report
from accelerate_core.report.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from accelerate_core.report.model import Report
from accelerate_core.report.write import (
    REPORT_FORMATS,
    parse_formats,
    render_json,
    render_report,
    write_documents,
    write_report,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_THRESHOLD",
    "REPORT_FORMATS",
    "Report",
    "build_report",
    "parse_formats",
    "render_json",
    "render_report",
    "write_documents",
    "write_report",
]

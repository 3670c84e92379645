"""The end of a run, the same for both executors (the local one and the fleet's results writer).

When every planned job of a run has a terminal row, the run is marked ``complete`` and its aggregate
report is written to ``<reports_dir>/<run id>``, compared with the previous run of the same phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.constants import RUN_COMPLETE

if TYPE_CHECKING:
    from accelerate_core.store import ResultsStore

__all__ = ["finish_run"]


def finish_run(store: ResultsStore, run_id: str, reports_dir: Path, *, write_report: bool = True) -> dict[str, Path]:
    """Mark ``run_id`` complete and write its report (baseline: the previous run of its phase).

    Args:
        store: the results store, open read-write.
        run_id: a run whose every job has a terminal row.
        reports_dir: the report goes to ``reports_dir / run_id``.
        write_report: False marks the run only (tests and embedding that write no files).

    Returns:
        The report's files by format (``md``, ``html``, ``json``); empty without ``write_report``.
    """
    store.set_run_status(run_id, RUN_COMPLETE)
    if not write_report:
        return {}
    from accelerate_core.report import build_report
    from accelerate_core.report import write_report as write

    return write(build_report(store, run_id), Path(reports_dir) / run_id)

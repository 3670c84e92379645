"""Writing a report to disk in Markdown, HTML and JSON (each file written atomically)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from accelerate_core.errors import ConfigError
from accelerate_core.report.html import render_html
from accelerate_core.report.markdown import render_markdown
from accelerate_core.report.model import Report

REPORT_FORMATS = ("md", "html", "json")
"""Every format :func:`write_report` writes."""


def render_json(report: Report) -> str:
    """The report as compact JSON (the same model the other formats render)."""
    # No indent: json's C encoder only runs without one (about 5x faster on a full run).
    return json.dumps(report.to_dict(), sort_keys=True, default=str, allow_nan=False) + "\n"


_RENDERERS: dict[str, Callable[[Report], str]] = {"md": render_markdown, "html": render_html, "json": render_json}


def render_report(report: Report, fmt: str) -> str:
    """The report as the text of one format (``md``, ``html`` or ``json``).

    Raises:
        ConfigError: an unknown format.
    """
    return _RENDERERS[parse_formats(fmt)[0]](report)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"md,html"`` (or a sequence) -> validated formats, in the order given.

    Raises:
        ConfigError: an unknown format.
    """
    items = [f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    bad = [f for f in items if f not in REPORT_FORMATS]
    if bad or not items:
        raise ConfigError(f"report format(s) {bad or text!r} invalid: use a comma list of {', '.join(REPORT_FORMATS)}")
    return tuple(dict.fromkeys(items))


def write_report(report: Report, out_dir: Path, formats: Sequence[str] = REPORT_FORMATS) -> dict[str, Path]:
    """Write ``report.<fmt>`` files into ``out_dir``; return their paths by format."""
    return write_documents({fmt: render_report(report, fmt) for fmt in parse_formats(formats)}, out_dir)


def write_documents(documents: Mapping[str, str], out_dir: Path) -> dict[str, Path]:
    """Write rendered reports (text by format, e.g. read from the results service) as ``report.<fmt>`` files."""
    chosen = parse_formats(list(documents))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in chosen:
        target = out_dir / f"report.{fmt}"
        _atomic_write(target, documents[fmt])
        written[fmt] = target
    return written


def _atomic_write(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Writing one validated pytest file per architecture (what ``accel generate`` does).

The caller gives the selected models (``accelerate_core.selection.select_models``: model types, checkpoint
directories, hub ids in the local cache) and the latest template versions (``TemplateStore.list()``); no DuckDB
here. A model that cannot be built here is listed with its reason (the catalog's, or ``not-in-cache`` with the
command that fetches it), and a model whose context or rendering fails is reported, never written. A checkpoint's
file is named after its label (``test_my_bert.py``, ``test_org__name.py``) and loads its weights (``CHECKPOINT``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core.constants import SOURCE_TYPE
from accelerate_core.errors import AccelerateError, ConfigError
from accelerate_core.sources import describe_source
from templates_db.model import TemplateVersion, pick
from templates_db.render import generated_file_name, render_job

if TYPE_CHECKING:
    from accelerate_core.catalog.index import IndexEntry
    from accelerate_core.config import BenchConfig
    from accelerate_core.selection import Target

log = logging.getLogger(__name__)

__all__ = ["GenerateReport", "GeneratedFile", "generate_files"]


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """One written test file, the model source it tests and the template version it came from."""

    model_type: str
    path: str
    template: str
    version: int
    sha256: str
    source: str


@dataclass(slots=True)
class GenerateReport:
    """What ``generate_files`` wrote, skipped (not runnable) and failed to render."""

    out_dir: str
    hardware: str
    written: list[GeneratedFile] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, with counts."""
        return {
            "out_dir": self.out_dir,
            "hardware": self.hardware,
            "counts": {"written": len(self.written), "skipped": len(self.skipped), "failed": len(self.failed)},
            "written": [asdict(f) for f in self.written],
            "skipped": self.skipped,
            "failed": self.failed,
        }


def generate_files(
    targets: Sequence[Target[IndexEntry]],
    templates: Sequence[TemplateVersion],
    *,
    hardware: str,
    out_dir: Path,
    bench: BenchConfig | None = None,
    on_model: Callable[[str], None] | None = None,
) -> GenerateReport:
    """Render and write ``test_<label>.py`` into ``out_dir`` for every model that can be built here.

    Args:
        targets: the selected models (those that cannot be built here are reported as skipped).
        templates: the latest version of every template (the most specific one is picked per model).
        hardware: the hardware kind the files are generated for.
        out_dir: the folder to write into (created).
        bench: benchmark settings embedded in the files.
        on_model: called with each model's label once it is done (progress bars).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = GenerateReport(out_dir=str(out_dir), hardware=hardware)
    seen: dict[str, str] = {}
    for target in targets:
        label, skip = target.source.label, target.skip()
        if skip is not None or target.entry is None:
            reason = {"reason_class": skip.reason_class, "reason": skip.reason} if skip is not None else {}
            report.skipped.append({"model_type": label, "source": describe_source(target.source), **reason})
        else:
            file_name = generated_file_name(label)
            if file_name in seen:
                raise ConfigError(f"{label} and {seen[file_name]} both map to {file_name}: rename one")
            seen[file_name] = label
            _write_one(report, target.entry, target, templates, out_dir / file_name, bench)
        if on_model is not None:
            on_model(label)
    return report


def _write_one(
    report: GenerateReport,
    entry: IndexEntry,
    target: Target[IndexEntry],
    templates: Sequence[TemplateVersion],
    path: Path,
    bench: BenchConfig | None,
) -> None:
    """Render one model's file into ``path`` (a failure is reported, never written)."""
    from templates_db.context import job_context

    label, source = target.source.label, target.source
    try:
        version = pick(templates, entry.model_type, entry.modality, entry.family, report.hardware)
        context = job_context(entry.model_type, report.hardware, bench)
        if source.kind != SOURCE_TYPE:
            context["checkpoint"] = source.path
        text = render_job(version.to_ref(), context)
    except AccelerateError as e:
        log.warning("%s: not generated: %s", label, e)
        report.failed.append({"model_type": label, "error_type": type(e).__name__, "error": str(e)})
        return
    path.write_text(text, encoding="utf-8")
    report.written.append(
        GeneratedFile(label, str(path), version.name, version.version, version.sha256, describe_source(source))
    )

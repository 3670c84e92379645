"""Writing one validated pytest file per architecture (what ``accel generate`` does).

The caller gives the catalog entries (``accelerate_core.catalog.index.load_index()``) and the latest
template versions (``TemplateStore.list()``); no DuckDB here. Non-runnable architectures are listed with
the catalog's reason, and a model whose context or rendering fails is reported, never written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core.errors import AccelerateError, ConfigError
from templates_db.model import TemplateVersion, pick
from templates_db.render import generated_file_name, render_job

if TYPE_CHECKING:
    from accelerate_core.catalog.index import IndexEntry
    from accelerate_core.config import BenchConfig

log = logging.getLogger(__name__)

__all__ = ["GenerateReport", "GeneratedFile", "generate_files"]


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """One written test file and the template version it came from."""

    model_type: str
    path: str
    template: str
    version: int
    sha256: str


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
    entries: Sequence[IndexEntry],
    templates: Sequence[TemplateVersion],
    *,
    hardware: str,
    out_dir: Path,
    bench: BenchConfig | None = None,
    on_model: Callable[[str], None] | None = None,
) -> GenerateReport:
    """Render and write ``test_<type>.py`` into ``out_dir`` for every runnable entry.

    Args:
        entries: catalog entries to generate for (non-runnable ones are reported as skipped).
        templates: the latest version of every template (the most specific one is picked per model).
        hardware: the hardware kind the files are generated for.
        out_dir: the folder to write into (created).
        bench: benchmark settings embedded in the files.
        on_model: called with each model type once it is done (progress bars).
    """
    from templates_db.context import job_context

    out_dir.mkdir(parents=True, exist_ok=True)
    report = GenerateReport(out_dir=str(out_dir), hardware=hardware)
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.runnable:
            report.skipped.append(
                {"model_type": entry.model_type, "reason_class": entry.reason_class, "reason": entry.reason}
            )
        else:
            file_name = generated_file_name(entry.model_type)
            if file_name in seen:
                raise ConfigError(f"{entry.model_type} and {seen[file_name]} both map to {file_name}: rename one")
            seen[file_name] = entry.model_type
            try:
                version = pick(templates, entry.model_type, entry.modality, entry.family, hardware)
                source = render_job(version.to_ref(), job_context(entry.model_type, hardware, bench))
            except AccelerateError as e:
                log.warning("%s: not generated: %s", entry.model_type, e)
                report.failed.append({"model_type": entry.model_type, "error_type": type(e).__name__, "error": str(e)})
            else:
                path = out_dir / file_name
                path.write_text(source, encoding="utf-8")
                report.written.append(
                    GeneratedFile(entry.model_type, str(path), version.name, version.version, version.sha256)
                )
        if on_model is not None:
            on_model(entry.model_type)
    return report

"""The modality of each model in a report: given, from the run's params, or from the cached catalog index.

The report never needs torch: it reads only the catalog's cached JSON index (never builds it), and
when that is absent or the catalog is not importable, a model's modality is "unknown modality".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from accelerate_core.report.model import UNKNOWN_MODALITY

log = logging.getLogger(__name__)


def resolve_modalities(
    models: Iterable[str],
    from_params: Mapping[str, str],
    given: Mapping[str, str] | None = None,
    *,
    store_path: str | None = None,
    use_catalog: bool = True,
) -> dict[str, str]:
    """Map every model type to its modality: ``given`` first, then ``from_params`` (the run's), then the catalog."""
    known: dict[str, str] = {k: v for k, v in from_params.items() if v}
    if given:
        known.update(given)
    wanted = list(models)
    missing = [m for m in wanted if m not in known]
    if missing and use_catalog:
        catalog = _catalog_modalities(store_path)
        known.update({m: catalog[m] for m in missing if m in catalog})
    return {m: known.get(m, UNKNOWN_MODALITY) for m in wanted}


def _catalog_modalities(store_path: str | None) -> dict[str, str]:
    try:
        from accelerate_core.catalog.index import index_path, load_index
    except Exception as e:  # the catalog is optional for a report
        log.info("catalog not importable (%s): modalities unknown", e)
        return {}
    dirs: list[Path | None] = [None]
    if store_path and store_path != ":memory:":
        dirs.insert(0, Path(store_path).parent)
    for cache_dir in dirs:
        try:
            if not index_path(cache_dir).is_file():
                continue
            return {e.model_type: e.modality for e in load_index(cache_dir)}
        except Exception as e:  # a broken cache must not break the report
            log.info("catalog index in %s unreadable (%s): modalities unknown", cache_dir, e)
    return {}

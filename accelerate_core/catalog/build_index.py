"""``python -m accelerate_core.catalog.build_index --out FILE``: write the catalog index JSON.

Run in a subprocess by :func:`accelerate_core.catalog.index.load_index` (it imports transformers),
once per installed transformers version. The JSON holds one entry per model type plus, per type, the
tiny config dict and the main input name, so rendering templates needs no model build.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from accelerate_core.catalog.index import INDEX_FORMAT, fingerprint, transformers_version

logger = logging.getLogger(__name__)


def _extras(model_type: str, class_name: str | None) -> dict[str, Any]:
    from accelerate_core.catalog.classes import load_class
    from accelerate_core.catalog.describe import config_class, tiny_config_dict

    extra: dict[str, Any] = {"config": {}, "main_input_name": None}
    try:
        extra["config"] = tiny_config_dict(model_type)
    except Exception as e:  # recorded, not fatal: the sweep reports the build error
        extra["config_error"] = f"{type(e).__name__}: {e}"[:300]
    if class_name:
        try:
            model_cls: Any = load_class(class_name, config_class(model_type))
            extra["main_input_name"] = model_cls.main_input_name
        except Exception as e:
            extra["class_error"] = f"{type(e).__name__}: {e}"[:300]
    return extra


def build(types: list[str] | None = None) -> dict[str, Any]:
    """The index document: ``{"format", "transformers", "entries": [...], "extras": {...}}``."""
    from accelerate_core.catalog.describe import all_model_types, describe

    entries = []
    extras = {}
    for model_type in types or all_model_types():
        info = describe(model_type)
        entries.append(info.to_dict())
        extras[model_type] = _extras(model_type, info.model_class)
    return {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint(),
        "transformers": transformers_version(),
        "entries": entries,
        "extras": extras,
    }


def main(argv: list[str] | None = None) -> int:
    """Build the index and write it atomically to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    start = time.perf_counter()
    doc = build()
    tmp = args.out.with_suffix(f".{os.getpid()}.tmp")  # concurrent builders never share a temporary file
    tmp.write_text(json.dumps(doc, sort_keys=True))
    tmp.replace(args.out)
    print(f"{len(doc['entries'])} model types in {time.perf_counter() - start:.1f}s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

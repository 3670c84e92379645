"""Parameter counts of model types, tiny and full size: counted on the meta device, cached per type.

``accel models list --json`` gives each type's ``param_count``: of its tiny model, or with ``--size full`` of its
default config (BERT-base: 109,482,240). A count builds the model on the *meta* device (shapes only: no memory,
no init), which needs torch and transformers, so :func:`load_param_counts` counts the types its cache lacks in a
subprocess (``python -m accelerate_core.param_counts``) and keeps them next to the catalog index, in
``accel-data/params-<transformers version>-<size>.json``, tied to the catalog's fingerprint (its tiny configs and
class choices). A type that cannot be built has the count None.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate_core.catalog.index import fingerprint, index_path, transformers_version
from accelerate_core.constants import MODEL_SIZES, SIZE_FULL, SIZE_TINY
from accelerate_core.errors import ConfigError, ModelBuildError

__all__ = ["count_params", "load_param_counts"]


def count_params(model_type: str, size: str) -> int | None:
    """Parameters of ``model_type``'s ``size`` model (shared weights once); None when it cannot be built."""
    import contextlib
    import io

    from accelerate_core.catalog.describe import default_config_dict, tiny_config_dict
    from accelerate_core.full_size import on_meta

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # a model's own prints must not corrupt the JSON
            config = default_config_dict(model_type) if size == SIZE_FULL else tiny_config_dict(model_type)
            model = on_meta(model_type, config)
    except Exception:  # a model's own code may raise anything; a type without a count is None
        return None
    return int(sum(p.numel() for p in model.parameters()))


def cache_file(size: str, cache_dir: Path | None = None) -> Path:
    """Where the counts of ``size`` are cached for the installed transformers."""
    return index_path(cache_dir).with_name(f"params-{transformers_version()}-{size}.json")


def _read(path: Path) -> dict[str, int | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("fingerprint") == fingerprint() and isinstance(data.get("counts"), dict)
    return dict(data["counts"]) if ok else {}


def load_param_counts(types: Sequence[str], size: str, cache_dir: Path | None = None) -> dict[str, int | None]:
    """The parameter count of each of ``types`` at ``size``, counting (in a subprocess) those not cached yet.

    Raises:
        ConfigError: an unknown size.
        ModelBuildError: the counting subprocess failed.
    """
    if size not in MODEL_SIZES:
        raise ConfigError(f"--size {size!r} is unknown: use {' or '.join(MODEL_SIZES)}")
    path = cache_file(size, cache_dir)
    counts = _read(path)
    missing = [t for t in types if t not in counts]
    if missing:
        counts.update(_count_in_subprocess(missing, size))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint(), "counts": counts}, sort_keys=True))
        tmp.replace(path)
    return {t: counts.get(t) for t in types}


def _count_in_subprocess(types: Sequence[str], size: str) -> dict[str, int | None]:
    argv = [sys.executable, "-m", "accelerate_core.param_counts", "--size", size]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(argv, input="\n".join(types), capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ModelBuildError(f"counting {size} parameters failed (exit {done.returncode}): {tail[0]}")
    counts: dict[str, Any] = json.loads(done.stdout)
    return {t: counts.get(t) for t in types}


def main(argv: list[str] | None = None) -> int:
    """Count the parameters of the types on stdin (one a line); print ``{type: count}`` as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=MODEL_SIZES, default=SIZE_TINY)
    args = parser.parse_args(argv)
    types = [line.strip() for line in sys.stdin if line.strip()]
    print(json.dumps({t: count_params(t, args.size) for t in types}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Parameter counts of model types, tiny and full size: counted on the meta device, cached per type.

``accel models list --json`` gives each type's ``param_count``: of its tiny model, or with ``--size full`` of its
default config (BERT-base: 109,482,240). A count builds the model on the *meta* device (shapes only: no memory,
no init), which needs torch and transformers, so :func:`load_param_counts` counts the types its cache lacks in a
subprocess (``python -m accelerate_core.param_counts``) and keeps them next to the catalog index, in
``accel-data/params-<transformers version>-<size>.json``, tied to the catalog's fingerprint (its tiny configs and
class choices). Only the types asked for are counted; counts are saved as they arrive, so an interrupted first
listing keeps its work, and a caller can show progress. A type that cannot be built has the count None.

One subprocess, not one per core: most of a count is importing the type's modeling code, and a second process
imports torch, transformers and the shared modules again (210 vision types on 2 loaded cores: 24 s of CPU in one
process, 40 s in two, and slower in wall time too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Final

from accelerate_core.catalog.index import fingerprint, index_path, transformers_version
from accelerate_core.constants import MODEL_SIZES, SIZE_FULL, SIZE_TINY
from accelerate_core.errors import ConfigError, ModelBuildError

__all__ = ["count_params", "load_param_counts"]

Progress = Callable[[int, int], None]
"""``(types counted, types to count)``, called after each count."""

SAVE_EVERY: Final = 25
"""Counts between two saves of the cache while counting (a save rewrites the whole file)."""


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


def _write(path: Path, counts: dict[str, int | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint(), "counts": counts}, sort_keys=True))
    tmp.replace(path)


def load_param_counts(
    types: Sequence[str], size: str, cache_dir: Path | None = None, *, progress: Progress | None = None
) -> dict[str, int | None]:
    """The parameter count of each of ``types`` at ``size``, counting (in a subprocess) those not cached yet.

    Args:
        types: the model types to count (only these are counted).
        size: ``tiny`` or ``full``.
        cache_dir: the folder of the catalog index (default ``accel-data``).
        progress: called after each count with ``(counted, to count)``.

    Raises:
        ConfigError: an unknown size.
        ModelBuildError: the counting subprocess failed (what it counted before is kept).
    """
    if size not in MODEL_SIZES:
        raise ConfigError(f"--size {size!r} is unknown: use {' or '.join(MODEL_SIZES)}")
    path = cache_file(size, cache_dir)
    counts = _read(path)
    missing = [t for t in dict.fromkeys(types) if t not in counts]
    if missing:
        try:
            with closing(_count_in_subprocess(missing, size)) as found:
                for done, (model_type, count) in enumerate(found, 1):
                    counts[model_type] = count
                    if done % SAVE_EVERY == 0:
                        _write(path, counts)
                    if progress is not None:
                        progress(done, len(missing))
        finally:  # an interrupted or failed listing keeps what it counted
            _write(path, counts)
    return {t: counts.get(t) for t in types}


def _count_in_subprocess(types: Sequence[str], size: str) -> Generator[tuple[str, int | None], None, None]:
    """Each of ``types`` with its count, as the subprocess prints them (killed when the caller stops early)."""
    argv = [sys.executable, "-m", "accelerate_core.param_counts", "--size", size]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=env)  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write("\n".join(types))
            proc.stdin.close()
            for line in proc.stdout:
                found = _parse(line)
                if found is not None:
                    yield found
            if proc.wait() != 0:
                stderr.seek(0)
                tail = stderr.read().strip().splitlines()[-1:] or ["no output"]
                raise ModelBuildError(f"counting {size} parameters failed (exit {proc.returncode}): {tail[0]}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()


def _parse(line: str) -> tuple[str, int | None] | None:
    """A counter's ``[type, count]`` line; None for anything else it printed."""
    try:
        model_type, count = json.loads(line)
    except (ValueError, TypeError):  # not JSON, or not a pair
        return None
    ok = isinstance(model_type, str) and (count is None or (isinstance(count, int) and not isinstance(count, bool)))
    return (model_type, count) if ok else None


def main(argv: list[str] | None = None) -> int:
    """Count the parameters of the types on stdin (one a line); print ``[type, count]`` as a JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=MODEL_SIZES, default=SIZE_TINY)
    args = parser.parse_args(argv)
    types = [line.strip() for line in sys.stdin if line.strip()]
    for model_type in types:
        print(json.dumps([model_type, count_params(model_type, args.size)]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One writer per DuckDB file, across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun

_OPEN = """
import sys
from accelerate_core.errors import StoreLockedError
from accelerate_core.store import ResultsStore
try:
    ResultsStore.open(sys.argv[1], read_only=sys.argv[2] == "ro").close()
except StoreLockedError as e:
    print(e)
    sys.exit(3)
print("opened")
"""


def _open_elsewhere(path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _OPEN, str(path), mode], capture_output=True, text=True, timeout=60, check=False
    )


def test_second_process_gets_a_clear_error_naming_file_and_holder(tmp_path: Path) -> None:
    # Given this process holds the store read-write
    path = tmp_path / "results.duckdb"
    with ResultsStore.open(path) as writer:
        writer.record_run(SyntheticRun("r").plan())
        # When another process opens it, read-write or read-only
        for mode in ("rw", "ro"):
            proc = _open_elsewhere(path, mode)
            # Then it gets StoreLockedError (no traceback) naming the file and this process's PID
            assert proc.returncode == 3, proc.stderr
            assert str(path) in proc.stdout
            assert f"process {os.getpid()}" in proc.stdout
            assert "Traceback" not in proc.stderr
    # And once the writer is gone, the other process opens it
    proc = _open_elsewhere(path, "ro")
    assert proc.returncode == 0 and "opened" in proc.stdout

"""`accel templates add` collects a template's files in the job box: a hostile template leaks nothing.

Collecting imports the rendered files, so a template's module-level code runs at add time, on the
adder's machine. Through the real CLI (a subprocess with secrets in its environment): whether the
template is added or refused, its code saw none of the secrets and the setsid sleeper it started is gone.
"""

from __future__ import annotations

import ast
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import gone

ACCEL = Path(sys.executable).with_name("accel")
SMALL = "X = {{ config | pyrepr }}\n\n\ndef test_{{ model_type }}():\n    assert X == {{ config | pyrepr }}\n"
SECRET_NAMES = ("ACCEL_BROKER_URL", "ACCEL_FLOWER_PASSWORD", "SECRET_TOKEN")
HOSTILE = """\
import os, subprocess, sys
with open({marker!r}, "a") as _fh:
    _fh.write(repr([os.environ.get(n) for n in {names!r}]) + "\\n")
_sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
with open({pids!r}, "a") as _fh:
    _fh.write(str(_sleeper.pid) + "\\n")
"""


REFUSE = "if sys.argv:\n    raise RuntimeError('refuse me')\n"


@pytest.mark.parametrize(("verdict", "tail"), [("added", ""), ("refused", REFUSE)])
def test_a_hostile_template_reads_no_secret_and_leaves_no_process(tmp_path: Path, verdict: str, tail: str):
    marker, pids = tmp_path / "seen", tmp_path / "pids"
    template = tmp_path / "hostile.j2"
    template.write_text(HOSTILE.format(marker=str(marker), names=SECRET_NAMES, pids=str(pids)) + tail + SMALL)
    token = secrets.token_hex(16)
    env = {**os.environ, "ACCEL_TEMPLATES_DB": str(tmp_path / "templates.duckdb"), "SECRET_TOKEN": token,
           "ACCEL_BROKER_URL": f"redis://:{token}@127.0.0.1:6379/0", "ACCEL_FLOWER_PASSWORD": token}  # fmt: skip

    done = subprocess.run([str(ACCEL), "templates", "add", str(template), "--name", "hostile", "--scope", "default"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip

    if verdict == "added":
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("added hostile v1")
    else:
        assert done.returncode == 2, done.stderr
        assert "refuse me" in done.stderr and "Traceback" not in done.stderr
    seen = [ast.literal_eval(line) for line in marker.read_text().splitlines()]
    assert seen and all(values == [None, None, None] for values in seen)  # its code ran, and saw no secret
    sleepers = [int(p) for p in pids.read_text().split()]
    assert sleepers and all(gone(pid) for pid in sleepers)

"""Every usage mistake a user can make, through the real ``accel`` console script.

Each must end with exit 2 and exactly one line on stderr saying what was wrong and what to do: never a
traceback. The cases run concurrently in one fixture (each is a fresh interpreter, ~1 s) and are then
asserted one by one, so a failure names its case.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.cli import accel, seed_catalog_index


class Mistake(NamedTuple):
    args: tuple[str, ...]
    says: str
    """A fragment the one line must contain."""
    env: dict[str, str] = {}  # noqa: RUF012 - a NamedTuple default, never mutated


FILES = {
    "broken.toml": b"broker_url = [\n",
    "wrong-type.toml": b"concurrency = [1]\n",
    "latin1.toml": b"\xff\xfe = 1\n",
    "empty-models.txt": b"# nothing here\n",
}

MISTAKES: dict[str, Mistake] = {
    "unknown command": Mistake(("frobnicate",), "no such command 'frobnicate' (see `accel --help`)"),
    "typo in a command": Mistake(("stauts",), "Did you mean 'status'? (see `accel --help`)"),
    "unknown subcommand": Mistake(("templates", "lst"), "(see `accel templates --help`)"),
    "unknown option": Mistake(("worker", "-Z", "x"), "no such option: -Z (see `accel worker --help`)"),
    "unknown root option": Mistake(
        ("--verbose", "detect"), "no such option: --verbose (Possible options: --version) (see `accel --help`)"
    ),
    "missing argument": Mistake(("report",), "missing argument 'RUN' (see `accel report --help`)"),
    "option without its value": Mistake(("run", "--models"), "'--models' requires an argument (see `accel run"),
    "extra argument": Mistake(("status", "a", "b"), "unexpected extra argument"),
    "--jobs 0": Mistake(("run", "--phase", "p", "--jobs", "0"), "'--jobs'"),
    "not a number": Mistake(("flower", "--port", "abc"), "'--port'"),
    "not a number (argument)": Mistake(("templates", "diff", "default", "one", "2"), "'v1'"),
    "run without --phase": Mistake(("run", "--models", "bert"), "give --phase NAME"),
    "empty --models": Mistake(("run", "--phase", "p", "--models", ""), "names no model"),
    "--models @file with no model": Mistake(("run", "--phase", "p", "--models", "@empty-models.txt"), "no model"),
    "--models @file unreadable": Mistake(("run", "--phase", "p", "--models", "@absent.txt"), "cannot be read"),
    "--models unknown type": Mistake(("run", "--phase", "p", "--models", "nosuchmodel"), "accel models list"),
    "run --hardware unknown": Mistake(("run", "--phase", "p", "--hardware", "tpu"), "'tpu' is unknown"),
    "worker --hardware unknown": Mistake(("worker", "--hardware", "tpu"), "'tpu' is unknown"),
    "worker --devices bad": Mistake(("worker", "--devices", "x"), "--devices 'x' is invalid"),
    "worker -Q bad name": Mistake(("worker", "-Q", "hw.cpu,../x"), "--queues '../x' is not a valid name"),
    "worker -Q results": Mistake(("worker", "-Q", "results"), "is the writer's queue"),
    "worker -n bad name": Mistake(("worker", "-n", "cpu0"), "--hostname 'cpu0' is not a valid node name"),
    "worker -- own option": Mistake(("worker", "--", "-P", "solo"), "option '-P' after -- is set by accel worker"),
    "cancel without RUN": Mistake(("cancel",), "missing argument 'RUN' (see `accel cancel --help`)"),
    "cancel bad RUN": Mistake(("cancel", "../x"), "RUN '../x' is not a valid name"),
    "cancel without a broker": Mistake(("cancel", "r1"), "accel cancel ends a fleet run: set ACCEL_BROKER_URL"),
    "run --dry without a broker": Mistake(("run", "--dry"), "--dry sends a dry job to each live worker node"),
    "run --dry --resume": Mistake(("run", "--dry", "--resume", "r1"), "--dry starts a new run: drop --resume"),
    "workers --timeout 0": Mistake(("workers", "--timeout", "0"), "'--timeout'"),
    "status --watch --json": Mistake(("status", "--watch", "--json"), "--watch redraws the status for a person"),
    "bad broker URL": Mistake(("run", "--phase", "p"), "is not a Redis URL", {"ACCEL_BROKER_URL": "http://x"}),
    "bad number in env": Mistake(
        ("detect",), "ACCEL_CONCURRENCY='many' is not an integer", {"ACCEL_CONCURRENCY": "many"}
    ),
    "generate --out a file": Mistake(
        ("generate", "--models", "bert", "--out", "broken.toml"), "--out broken.toml cannot"
    ),
    "generate --out under /proc": Mistake(("generate", "--models", "bert", "--out", "/proc/x"), "--out /proc/x cannot"),
    "models check --out a folder": Mistake(
        ("models", "check", "--models", "bert", "--out", "."), "--out . is a folder"
    ),
    "models check --out under /proc": Mistake(
        ("models", "check", "--models", "bert", "--out", "/proc/x/o.json"), "/proc/x"
    ),
    "templates render --out a folder": Mistake(("templates", "render", "bert", "--out", "."), "--out . is a folder"),
    "selfbench --out a file": Mistake(("selfbench", "--quick", "--out", "broken.toml"), "--out broken.toml cannot"),
    "report without a results store": Mistake(("report", "r1"), "results.duckdb does not exist: run `accel run`"),
    "runs show without a results store": Mistake(("runs", "show", "r1"), "results.duckdb does not exist"),
    "--config absent": Mistake(("--config", "absent.toml", "detect"), "absent.toml does not exist"),
    "--config malformed TOML": Mistake(("--config", "broken.toml", "detect"), "broken.toml is not valid TOML"),
    "--config not UTF-8": Mistake(("--config", "latin1.toml", "detect"), "config file latin1.toml is not"),
    "--config wrong TOML type": Mistake(("--config", "wrong-type.toml", "detect"), "concurrency = [1] is an array"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        futures = {
            name: pool.submit(accel, *m.args, cwd=_workdir(tmp_path_factory), env=m.env, timeout=120)
            for name, m in MISTAKES.items()
        }
    return {name: future.result() for name, future in futures.items()}


def _workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of its own per case (two runs in one folder would share, and lock, its templates DB)."""
    where = tmp_path_factory.mktemp("usage")
    for name, content in FILES.items():
        (where / name).write_bytes(content)
    seed_catalog_index(where)  # the catalog says a model type is unknown: build it once, not once per case
    return where


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_usage_mistake_is_one_line_and_exit_2(
    outcomes: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    # Given a mistake; When accel runs it; Then one line on stderr says what was wrong, and the exit is 2
    done = outcomes[case]
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("accel: error: "), done.stderr
    assert MISTAKES[case].says in lines[0], lines[0]


def test_a_bare_accel_shows_the_help_and_exits_2(tmp_path: Path) -> None:
    # exit 2, not 0: `accel "$EMPTY"` in a script must fail; the help goes where --help puts it
    for args, usage in ((), "Usage: accel [OPTIONS] COMMAND"), (("config",), "Usage: accel config [OPTIONS]"):
        done = accel(*args, cwd=tmp_path, env={"COLUMNS": "120"})
        assert done.returncode == 2 and done.stderr == "", done.stderr
        assert usage in done.stdout and "show" in done.stdout


def test_version_names_the_distribution_transformers_and_torch(tmp_path: Path) -> None:
    from importlib import metadata

    done = accel("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"accel {metadata.version('accelerate-fleet')} (")
    assert f"transformers {metadata.version('transformers')}" in done.stdout
    assert f"torch {metadata.version('torch')}" in done.stdout


def test_shell_completion_script_and_answers(tmp_path: Path) -> None:
    # Given the bash script typer ships; When bash asks for completions the way that script does; Then accel answers
    script = accel("--show-completion", "bash", cwd=tmp_path)
    assert script.returncode == 0 and "_ACCEL_COMPLETE=complete_bash" in script.stdout
    for words, expected in (("accel sta", "status"), ("accel worker --hard", "--hardware")):
        env = {"_ACCEL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        done = accel(cwd=tmp_path, env=env)
        assert done.returncode == 0 and expected in done.stdout.split(), (done.stdout, done.stderr)
    installed = accel("--install-completion", "bash", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    assert "_ACCEL_COMPLETE" in (tmp_path / ".bash_completions" / "accel.sh").read_text()
    assert ".bash_completions/accel.sh" in (tmp_path / ".bashrc").read_text()

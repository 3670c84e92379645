"""``accel detect``, ``accel config show`` and ``accel selfbench`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelerate_core.selfbench_report import SECTIONS
from tests.support.cli import accel


def test_detect_json_lists_the_cpu(tmp_path: Path) -> None:
    done = accel("detect", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["kinds"][0] == "cpu"
    assert data["devices"][0]["threads"] >= 1


def test_detect_table(tmp_path: Path) -> None:
    done = accel("detect", cwd=tmp_path, env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "cpu:0" in done.stdout and "Memory (MiB)" in done.stdout


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (("detect",), {"ACCEL_BROKER_URL": "nonsense"}, None, "ACCEL_BROKER_URL='nonsense' is not a Redis URL"),
        (("--config", "bad.toml", "detect"), {}, "broker_url = [\n", "bad.toml is not valid TOML"),
        (("--config", "absent.toml", "detect"), {}, None, "absent.toml does not exist"),
        (("config", "show"), {"ACCEL_REDELIVERY_CAP": "many"}, None, "ACCEL_REDELIVERY_CAP='many' is not an integer"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], toml: str | None, message: str
) -> None:
    # Given a bad setting; When a command runs; Then it prints one line, no traceback, and exits 2
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
    done = accel(*args, cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accel: error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_config_show_redacts_passwords(tmp_path: Path) -> None:
    (tmp_path / "accel.toml").write_text('flower_password = "tomlsecret"\nmem_cap_mb = 2048\n')
    env = {"ACCEL_BROKER_URL": "redis://fleet:brokersecret@10.0.0.5:6379/0"}
    shown = accel("config", "show", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["broker_url"] == "redis://fleet:***@10.0.0.5:6379/0"
    assert data["flower_password"] == "***" and data["mem_cap_mb"] == 2048
    table = accel("config", "show", cwd=tmp_path, env={**env, "COLUMNS": "200"})
    assert table.returncode == 0 and "mem_cap_mb" in table.stdout
    for output in (shown.stdout, table.stdout, table.stderr):
        assert "brokersecret" not in output and "tomlsecret" not in output


def test_selfbench_quick_writes_report_json_and_store_rows(tmp_path: Path) -> None:
    # Given a clean folder; When a quick selfbench runs with the store on
    env = {"ACCEL_RESULTS_DB": str(tmp_path / "results.duckdb")}
    done = accel("selfbench", "--quick", "--out", "sb", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    # Then the printed JSON, the JSON file and the Markdown agree, with the original's sections in order
    printed = json.loads(done.stdout)
    saved = json.loads((tmp_path / "sb" / "selfbench.json").read_text())
    assert printed["summary"] == saved["summary"]
    markdown = (tmp_path / "sb" / "selfbench.md").read_text()
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert titles == list(SECTIONS)
    summary = saved["summary"]
    assert summary["parallel_success_rates"] == {"5x3": 1.0, "16x50": 1.0}
    assert summary["heavy_modules_imported"] == []
    modules = saved["module_loading"]["modules"]
    assert set(modules) >= {"accelerate_core", "accelerate_core.config", "accelerate_core.backends"}
    assert 0 < modules["accelerate_core"]["import"]["median_ms"] < 50
    assert set(saved["basic_operations"]) == {
        "Config class access",
        "Backends class access",
        "dispatch function access",
    }
    # And the rows are in the results store when it is installed
    duckdb = pytest.importorskip("duckdb")
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as conn:
        sections = dict(conn.execute("SELECT section, count(*) FROM import_timings GROUP BY section").fetchall())
    assert sections == {"module-loading": len(modules), "basic-operations": 3, "parallel-loading": 2}

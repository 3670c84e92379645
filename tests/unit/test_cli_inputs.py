"""Bad input on the command line and hostile text in what it prints, through ``accel``'s own entry point.

- Every bad value (a name that could climb out of a folder or carry markup, a malformed size list, a broken
  broker URL, a non-UTF-8 config file) ends the command with one line naming the flag, variable or file,
  and exit 2; never a traceback. Hypothesis feeds the value parsers arbitrary text.
- Text from the store or the settings that looks like markup (rich's ``[red]``/``[/x]``, Markdown's ``|``,
  links and images, HTML) is printed and written literally by ``runs list/show``, ``status``, ``config show``
  and the Markdown and HTML reports, and nothing crashes. The hostile run is written the way a store made
  before names were checked (or edited by hand) would hold it: names straight into DuckDB.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerate_core.errors import AccelerateError, ConfigError
from accelerate_core.names import check_name
from accelerate_core.selection import parse_models
from accelerate_core.store import ResultsStore
from accelerate_core.store.synthetic import SyntheticRun
from scheduler.cli import main
from scheduler.cli.bench import parse_sizes
from scheduler.cli.fleet import parse_devices
from scheduler.plan import resolve_hardware
from tests.unit.test_cli_core import accel

HOSTILE = ["[red]x[/red]", "[/x]", "a|b", "![img](http://x)", "<script>alert(1)</script>", "`t`", ":skull:"]
PHASE, MODEL, HOST = "q4[/x]", "[red]x[/red]", "![img](http://x)"
MESSAGE = "boom " + " ".join(HOSTILE)


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1 and lines[0].startswith("accel: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--phase", "q4[/x]"], "--phase 'q4[/x]' is not a valid name"),
        (["run", "--phase", "../../etc"], "--phase '../../etc' is not a valid name"),
        (["run", "--resume", "a/b"], "--resume 'a/b' is not a valid name"),
        (["run", "--phase", "q4", "--broker", "redis://[::1/0"], "--broker 'redis://[::1/0' is not a valid URL"),
        (["run", "--phase", "q4", "--broker", "redis://:hunter2@h:99999/0"], "--broker 'redis://:***@h:99999/0'"),
        (["run", "--phase", "q4", "--broker", "rediss://h/0?ssl_cert_reqs=none"], "asks for TLS without certificate"),
        (["status", "../../etc/x"], "RUN '../../etc/x' is not a valid name"),
        (["runs", "show", "[red]x[/red]"], "RUN '[red]x[/red]' is not a valid name"),
        (["runs", "export", "../x"], "RUN '../x' is not a valid name"),
        (["report", "latest", "--baseline", "a|b"], "RUN 'a|b' is not a valid name"),
        (["bench", "[/x]"], "checkpoint directory '[/x]' does not exist: check the path"),
        (["bench", "[x]"], "unknown model '[x]': give a model type"),
        (["bench", "bert", "--batch", "x"], "--batch 'x' is invalid"),
        (["bench", "bert", "--seq", "0,4"], "--seq '0,4' is invalid"),
        (["models", "show", "../x"], "MODEL_TYPE '../x' is not a valid name"),
        (["templates", "show", "[/x]"], "NAME '[/x]' is not a valid name"),
        (["templates", "history", "../x"], "NAME '../x' is not a valid name"),
        (["templates", "render", "a/b"], "TYPE 'a/b' is not a valid name"),
        (["worker", "--devices", "x"], "--devices 'x' is invalid"),
        (["flower", "--port", "99999"], "--port 99999 is out of range: give 1..65535"),
        (["flower", "--address", "[::1]:80 x"], "--address '[::1]:80 x' is not an IP address or host name"),
    ],
)
def test_bad_values_on_the_command_line_are_one_line_naming_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("ACCEL_BROKER_URL", "ACCEL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCEL_RESULTS_DB", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("ACCEL_TEMPLATES_DB", str(tmp_path / "templates.duckdb"))
    monkeypatch.setenv("ACCEL_FLOWER_PASSWORD", "pw")
    line = _one_line_exit_2(capsys, argv)
    assert needle in line and "hunter2" not in line


def test_templates_add_refuses_bad_names_and_non_utf8_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCEL_TEMPLATES_DB", str(tmp_path / "templates.duckdb"))
    body = tmp_path / "t.j2"
    body.write_text("def test_a():\n    pass\n")
    line = _one_line_exit_2(capsys, ["templates", "add", str(body), "--name", "../x", "--scope", "default"])
    assert "--name '../x' is not a valid name" in line
    line = _one_line_exit_2(
        capsys, ["templates", "add", str(body), "--name", "t", "--scope", "model_type", "--scope-value", "[/x]"]
    )
    assert "--scope-value '[/x]' is not a valid name" in line
    body.write_bytes(b"def test_a():\n    assert '\xff'\n")
    line = _one_line_exit_2(capsys, ["templates", "add", str(body), "--name", "t", "--scope", "default"])
    assert "is not UTF-8" in line and not (tmp_path / "templates.duckdb").exists()


@pytest.mark.parametrize(
    ("env", "toml", "needle"),
    [
        ({}, b'concurrency = "x"\n', "accel.toml: concurrency = 'x' is a string, not an integer"),
        ({}, b"[time_limits]\ntest = 5\n", "accel.toml: time_limits.test = 5 is not a table"),
        ({}, b'reports_dir = "caf\xe9"\n', "accel.toml is not UTF-8"),
        ({"ACCEL_BROKER_URL": "redis://h/0?password=hunter2"}, None, "carries a password as a query parameter"),
        ({"ACCEL_BROKER_URL": "redis://h:x/0"}, None, "ACCEL_BROKER_URL='redis://h:x/0' has an invalid port"),
    ],
)
def test_a_real_accel_process_with_bad_settings_prints_one_line_and_exits_2(
    tmp_path: Path, env: dict[str, str], toml: bytes | None, needle: str
) -> None:
    if toml is not None:
        (tmp_path / "accel.toml").write_bytes(toml)
    done = accel("config", "show", cwd=tmp_path, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr and done.stdout == ""


# -- hostile text shown ---------------------------------------------------------------------------------


@pytest.fixture
def hostile_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "results.duckdb"
    run = SyntheticRun("r1", phase="q4", models=("bert", "gpt2"))
    with ResultsStore.open(db) as store:
        store.record_run(run.plan())
        store.record_results(
            [
                run.result("bert", "cpu"),
                run.result("gpt2", "cpu", status="failed", error=("forward-error", "ValueError", MESSAGE)),
            ]
        )
    with duckdb.connect(str(db)) as conn:  # as a store written before names were checked would hold them
        conn.execute("UPDATE runs SET phase = ?", [PHASE])
        conn.execute("UPDATE jobs SET model_type = ? WHERE model_type = 'gpt2'", [MODEL])
        conn.execute("UPDATE jobs SET host = ?", [HOST])
    monkeypatch.setenv("ACCEL_RESULTS_DB", str(db))
    monkeypatch.setenv("ACCEL_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("ACCEL_BROKER_URL", raising=False)
    return db


def _shown(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_runs_list_show_and_status_print_markup_literally(
    hostile_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _shown(capsys, ["runs", "list"])
    assert PHASE in listed
    shown = _shown(capsys, ["runs", "show", "latest"])
    assert f"phase {PHASE}" in shown and f"{MODEL}@cpu forward-error: {MESSAGE}" in shown
    status = _shown(capsys, ["status"])
    assert MODEL in status and MESSAGE in status


def test_config_show_prints_bracketed_values_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "accel.toml").write_text('reports_dir = "[/x]"\nresults_db = "[red]x[/red] :skull:"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")
    for var in ("ACCEL_RESULTS_DB", "ACCEL_REPORTS_DIR", "ACCEL_CONFIG", "ACCEL_BROKER_URL"):
        monkeypatch.delenv(var, raising=False)
    shown = _shown(capsys, ["config", "show"])
    assert "[/x]" in shown and "[red]x[/red] :skull:" in shown and "file accel.toml" in shown


def test_the_markdown_and_html_reports_show_hostile_text_literally(
    hostile_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from markdown_it import MarkdownIt

    assert main(["report", "latest", "--format", "md,html"]) == 0
    capsys.readouterr()
    folder = hostile_store.parent / "reports" / "r1"
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    # Markdown, rendered by a CommonMark renderer with raw HTML and GFM tables on: every hostile text comes
    # back as the same text in its own cell; no link, image, code span, emphasis or tag is made of it
    rendered = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(md)
    raw_cells = re.findall(r"<td>(.*?)</td>", rendered, re.S)
    assert [c for c in raw_cells if "<" in c] == []  # no tag of any kind inside a cell
    cells = [html.unescape(c) for c in raw_cells]
    assert MESSAGE in cells and MODEL in cells and HOST in cells
    title = rendered.split("\n")[0]
    assert title == f"<h1>Report of run r1 (phase {html.escape(PHASE, quote=False)})</h1>"
    # HTML: escaped everywhere; no tag of the hostile text survives
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert html.escape(MESSAGE) in page and html.escape(f"phase {PHASE}") in page


# -- property-based: the value parsers never raise anything but one ConfigError ---------------------------

_TEXT = st.text(max_size=60) | st.sampled_from(["all", "auto", "@", "@/nonexistent", "1,2", "0", "-1", "cpu,cuda"])


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_value_parsers_return_a_value_or_one_config_error(text: str) -> None:
    parsers = [
        lambda: check_name(text, "--phase"),
        lambda: parse_sizes(text, "--batch"),
        lambda: parse_devices(text),
        lambda: parse_models(text),
        lambda: resolve_hardware(text, ["cpu"], local=True),
        lambda: resolve_hardware(text, [], local=False),
    ]
    for parse in parsers:
        try:
            parse()
        except AccelerateError as e:
            assert isinstance(e, ConfigError) or e.exit_code == 2
            assert "\n" not in str(e)

"""`accel templates ...` and `accel generate` in-process, on real DuckDB files and the real catalog index."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from scheduler.cli import main
from templates_db.store import TemplateStore, shipped_templates
from templates_db.validate import validate_source

SHIPPED = dict((spec["name"], body) for spec, body in shipped_templates())["default"]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "templates.duckdb"
    monkeypatch.setenv("ACCEL_TEMPLATES_DB", str(path))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sync_is_idempotent_and_list_shows_the_shipped_template(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "templates", "sync", "--json")
    assert code == 0 and [o["added"] for o in json.loads(out)] == [True] * len(json.loads(out))
    code, out, _ = _run(capsys, "templates", "sync")
    assert code == 0 and out.startswith("unchanged")
    code, out, _ = _run(capsys, "templates", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [t["name"] for t in listed] == ["default"] and "body" not in listed[0]
    assert TemplateStore(db).count_versions() == 1


def test_add_history_show_and_diff(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the shipped template and an edited copy added as a new version through the CLI
    assert _run(capsys, "templates", "sync")[0] == 0
    edited = tmp_path / "edited.j2"
    edited.write_text(SHIPPED.replace("Regenerate rather than edit", "Edit the template, not this file"))
    code, out, err = _run(
        capsys, "templates", "add", str(edited), "--name", "default", "--scope", "default", "--note", "wording"
    )
    assert code == 0, err
    assert out.startswith("added default v2")
    # Then both versions are listed, and each one is shown by number or sha
    code, out, _ = _run(capsys, "templates", "history", "default", "--json")
    versions = json.loads(out)
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["note"] == "wording"
    assert _run(capsys, "templates", "show", "default", "--version", "1")[1] == SHIPPED
    assert _run(capsys, "templates", "show", "default", "--sha", versions[1]["sha256"][:12])[1] == edited.read_text()
    code, out, _ = _run(capsys, "templates", "diff", "default", "1", "2")
    assert code == 0 and "+`accel templates render" not in out and "+Template" in out and "Edit the template" in out
    # And adding the same file again adds nothing
    assert _run(capsys, "templates", "add", str(edited), "--name", "default", "--scope", "default")[1].startswith(
        "unchanged"
    )
    assert TemplateStore(db).count_versions() == 2


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("{% for x in y %}\ndef test_a():\n    pass\n", r"line \d+: jinja syntax error: Unexpected end"),
        ("import os\n\n\ndef test_a():\n    assert {{ missing_name }}\n", "line 5: 'missing_name' is undefined"),
        ("import os\n\n\ndef test_a(:\n    pass\n", r"line 4: rendered Python is invalid \(invalid syntax"),
    ],
    ids=["jinja-syntax", "undefined-variable", "invalid-python"],
)
def test_add_refuses_a_broken_template_with_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: str
) -> None:
    assert _run(capsys, "templates", "sync")[0] == 0
    before = TemplateStore(db).count_versions()
    broken = tmp_path / "broken.j2"
    broken.write_text(body)
    code, out, err = _run(
        capsys,
        "templates",
        "add",
        str(broken),
        "--name",
        "mine",
        "--scope",
        "family",
        "--scope-value",
        "decoder",
        "--hardware",
        "cuda",
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and re.match("accel: error: template 'mine' " + line, err), err
    assert TemplateStore(db).count_versions() == before


def test_add_of_a_missing_file_or_bad_scope_is_a_usage_error(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "templates", "add", "/no/such.j2", "--name", "x", "--scope", "default")
    assert code == 2 and "cannot read template file" in err
    code, _, err = _run(capsys, "templates", "add", __file__, "--name", "x", "--scope", "galaxy")
    assert code == 2 and "unknown template scope" in err
    code, _, err = _run(
        capsys, "templates", "add", __file__, "--name", "x", "--scope", "model_type", "--scope-value", "berrt"
    )
    assert code == 2 and "unknown model type 'berrt'" in err
    assert not db.exists()


def test_show_of_an_unknown_template_exits_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "templates", "show", "nope")
    assert code == 2 and "no template named 'nope'" in err


def test_render_one_architecture(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "templates", "render", "gpt2")
    assert code == 0, err
    assert validate_source(out) == ["test_forward", "test_generate", "test_benchmark"]
    target = tmp_path / "out" / "test_vit.py"
    code, out, err = _run(capsys, "templates", "render", "vit", "--hardware", "rocm", "--out", str(target))
    assert code == 0 and out == "" and str(target) in err
    assigned = {n.targets[0].id: n.value for n in ast.parse(target.read_text()).body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(assigned["DEVICE"]) == "cuda" and ast.literal_eval(assigned["HARDWARE"]) == "rocm"
    code, _, err = _run(capsys, "templates", "render", "no_such_model_xyz")
    assert code == 2 and "unknown model type" in err


def test_generate_names_and_file_lists(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models.txt"
    models.write_text("# a sample\nbert\nvit  # vision\n\nwav2vec2,gpt2\n")
    out_dir = tmp_path / "gen"
    code, out, err = _run(capsys, "generate", "--models", f"@{models}", "--out", str(out_dir), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["counts"] == {"written": 4, "skipped": 0, "failed": 0}
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "test_bert.py",
        "test_gpt2.py",
        "test_vit.py",
        "test_wav2vec2.py",
    ]
    assert {f["template"] for f in report["written"]} == {"default"}
    code, _, err = _run(capsys, "generate", "--models", "bert,not_a_model", "--out", str(out_dir))
    assert code == 2 and "not_a_model" in err
    code, _, err = _run(capsys, "generate", "--models", "bert", "--hardware", "tpu", "--out", str(out_dir))
    assert code == 2 and "--hardware 'tpu'" in err


def test_generate_lists_non_runnable_architectures_with_their_reason(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from accelerate_core.catalog.index import load_index

    component = next(e for e in load_index() if not e.runnable)
    code, out, _ = _run(capsys, "generate", "--models", f"bert,{component.model_type}", "--out", str(tmp_path / "g"))
    assert code == 0
    assert "wrote 1 test files" in out and f"skipped {component.model_type}: {component.reason_class}" in out


def test_a_locked_store_is_one_line_naming_the_file(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    assert _run(capsys, "templates", "sync")[0] == 0
    code = f"import duckdb, sys; con = duckdb.connect({str(db)!r}); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code_, out, err = _run(capsys, "templates", "list")
    finally:
        holder.communicate("", timeout=30)
    assert code_ == 1 and out == ""
    assert err.count("\n") == 1 and f"templates DB {db} is held read-write by process {holder.pid} (" in err

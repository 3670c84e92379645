"""The template store on real DuckDB files: versions, sha addressing, lookup order, refusals, locks, sync."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerate_core.errors import (
    ConfigError,
    StoreError,
    StoreLockedError,
    TemplateInvalidError,
    TemplateNotFoundError,
)
from templates_db.store import TemplateStore, shipped_templates
from tests.unit import template_samples

SHIPPED = dict((spec["name"], body) for spec, body in shipped_templates())["default"]
SMALL = "X = {{ config | pyrepr }}\n\n\ndef test_{{ model_type }}():\n    assert X == {{ config | pyrepr }}\n"


class _Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    return TemplateStore(tmp_path / "t" / "templates.duckdb", now=_Clock(), lock_wait_s=0.3)


def _add(
    store: TemplateStore,
    name: str,
    body: str = SMALL,
    scope: str = "default",
    value: str | None = None,
    hardware: str = "any",
    note: str = "",
    collect: bool = False,
):
    return store.add(name, body, scope, value, hardware, note, contexts=template_samples.contexts(), collect=collect)


def test_an_edit_adds_a_version_and_both_stay_addressable_by_sha(store: TemplateStore) -> None:
    # Given a template stored twice with different bodies
    v1 = _add(store, "default", SHIPPED, note="first")
    v2 = _add(store, "default", SHIPPED.replace("Regenerate rather", "Please regenerate rather"), note="second")
    # Then both versions are kept, numbered, and each is found by its sha (or a prefix) and number
    assert (v1.version, v2.version) == (1, 2) and v1.sha256 != v2.sha256
    assert store.get("default", sha=v1.sha256) == v1
    assert store.get("default", sha=v2.sha256[:10]) == v2
    assert store.get("default", version=1).body == SHIPPED
    assert store.get("default") == v2
    assert [v.note for v in store.history("default")] == ["first", "second"]
    assert store.count_versions() == 2
    diff = store.diff("default", 1, 2)
    assert "-Template {{ template.name }}" in diff and "+Template {{ template.name }}" in diff
    assert "+Template {{ template.name }} v{{ template.version }} (sha256 {{ template.sha[:12] }}). Please" in diff
    assert store.diff("default", 1, 1) == ""


def test_an_unchanged_body_adds_no_version(store: TemplateStore) -> None:
    first, added = store.add_version("t", SMALL, "default", contexts=template_samples.contexts(), collect=False)
    again, added_again = store.add_version("t", SMALL, "default", contexts=template_samples.contexts(), collect=False)
    assert added and not added_again and again == first
    assert store.count_versions() == 1


def test_unknown_names_versions_and_shas_are_not_found(store: TemplateStore) -> None:
    _add(store, "default")
    with pytest.raises(TemplateNotFoundError, match=r"no template named 'nope'.*known: default"):
        store.get("nope")
    with pytest.raises(TemplateNotFoundError, match="no version v9"):
        store.get("default", version=9)
    with pytest.raises(TemplateNotFoundError, match="sha ffff"):
        store.get("default", sha="ffff")


def test_an_ambiguous_sha_prefix_is_refused(store: TemplateStore) -> None:
    versions = [_add(store, "default", SMALL + f"# {i}\n") for i in range(17)]  # 17 > 16 hex digits
    first = {v.sha256[0] for v in versions}
    prefix = next(c for c in first if sum(v.sha256[0] == c for v in versions) > 1)
    with pytest.raises(TemplateNotFoundError, match="ambiguous"):
        store.get("default", sha=prefix)
    # a revert to an old body is a new version with the same sha: the prefix is not ambiguous, the latest wins
    again = _add(store, "default", SMALL + "# 0\n")
    assert store.get("default", sha=versions[0].sha256).version == again.version == 18


def test_lookup_picks_the_most_specific_template(store: TemplateStore) -> None:
    # Given one template per scope level
    for name, scope, value, hw in [
        ("d", "default", None, "any"),
        ("d-cuda", "default", None, "cuda"),
        ("text", "modality", "text", "any"),
        ("dec", "family", "decoder", "any"),
        ("text-cuda", "modality", "text", "cuda"),
        ("gpt2", "model_type", "gpt2", "any"),
        ("gpt2-cuda", "model_type", "gpt2", "cuda"),
    ]:
        _add(store, name, SMALL + f"# {name}\n", scope, value, hw)

    def pick(model_type: str, modality: str, family: str, hardware: str) -> str:
        return store.lookup(model_type, modality, family, hardware).name

    # Then the order is model type + hw > model type > family/modality + hw > family/modality > default + hw > default
    assert pick("gpt2", "text", "decoder", "cuda") == "gpt2-cuda"
    assert pick("gpt2", "text", "decoder", "cpu") == "gpt2"
    assert pick("llama", "text", "decoder", "cuda") == "text-cuda"
    assert pick("llama", "text", "decoder", "cpu") == "dec"
    assert pick("bert", "text", "encoder", "cpu") == "text"
    assert pick("vit", "vision", "encoder", "cuda") == "d-cuda"
    assert pick("vit", "vision", "encoder", "mps") == "d"


def test_lookup_in_an_empty_store_says_to_sync(store: TemplateStore) -> None:
    with pytest.raises(TemplateNotFoundError, match="accel templates sync"):
        store.lookup("bert", "text", "encoder", "cpu")
    assert not store.path.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("X = 1\n\n{% if x %}\ndef test_a():\n    pass\n", r"line \d+: jinja syntax error"),
        ("X = {{ config | pyrepr }}\nY = {{ no_such_var }}\n\n\ndef test_a():\n    pass\n", r"line 2: .*no_such_var"),
        ("X = {{ config | pyrepr }}\nY = (\n\n\ndef test_a():\n    pass\n", r"line 2: rendered Python is invalid"),
        ("X = {{ config | pyrepr }}\n", "no pytest tests"),
    ],
    ids=["jinja-syntax", "undefined-variable", "invalid-python", "no-tests"],
)
def test_refused_templates_leave_the_store_unchanged(store: TemplateStore, body: str, message: str) -> None:
    # Given a store with one template
    _add(store, "default", SMALL)
    before = store.count_versions()
    # When a broken new version and a broken new template are added, then both are refused
    with pytest.raises(TemplateInvalidError, match=message):
        _add(store, "default", body)
    with pytest.raises(TemplateInvalidError, match=message):
        _add(store, "other", body, "family", "decoder")
    # And nothing changed
    assert store.count_versions() == before
    assert [v.name for v in store.list()] == ["default"]
    assert store.get("default").body == SMALL


def test_a_template_that_pytest_cannot_collect_is_refused(store: TemplateStore) -> None:
    # Given a template that renders valid Python whose import fails at collection (a real pytest run)
    body = "import accel_no_such_module_xyz\n" + SMALL
    with pytest.raises(TemplateInvalidError, match=r"pytest --collect-only failed.*accel_no_such_module_xyz"):
        _add(store, "broken", body, collect=True)
    assert store.count_versions() == 0
    # While the shipped template is collected for real and stored
    assert _add(store, "default", SHIPPED, collect=True).version == 1


def test_scope_rules_are_enforced(store: TemplateStore) -> None:
    _add(store, "d")
    with pytest.raises(ConfigError, match="already covers default on any"):
        _add(store, "d2", SMALL + "# other\n")
    with pytest.raises(ConfigError, match="must keep that scope"):
        _add(store, "d", SMALL + "# other\n", "family", "decoder")
    with pytest.raises(ConfigError, match="needs a value"):
        _add(store, "f", scope="family")
    with pytest.raises(ConfigError, match="takes no scope value"):
        _add(store, "f", scope="default", value="x")
    with pytest.raises(ConfigError, match="modality 'vison' is unknown: use one of text, vision"):
        _add(store, "f", scope="modality", value="vison")
    with pytest.raises(ConfigError, match="family 'decoders' is unknown"):
        _add(store, "f", scope="family", value="decoders")
    with pytest.raises(ConfigError, match="unknown template hardware"):
        _add(store, "f", hardware="tpu")
    with pytest.raises(ConfigError, match="name"):
        _add(store, "bad name!")
    assert store.count_versions() == 1


def test_sync_loads_the_shipped_templates_once(store: TemplateStore) -> None:
    first = store.sync_shipped(contexts=template_samples.contexts(), collect=False)
    assert [o.added for o in first] == [True] * len(first)
    assert {o.name for o in first} >= {"default"}
    second = store.sync_shipped(contexts=template_samples.contexts(), collect=False)
    assert [o.added for o in second] == [False] * len(second)
    assert [o.sha256 for o in second] == [o.sha256 for o in first]
    assert store.count_versions() == len(first)


def test_shipped_files_are_package_data() -> None:
    # hatchling puts every non-ignored file of the package in the wheel; the manifest names only real files
    specs = list(shipped_templates())
    assert specs and all(spec["file"].endswith(".j2") and body.strip() for spec, body in specs)
    ignored = subprocess.run(
        ["git", "check-ignore", "templates_db/shipped/default.j2", "templates_db/shipped/manifest.json"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert ignored.stdout == ""


@pytest.fixture
def held_store(store: TemplateStore) -> Iterator[TemplateStore]:
    """The store's file held read-write by another process until the test ends."""
    _add(store, "default")
    code = textwrap.dedent(f"""
        import duckdb, sys
        con = duckdb.connect({str(store.path)!r})
        print("held", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        yield store
    finally:
        holder.communicate("", timeout=30)


def test_a_locked_file_gives_one_line_naming_it(held_store: TemplateStore) -> None:
    for call in (held_store.list, lambda: _add(held_store, "other", SMALL + "# x\n", "family", "decoder")):
        with pytest.raises(StoreLockedError) as info:
            call()
        message = str(info.value)
        assert str(held_store.path) in message and "is held read-write by process " in message
        assert "\n" not in message


def test_a_lock_held_briefly_is_waited_out(store: TemplateStore) -> None:
    # Given another process that holds the file for half a second
    _add(store, "default")
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(store.path)!r})
        print("held", flush=True)
        time.sleep(0.5)
        con.close()
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # When we read with a longer wait, then we get the data instead of an error
        patient = TemplateStore(store.path, lock_wait_s=10.0)
        assert [v.name for v in patient.list()] == ["default"]
    finally:
        holder.communicate("", timeout=30)


def test_the_lock_is_released_after_each_call(store: TemplateStore) -> None:
    _add(store, "default")
    # another process can open the file read-write right after our call
    proc = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(store.path)!r}).close(); print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_a_file_that_is_not_a_templates_db_is_refused(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "results.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE runs (id VARCHAR)").close()
    with pytest.raises(StoreError, match="is not a templates DB"):
        TemplateStore(path).list()

"""The template store: named, versioned jinja2 test templates in their own DuckDB file.

Nothing is ever overwritten: an edit adds a version (an unchanged body adds none). A template is
validated before it is stored (rendered against sample architectures, checked with ``ast`` and a real
``pytest --collect-only``), so a broken template is refused and the store is left unchanged.

Each call opens the file for its own duration only (read-only for reads), so a CLI command never holds
the lock longer than it needs; another process holding it read-write gives :class:`StoreLockedError`.
The file is opened, locked and its errors translated by :mod:`accelerate_core.database`, like the
results store. This is the only module of ``templates_db`` that uses DuckDB (workers never open the
templates DB).
"""

from __future__ import annotations

import builtins
import difflib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate_core.database import Database, release, transaction
from accelerate_core.errors import ConfigError, StoreError, TemplateNotFoundError
from templates_db.model import HARDWARE_ANY, TemplateVersion, check_scope, pick, sha256_text

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COLUMNS = "name, version, scope, scope_value, hardware, body, sha256, created_at, note"
_LATEST_SQL = (
    f"SELECT {_COLUMNS} FROM template_versions v WHERE version = "
    "(SELECT max(version) FROM template_versions w WHERE w.name = v.name) ORDER BY name"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS template_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS template_versions (
        name VARCHAR NOT NULL, version INTEGER NOT NULL, scope VARCHAR NOT NULL, scope_value VARCHAR,
        hardware VARCHAR NOT NULL, body VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
        created_at DOUBLE NOT NULL, note VARCHAR NOT NULL DEFAULT '', PRIMARY KEY (name, version))""",
)

__all__ = ["TEMPLATES_DB", "SyncOutcome", "TemplateStore"]

TEMPLATES_DB = Database(
    label="templates DB",
    setting="templates_db",
    first_step="run `accel templates sync`",
    when_locked="wait for it or stop it, then retry",
)
"""How the templates file is opened and named in errors (:mod:`accelerate_core.database`)."""


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What ``sync_shipped`` did with one shipped file."""

    name: str
    file: str
    version: int
    sha256: str
    added: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "name": self.name,
            "file": self.file,
            "version": self.version,
            "sha256": self.sha256,
            "added": self.added,
        }


class TemplateStore:
    """Versioned templates in one DuckDB file (``Settings.templates_db``).

    Args:
        path: the DuckDB file (created, with its folder, on the first write).
        now: clock for ``created_at`` (tests pass their own).
        lock_wait_s: how long to keep retrying while another process holds the file (each call holds
            it for milliseconds only, so two CLI commands at once simply take turns).
    """

    def __init__(self, path: str | Path, *, now: Callable[[], float] = time.time, lock_wait_s: float = 2.0) -> None:
        self.path = Path(path)
        self._now = now
        self._lock_wait_s = lock_wait_s

    def __repr__(self) -> str:
        return f"TemplateStore({str(self.path)!r})"

    # -- reads -----------------------------------------------------------------------------------

    def list(self) -> builtins.list[TemplateVersion]:
        """The latest version of every template, by name."""
        return self._select(_LATEST_SQL)

    def history(self, name: str) -> builtins.list[TemplateVersion]:
        """Every version of ``name``, oldest first.

        Raises:
            TemplateNotFoundError: no template of that name.
        """
        rows = self._select(f"SELECT {_COLUMNS} FROM template_versions WHERE name = ? ORDER BY version", [name])
        if not rows:
            raise self._not_found(name)
        return rows

    def get(self, name: str, version: int | None = None, sha: str | None = None) -> TemplateVersion:
        """One version of ``name``: the latest, or the one with ``version`` and/or ``sha`` (a prefix is fine).

        Raises:
            TemplateNotFoundError: no such template, version or sha.
        """
        matches = self.history(name)
        if version is not None:
            matches = [v for v in matches if v.version == version]
        if sha is not None:
            matches = [v for v in matches if v.sha256.startswith(sha.lower())]
            if len({v.sha256 for v in matches}) > 1:
                raise TemplateNotFoundError(
                    f"sha prefix {sha!r} of template {name!r} is ambiguous "
                    f"({len({v.sha256 for v in matches})} bodies): give more characters"
                )
        if not matches:
            wanted = " ".join(p for p in (f"v{version}" if version else "", f"sha {sha}" if sha else "") if p)
            raise TemplateNotFoundError(
                f"template {name!r} has no version {wanted}: see `accel templates history {name}`"
            )
        return matches[-1]

    def lookup(self, model_type: str, modality: str, family: str, hardware: str) -> TemplateVersion:
        """The most specific latest template for a model on a hardware kind (see ``templates_db.model``).

        Raises:
            TemplateNotFoundError: nothing matches (the store is empty: run ``accel templates sync``).
        """
        return pick(self.list(), model_type, modality, family, hardware)

    def count_versions(self) -> int:
        """How many versions (rows) the store holds, over all templates."""
        if not self.path.exists():
            return 0
        with self._connect(write=False) as con:
            row = con.execute("SELECT count(*) FROM template_versions").fetchone()
        return int(row[0]) if row else 0

    def diff(self, name: str, v1: int, v2: int) -> str:
        """A unified diff of two versions of ``name`` (empty when the bodies are equal)."""
        a, b = self.get(name, version=v1), self.get(name, version=v2)
        lines = difflib.unified_diff(
            a.body.splitlines(keepends=True),
            b.body.splitlines(keepends=True),
            fromfile=f"{name}@v{v1} ({a.sha256[:12]})",
            tofile=f"{name}@v{v2} ({b.sha256[:12]})",
        )
        return "".join(lines)

    # -- writes ----------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        body: str,
        scope: str,
        scope_value: str | None = None,
        hardware: str = HARDWARE_ANY,
        note: str = "",
        *,
        contexts: Sequence[Mapping[str, Any]] | None = None,
        collect: bool = True,
    ) -> TemplateVersion:
        """Validate ``body`` and store it as the next version of ``name`` (unchanged body: no new version).

        Args:
            name: the template's name (letters, digits, ``_ . -``; at most 64).
            body: the jinja2 template text.
            scope: ``default``, ``modality``, ``family`` or ``model_type``.
            scope_value: the modality/family/model type the scope names (None for ``default``).
            hardware: ``any`` or one hardware kind.
            note: a free-text note kept with the version.
            contexts: render contexts to validate against (default: the catalog's sample architectures).
            collect: also run ``pytest --collect-only`` on the rendered files (a subprocess).

        Raises:
            ConfigError: a bad name, scope or hardware, or another template already covers this scope.
            TemplateInvalidError: the template does not render to valid, collectable pytest files.
            StoreLockedError: another process holds the file.
        """
        return self.add_version(name, body, scope, scope_value, hardware, note, contexts=contexts, collect=collect)[0]

    def sync_shipped(
        self, *, contexts: Sequence[Mapping[str, Any]] | None = None, collect: bool = True
    ) -> builtins.list[SyncOutcome]:
        """Load the ``.j2`` files shipped in ``templates_db/shipped`` (idempotent; validated like ``add``)."""
        outcomes = []
        for spec, body in shipped_templates():
            version, added = self.add_version(
                spec["name"],
                body,
                spec["scope"],
                spec.get("scope_value"),
                spec.get("hardware", HARDWARE_ANY),
                spec.get("note", ""),
                contexts=contexts,
                collect=collect,
            )
            outcomes.append(SyncOutcome(spec["name"], spec["file"], version.version, version.sha256, added))
        return outcomes

    def add_version(
        self,
        name: str,
        body: str,
        scope: str,
        scope_value: str | None = None,
        hardware: str = HARDWARE_ANY,
        note: str = "",
        *,
        contexts: Sequence[Mapping[str, Any]] | None = None,
        collect: bool = True,
    ) -> tuple[TemplateVersion, bool]:
        """Like :meth:`add`, and also say whether a version was added (False: the body was unchanged)."""
        if not _NAME.match(name):
            raise ConfigError(f"template name {name!r} is invalid: use letters, digits, '_', '.', '-' (max 64)")
        value = check_scope(scope, scope_value, hardware)
        sha = sha256_text(body)
        latest = self._check_compatible(self.list(), name, scope, value, hardware)
        if latest is not None and latest.sha256 == sha:
            return latest, False
        _validate(name, body, sha, hardware, contexts, collect)
        with self._connect(write=True) as con, transaction(con, f"add a version of template {name!r}"):
            latest = self._check_compatible(self._select_con(con, _LATEST_SQL), name, scope, value, hardware)
            if latest is not None and latest.sha256 == sha:
                return latest, False
            version = TemplateVersion(
                name, (latest.version if latest else 0) + 1, scope, value, hardware, body, sha, self._now(), note
            )
            con.execute(
                f"INSERT INTO template_versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [getattr(version, c.strip()) for c in _COLUMNS.split(",")],
            )
        log.info("stored template %s v%d (%s)", name, version.version, sha[:12])
        return version, True

    @staticmethod
    def _check_compatible(
        latest: Sequence[TemplateVersion], name: str, scope: str, value: str | None, hardware: str
    ) -> TemplateVersion | None:
        mine = next((v for v in latest if v.name == name), None)
        if mine is not None and (mine.scope, mine.scope_value, mine.hardware) != (scope, value, hardware):
            raise ConfigError(
                f"template {name!r} is {mine.scope_label} on {mine.hardware}; a new version must keep that "
                "scope and hardware: add it under a new name instead"
            )
        for other in latest:
            if other.name != name and (other.scope, other.scope_value, other.hardware) == (scope, value, hardware):
                raise ConfigError(
                    f"template {other.name!r} already covers {other.scope_label} on {hardware}: "
                    f"add a new version of {other.name!r} instead (--name {other.name})"
                )
        return mine

    # -- DuckDB ----------------------------------------------------------------------------------

    def _not_found(self, name: str) -> TemplateNotFoundError:
        names = [v.name for v in self.list()]
        known = ", ".join(names) if names else "none (run `accel templates sync`)"
        return TemplateNotFoundError(f"no template named {name!r} in {self.path}; known: {known}")

    def _select(self, sql: str, params: Sequence[Any] | None = None) -> builtins.list[TemplateVersion]:
        if not self.path.exists():
            return []
        with self._connect(write=False) as con:
            return self._select_con(con, sql, params)

    @staticmethod
    def _select_con(
        con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
    ) -> builtins.list[TemplateVersion]:
        rows = con.execute(sql, list(params or [])).fetchall()
        return [TemplateVersion(*row) for row in rows]

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        con = TEMPLATES_DB.connect(self.path, read_only=not write, wait_s=self._lock_wait_s)
        try:
            with TEMPLATES_DB.translated(self.path):
                if write:
                    self._ensure_schema(con)
                else:
                    self._check_schema(con)
                yield con
        finally:
            release(self.path, con, read_only=not write)

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        for statement in _SCHEMA:
            con.execute(statement)
        con.execute(
            "INSERT INTO template_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [str(SCHEMA_VERSION)]
        )
        self._check_schema(con)

    def _check_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        import duckdb

        try:
            row = con.execute("SELECT value FROM template_meta WHERE key = 'schema_version'").fetchone()
        except duckdb.CatalogException as e:
            raise StoreError(
                f"{self.path} is not a templates DB (no template_meta table): point templates_db at another file"
            ) from e
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = row[0] if row else "none"
            raise StoreError(
                f"templates DB {self.path} has schema version {found}, this code needs {SCHEMA_VERSION}: "
                "use a matching accelerate-fleet or a new templates_db file"
            )


def shipped_templates() -> Iterator[tuple[dict[str, Any], str]]:
    """The shipped templates: (manifest entry, body) for each ``templates_db/shipped/*.j2`` in the manifest."""
    folder = resources.files("templates_db") / "shipped"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for spec in manifest["templates"]:
        yield spec, (folder / spec["file"]).read_text(encoding="utf-8")


def _validate(
    name: str,
    body: str,
    sha: str,
    hardware: str,
    contexts: Sequence[Mapping[str, Any]] | None,
    collect: bool,
) -> None:
    """Render ``body`` for every sample context and check the files (raises TemplateInvalidError)."""
    from templates_db.context import sample_contexts
    from templates_db.render import generated_file_name, render
    from templates_db.validate import collect_check

    hw = "cpu" if hardware == HARDWARE_ANY else hardware
    samples = list(contexts) if contexts is not None else sample_contexts(hw)
    if not samples:
        raise ConfigError("no sample contexts to validate the template against: check the catalog")
    sources: dict[str, str] = {}
    for context in samples:
        full = {**context, "template": {"name": name, "sha": sha, "version": 0}}
        sources[generated_file_name(str(context["model_type"]))] = render(body, full, name=name)
    if collect:
        collect_check(sources, label=f"template {name!r}")

"""Shared fixtures: a real redis-server per session (flushed per test), temporary settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accelerate_core.config import Settings
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session redis-server's URL, flushed before the test."""
    return redis_server.fresh()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose databases and reports live in the test's temporary folder."""
    return Settings(
        results_db=tmp_path / "results.duckdb",
        templates_db=tmp_path / "templates.duckdb",
        reports_dir=tmp_path / "reports",
    )

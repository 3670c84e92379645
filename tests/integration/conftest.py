"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accelerate_core.endpoint.stub import StubProcess


@pytest.fixture
def stub() -> Iterator[object]:
    """A factory: ``stub("--fault", "http-500")`` starts a stub server; all are stopped at the end."""
    started: list[StubProcess] = []

    def start(*args: str) -> StubProcess:
        started.append(StubProcess(list(args)))
        return started[-1]

    yield start
    for process in started:
        process.stop()

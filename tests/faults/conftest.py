"""Fixtures of the fault suite: a fresh fleet of real processes per test (see ``harness.Fleet``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet with its own redis-server running; the scenario starts the writer and workers it needs."""
    with Fleet(tmp_path) as f:
        yield f

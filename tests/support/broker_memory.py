"""A Redis pushed past its ``maxmemory`` (``noeviction``), as results piling up behind a stopped writer would."""

from __future__ import annotations

from typing import Any

FILLER_KEYS = 16
"""``filler:0`` .. ``filler:15``, 1 MB each."""

MARGIN_B = 8_000_000
"""How far below what is used ``maxmemory`` is set, in bytes: well beyond what Redis frees by itself (query
buffers shrinking), so every write stays refused until the filler goes."""


def fill_broker(client: Any) -> None:
    """Write the filler, then set ``maxmemory`` below what is used: every write is refused from now on."""
    for i in range(FILLER_KEYS):
        client.set(f"filler:{i}", b"x" * 1_000_000)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - MARGIN_B)


def free_broker(client: Any) -> None:
    """Make room again: delete the filler and lift the limit."""
    client.delete(*[f"filler:{i}" for i in range(FILLER_KEYS)])
    client.config_set("maxmemory", 0)

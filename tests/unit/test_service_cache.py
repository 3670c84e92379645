"""The answer cache: kept per key, computed once for concurrent askers, errors never kept, bounded in bytes."""

from __future__ import annotations

import asyncio

import pytest

from accelerate_core.service.cache import Answer, AnswerCache


def _answer(text: str) -> Answer:
    return Answer(text.encode(), "text/plain")


def test_concurrent_askers_share_one_computation_and_later_ones_hit() -> None:
    calls = []

    async def compute() -> Answer:
        calls.append(1)
        await asyncio.sleep(0.05)
        return _answer("runs")

    async def scenario() -> list[Answer]:
        cache = AnswerCache(1 << 20)
        # When ten requests for the same key arrive together, then one more after
        first = await asyncio.gather(*(cache.get(("v1", "/api/runs"), compute) for _ in range(10)))
        later = await cache.get(("v1", "/api/runs"), compute)
        assert cache.hits == 1
        return [*first, later]

    answers = asyncio.run(scenario())
    # Then the store was read once and every request got the same answer
    assert calls == [1] and {a.body for a in answers} == {b"runs"}


def test_a_new_version_is_a_new_key_and_errors_are_never_kept() -> None:
    async def scenario() -> None:
        cache = AnswerCache(1 << 20)
        assert (await cache.get(("v1", "/x"), _make("one"))).body == b"one"
        assert (await cache.get(("v2", "/x"), _make("two"))).body == b"two"

        async def failing() -> Answer:
            await asyncio.sleep(0.01)
            raise RuntimeError("store closed")

        # Both waiting askers see the error; the next asker computes again
        results = await asyncio.gather(cache.get("k", failing), cache.get("k", failing), return_exceptions=True)
        assert [str(r) for r in results] == ["store closed", "store closed"]
        assert (await cache.get("k", _make("fine"))).body == b"fine"

    asyncio.run(scenario())


def _make(text: str):  # type: ignore[no-untyped-def]
    async def compute() -> Answer:
        return _answer(text)

    return compute


def test_least_recently_used_answers_go_first_past_the_byte_bound() -> None:
    async def scenario() -> AnswerCache:
        cache = AnswerCache(max_bytes=10)
        for key in ("a", "b", "c"):
            await cache.get(key, _make(key * 4))  # 4 bytes each: the third pushes "a" out
        await cache.get("x", _make("y" * 11))  # bigger than the whole cache: answered, never kept
        return cache

    cache = asyncio.run(scenario())
    assert list(cache._entries) == ["b", "c"] and cache.size == 8


@pytest.mark.parametrize("bad", [{"read_threads": 0}, {"cache_mb": -1}, {"read_nice": 20}])
def test_service_bounds_are_validated(bad: dict[str, int]) -> None:
    from accelerate_core.errors import ConfigError
    from accelerate_core.service import ServiceConfig

    with pytest.raises(ConfigError):
        ServiceConfig(**bad)  # type: ignore[arg-type]

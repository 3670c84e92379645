"""Prompts of a controlled token length, different for each request, reproducible from a seed.

Each prompt is a seeded random sequence of common English words (so no two requests share a prefix a
server could cache). Its length is counted two ways:

- with ``tokenizer`` (a directory holding the served model's ``tokenizer.json``): the words are chosen
  so that the server's tokenizer gives at most ``tokens`` tokens for the message text, as close as
  possible; the count is exact;
- without: one word per token. Each of these words (with its leading space) is a single token in the
  GPT-2, Llama and Mistral vocabularies, so the count is a close approximation there and a loose one
  for other vocabularies.

Either way the chat template adds tokens around the message; the server's own ``usage.prompt_tokens``
is recorded with every request, so the report shows both counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate_core.errors import ConfigError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["COUNTED_APPROX", "COUNTED_TOKENIZER", "Prompt", "PromptSource"]

COUNTED_TOKENIZER = "tokenizer"
"""``PromptSource.counted_by`` when the served model's tokenizer counted the tokens."""
COUNTED_APPROX = "one-word-per-token"
"""``PromptSource.counted_by`` when the one-word-per-token approximation did."""

POOL = 256
"""Distinct prompts per benchmark; request ``i`` uses prompt ``i % POOL``."""

WORDS = (  # noqa: SIM905 -- a block of words reads better than 160 one-per-line literals
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there one all we their been has when who will more no if out so said what up its about into "
    "than them can only other new some could time these two may then do first any my now such like our over man me "
    "even most made after also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off come since against go "
    "came right used take three small part place found house water light city table river music paper story point"
).split()
"""Common English words, each a single token (leading space included) in GPT-2/Llama/Mistral vocabularies."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt: the user message and its length in tokens as counted (see the module docstring)."""

    text: str
    tokens: int


class PromptSource:
    """Makes prompt ``i`` on demand and keeps it (at most :data:`POOL` distinct prompts).

    Args:
        tokens: the wanted length of each prompt.
        seed: the seed of the word choice (prompt ``i`` is the same for the same seed).
        tokenizer: a directory with ``tokenizer.json`` to count exactly; None for the approximation.

    Raises:
        ConfigError: the tokenizer cannot be loaded.
    """

    def __init__(self, tokens: int, *, seed: int = 0, tokenizer: Path | None = None) -> None:
        self.tokens = tokens
        self.seed = seed
        self._tokenizer = _load(tokenizer) if tokenizer is not None else None
        self._cache: dict[int, Prompt] = {}

    @property
    def counted_by(self) -> str:
        """How prompt lengths are counted: :data:`COUNTED_TOKENIZER` or :data:`COUNTED_APPROX`."""
        return COUNTED_APPROX if self._tokenizer is None else COUNTED_TOKENIZER

    def __getitem__(self, index: int) -> Prompt:
        slot = index % POOL
        prompt = self._cache.get(slot)
        if prompt is None:
            prompt = self._cache[slot] = self._make(random.Random(self.seed * 1_000_003 + slot))
        return prompt

    def prepare(self, count: int) -> None:
        """Make the first ``count`` prompts now (before any timing starts)."""
        for index in range(min(count, POOL)):
            self[index]

    def _make(self, rng: random.Random) -> Prompt:
        words = rng.choices(WORDS, k=self.tokens)  # enough: every word is at least one token
        if self._tokenizer is None:
            return Prompt(" ".join(words), self.tokens)
        return self._fit(words)

    def _fit(self, words: list[str]) -> Prompt:
        """The longest prefix of ``words`` whose token count is at most ``tokens`` (binary search)."""
        low, high = 1, len(words)
        best = Prompt(words[0], self._count(words[0]))
        while low <= high:
            mid = (low + high) // 2
            text = " ".join(words[:mid])
            count = self._count(text)
            if count <= self.tokens:
                best, low = Prompt(text, count), mid + 1
            else:
                high = mid - 1
        return best

    def _count(self, text: str) -> int:
        assert self._tokenizer is not None
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _load(directory: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as e:  # the Rust tokenizer raises a plain Exception on an unreadable file
        raise ConfigError(
            f"--tokenizer {directory}: tokenizer.json cannot be loaded ({e}): give a fast tokenizer"
        ) from e

"""``--hardware best``: per model, the fastest hardware target that passed last time, else a rule.

History comes from the store in one query for every model (``accelerate_core.hardware_history``); each
model's choice is then a dict lookup and a scan of its few targets (fastest first), so a decision costs
microseconds (``benchmarks/bench_best.py``). A target is a kind and a device model (``cuda:h100-80gb-hbm3``);
one that no live node (or this machine) offers now is passed over.

Cold start (no passing result of the model on any target available now): the rule prefers an accelerator,
``cuda`` > ``rocm`` > ``mps`` > ``cpu``, except for a small model (under :data:`SMALL_MODEL_PARAMS` parameters),
whose forward is too short for an accelerator to win over its launch and copy overhead: ``cpu`` first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from accelerate_core.constants import STATUS_DONE
from accelerate_core.errors import ConfigError
from accelerate_core.hardware_history import Seen

if TYPE_CHECKING:
    from scheduler.plan import PlanOptions

RULE_ORDER: Final = ("cuda", "rocm", "mps", "cpu")
"""The cold-start preference among the kinds available."""

SMALL_MODEL_PARAMS: Final = 1_000_000
"""Below this many parameters a model runs on ``cpu`` first when there is no history."""


@dataclass(frozen=True, slots=True)
class Available:
    """The targets that can run jobs now: the kinds, and each kind's device models (none listed: any)."""

    kinds: tuple[str, ...]
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def offers(self, seen: Seen) -> bool:
        """Whether ``seen``'s target can run now (a target without a recorded model: any node of its kind)."""
        if seen.hardware not in self.kinds:
            return False
        live = self.models.get(seen.hardware, ())
        return not seen.device_model or not live or seen.device_model in live


@dataclass(frozen=True, slots=True)
class Choice:
    """Where one model runs, and why: ``history`` (the fastest passing target last time) or ``rule``."""

    model: str
    hardware: str
    device_model: str | None
    source: str
    why: str
    seen: tuple[Seen, ...] = ()

    @property
    def target(self) -> str:
        """``kind:model`` or the kind."""
        return f"{self.hardware}:{self.device_model}" if self.device_model else self.hardware

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "model": self.model,
            "hardware": self.target,
            "source": self.source,
            "why": self.why,
            "seen": [s.to_dict() for s in self.seen],
        }


def choose(model: str, param_count: int | None, history: Mapping[str, Sequence[Seen]], now: Available) -> Choice:
    """The target of ``model``: the fastest one that passed last time and runs now, else the cold-start rule.

    Args:
        model: the row's name (a model type, a checkpoint's label).
        param_count: its parameters, when known (the rule's size test).
        history: :func:`accelerate_core.hardware_history.latest_outcomes` (each model's targets fastest first).
        now: the targets available.

    Raises:
        ConfigError: nothing is available at all.
    """
    seen = tuple(history.get(model, ()))
    for s in seen:
        if s.status == STATUS_DONE and s.p50_s is not None and now.offers(s):
            why = f"fastest that passed last time: {s.target} p50 {s.p50_s * 1e3:.3g} ms (run {s.run_id})"
            return Choice(model, s.hardware, s.device_model or None, "history", why, seen)
    return _rule(model, param_count, seen, now)


def _rule(model: str, param_count: int | None, seen: tuple[Seen, ...], now: Available) -> Choice:
    order = [k for k in RULE_ORDER if k in now.kinds]
    if not order:
        raise ConfigError("--hardware best found no hardware to run on: start a worker, or name the kinds")
    passed = "no passing result on hardware available now" if seen else "no history"
    small = param_count is not None and param_count < SMALL_MODEL_PARAMS and "cpu" in order
    if small:
        why = f"{passed}; small model ({param_count:,} parameters < {SMALL_MODEL_PARAMS:,}): cpu first"
        return Choice(model, "cpu", None, "rule", why, seen)
    why = f"{passed}; rule {' > '.join(RULE_ORDER)} among the available ({', '.join(order)})"
    return Choice(model, order[0], None, "rule", why, seen)


def apply_choices(options: PlanOptions, choices: Sequence[Choice]) -> PlanOptions:
    """``options`` planning each model on its choice only (the kinds chosen, in the rule's order)."""
    chosen = {c.hardware for c in choices}
    kinds = tuple(k for k in RULE_ORDER if k in chosen)
    return replace(options, hardware=kinds, picks={c.model: (c.hardware, c.device_model) for c in choices})

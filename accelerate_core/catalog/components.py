"""Components: sub-models checked through their parent's forward pass, and proven to have run there.

A component type is a sub-config with no model class of its own (``sam_prompt_encoder``), or a
sub-model whose forward needs tensors only its parent computes (the exceptions table says so with
``component_of``). Its parent is the table's ``component_of``, else the runnable type whose default
config holds a sub-config of the component's type.

Covering is measured, not assumed: during the parent's forward pass :func:`watch` records the model
type of every sub-module that ran (its ``config.model_type``, or the component whose config class
names it: ``SamPromptEncoderConfig`` -> ``SamPromptEncoder``). :func:`resolve` then marks a component
row passed only when its parent passed *and* a module of the component ran in that pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

STATUS_PASS = "pass"
STATUS_SKIPPED = "skipped"
REASON_COMPONENT = "component"


def sub_types(tree: Any, found: set[str]) -> set[str]:
    """Every ``model_type`` of a nested sub-config in a config dict."""
    if isinstance(tree, dict):
        for value in tree.values():
            if isinstance(value, dict):
                kind = value.get("model_type")
                if isinstance(kind, str):
                    found.add(kind)
                sub_types(value, found)
    return found


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def holders(configs: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """Sub-config model type -> the types whose config (from ``(type, config dict)`` pairs) holds it."""
    found: dict[str, list[str]] = {}
    for model_type, config in configs:
        for kind in sub_types(config, set()) - {model_type}:
            found.setdefault(kind, []).append(model_type)
    return found


def find_parent(model_type: str, holding: Sequence[str], runnable: Callable[[str], bool]) -> str | None:
    """The parent among ``holding`` (types whose config holds ``model_type``): runnable first, then closest name.

    A component held only by types that cannot run still names one, so its row says why it is untested.
    """
    candidates = sorted(holding, key=lambda t: (not runnable(t), -_shared_prefix(t, model_type), len(t), t))
    return candidates[0] if candidates else None


def _stem(config_class_name: str) -> str:
    return config_class_name.removesuffix("Config")


def _kinds(module: Any, root: str, stems: dict[str, str]) -> set[str]:
    """The component model types a sub-module belongs to."""
    kinds = set()
    config = getattr(module, "config", None)
    kind = getattr(config, "model_type", None)
    if isinstance(kind, str) and kind != root:
        kinds.add(kind)
    name = type(module).__name__
    kinds.update(t for stem, t in stems.items() if name.startswith(stem))
    return kinds


def _sub_configs(config: Any) -> dict[str, str]:
    """Config-class stem -> model type of every sub-config object of a model's config (recursively)."""
    stems: dict[str, str] = {}
    stack = [config]
    while stack:
        node = stack.pop()
        for value in vars(node).values():
            kind = getattr(value, "model_type", None)
            if isinstance(kind, str) and hasattr(value, "to_dict") and value is not node:
                stems.setdefault(_stem(type(value).__name__), kind)
                stack.append(value)
    return stems


@contextmanager
def watch(model: Any) -> Iterator[set[str]]:
    """Record the sub-config model types whose modules run inside the ``with`` block.

    Yields:
        The set, filled as the modules run (hooks are removed on exit).
    """
    root = getattr(model.config, "model_type", "")
    stems = {stem: kind for stem, kind in _sub_configs(model.config).items() if kind != root}
    ran: set[str] = set()
    handles = []
    for module in model.modules():
        kinds = _kinds(module, root, stems)
        if kinds:
            handles.append(module.register_forward_pre_hook(lambda *_, k=frozenset(kinds): ran.update(k)))
    try:
        yield ran
    finally:
        for handle in handles:
            handle.remove()


def _coverage(row: dict[str, Any], parent: dict[str, Any] | None) -> tuple[bool, str]:
    """(covered, why) for a component row and its parent's row."""
    name = row["tested_through"]
    if parent is None:
        return False, f"tested through {name}, which was not checked in this run: check {name}"
    if parent["status"] != STATUS_PASS:
        why = f"{parent.get('reason_class')}: {parent.get('reason')}"[:300]
        return False, f"tested through {name}, which does not pass ({why})"
    if row["model_type"] not in parent.get("components_run", []):
        return False, f"tested through {name}, but {name}'s forward pass did not run it"
    return True, f"tested through {name}: its modules ran in {name}'s checked forward pass"


def _covered(row: dict[str, Any], parent: dict[str, Any] | None) -> dict[str, Any]:
    covered, why = _coverage(row, parent)
    reason = f"{row['reason']}; {why}" if row.get("reason") else why
    return {**row, "reason": reason, "status": STATUS_PASS if covered else row["status"]}


def resolve(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outcome rows where each component row takes its status from its parent's forward pass.

    A component passes when its parent passed and one of its modules ran in that pass; otherwise it
    stays skipped, with a reason saying what its parent lacks.
    """
    by_type = {r["model_type"]: r for r in rows}
    out = []
    for row in rows:
        parent = row.get("tested_through")
        if parent and row.get("reason_class") == REASON_COMPONENT and row["status"] == STATUS_SKIPPED:
            out.append(_covered(row, by_type.get(parent)))
        else:
            out.append(row)
    return out

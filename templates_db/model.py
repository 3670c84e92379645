"""What a stored template version is, and which one a model gets: pure data, no DuckDB, no jinja2.

A template has a *scope* (``default``, ``modality``, ``family`` or ``model_type``, with a scope value
for the last three) and a *hardware* (``any`` or one hardware kind). Lookup picks the most specific
latest version that matches a model on a hardware kind, in this order::

    model_type + hardware  >  model_type  >  family + hardware  >  modality + hardware
      >  family  >  modality  >  default + hardware  >  default
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from accelerate_core.catalog.index import FAMILIES, MODALITIES
from accelerate_core.constants import HARDWARE_KINDS
from accelerate_core.contracts import TemplateRef
from accelerate_core.errors import ConfigError, TemplateNotFoundError

SCOPE_DEFAULT: Final = "default"
SCOPE_MODALITY: Final = "modality"
SCOPE_FAMILY: Final = "family"
SCOPE_MODEL_TYPE: Final = "model_type"
SCOPES: Final = (SCOPE_DEFAULT, SCOPE_MODALITY, SCOPE_FAMILY, SCOPE_MODEL_TYPE)
"""Every scope a template can have, least specific first."""

HARDWARE_ANY: Final = "any"
TEMPLATE_HARDWARE: Final = (HARDWARE_ANY, *HARDWARE_KINDS)
"""Every hardware value a template can have: ``any`` or one hardware kind."""

# Rank of a scope in the lookup order; a hardware-specific template adds _HW_BONUS, which lifts
# family/modality + hardware above a plain family/modality template but never above a wider scope.
_SCOPE_RANK: Final = {SCOPE_DEFAULT: 0, SCOPE_MODALITY: 10, SCOPE_FAMILY: 11, SCOPE_MODEL_TYPE: 30}
_HW_BONUS: Final = 5


def sha256_text(body: str) -> str:
    """The sha256 hex digest of a template body (UTF-8)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def check_scope(scope: str, scope_value: str | None, hardware: str) -> str | None:
    """Validate a scope, its value and a hardware; return the normalised scope value.

    Raises:
        ConfigError: an unknown scope or hardware, or a scope value missing (or given for ``default``).
    """
    if scope not in SCOPES:
        raise ConfigError(f"unknown template scope {scope!r}: use one of {', '.join(SCOPES)}")
    if hardware not in TEMPLATE_HARDWARE:
        raise ConfigError(f"unknown template hardware {hardware!r}: use one of {', '.join(TEMPLATE_HARDWARE)}")
    value = (scope_value or "").strip() or None
    if scope == SCOPE_DEFAULT and value is not None:
        raise ConfigError(f"scope 'default' takes no scope value (got {value!r}): drop --scope-value")
    if scope != SCOPE_DEFAULT and value is None:
        raise ConfigError(f"scope {scope!r} needs a value, e.g. --scope-value bert: add --scope-value")
    known = {SCOPE_MODALITY: MODALITIES, SCOPE_FAMILY: FAMILIES}.get(scope)
    if known is not None and value not in known:
        raise ConfigError(f"{scope} {value!r} is unknown: use one of {', '.join(known)}")
    return value


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One stored version of a named template (versions are never overwritten)."""

    name: str
    version: int
    scope: str
    scope_value: str | None
    hardware: str
    body: str
    sha256: str
    created_at: float
    note: str = ""

    def to_ref(self) -> TemplateRef:
        """The template as it travels to a worker (body + sha, no DB needed there)."""
        return TemplateRef(name=self.name, sha=self.sha256, body=self.body, version=self.version)

    def to_dict(self, *, body: bool = True) -> dict[str, Any]:
        """Plain JSON data; ``body=False`` leaves the body out (for listings)."""
        data = asdict(self)
        if not body:
            del data["body"]
        return data

    @property
    def scope_label(self) -> str:
        """``default`` or ``scope=value``, for listings."""
        return self.scope if self.scope_value is None else f"{self.scope}={self.scope_value}"

    def specificity(self, model_type: str, modality: str, family: str, hardware: str) -> int | None:
        """How specifically this version matches a model on a hardware kind; None when it does not match."""
        if self.hardware not in (HARDWARE_ANY, hardware):
            return None
        wanted = {SCOPE_MODEL_TYPE: model_type, SCOPE_FAMILY: family, SCOPE_MODALITY: modality}.get(self.scope)
        if self.scope != SCOPE_DEFAULT and self.scope_value != wanted:
            return None
        return _SCOPE_RANK[self.scope] + (_HW_BONUS if self.hardware != HARDWARE_ANY else 0)


def pick(
    versions: Iterable[TemplateVersion], model_type: str, modality: str, family: str, hardware: str
) -> TemplateVersion:
    """Return the most specific of ``versions`` (the latest of each name) for a model on a hardware kind.

    Raises:
        TemplateNotFoundError: no version matches (not even a default one).
    """
    best: tuple[int, str, TemplateVersion] | None = None
    for version in versions:
        rank = version.specificity(model_type, modality, family, hardware)
        # Ties cannot happen through the store (one name per scope/value/hardware); sort by name anyway.
        if rank is None:
            continue
        if best is None or rank > best[0] or (rank == best[0] and version.name < best[1]):
            best = (rank, version.name, version)
    if best is None:
        raise TemplateNotFoundError(
            f"no template matches {model_type} ({modality}/{family}) on {hardware}: run `accel templates sync`"
        )
    return best[2]

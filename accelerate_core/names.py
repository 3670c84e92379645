"""Names that become paths, keys or queue names: one strict pattern, checked wherever a name enters.

A run id becomes a folder (``reports_dir / run_id``) and part of Redis keys and job keys; a phase, a model
type, a template name and an endpoint name become parts of run ids, file names and table cells; a worker's
node name becomes a Celery destination. Each enters through the command line, a TOML file or a broker
message, and each is checked there with :func:`check_name` (or :func:`check_node_name`), so no name can
climb out of a folder (``..``, ``/``), carry markup (``[red]``, ``|``, ``<script>``) or split a key (``:``).

The pattern admits every model type of transformers (letters, digits, ``-``, ``_`` and ``.``).
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

from accelerate_core.errors import ConfigError

__all__ = ["NAME_MAX", "NAME_PATTERN", "NAME_RULE", "check_name", "check_node_name", "is_name"]

NAME_MAX: Final = 128
"""The longest name, in characters (a file name stays well below the usual 255-byte limit)."""

NAME_PATTERN: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")
"""A name: a letter or digit, then letters, digits, ``.``, ``_`` or ``-`` (and never ``..``)."""

NAME_RULE: Final = "use letters, digits, '.', '_' and '-' (starting with a letter or digit, no '..', at most 128)"
"""What a message says to do about a name that is refused."""


def is_name(value: object) -> TypeGuard[str]:
    """True when ``value`` is a string matching :data:`NAME_PATTERN` without ``..``."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None and ".." not in value


def check_name(value: object, what: str) -> str:
    """Return ``value`` when it is a valid name, else raise one line naming ``what``.

    Args:
        value: the name as it arrived (any type: a message may carry anything).
        what: where it came from, as the user knows it: ``"--phase"``, ``"run id"``, ``"JobSpec.model_type"``.

    Raises:
        ConfigError: not a valid name; the message shows the value escaped (``repr``), never raw.
    """
    if not is_name(value):
        raise ConfigError(f"{what} {_shown(value)} is not a valid name: {NAME_RULE}")
    return value


def check_node_name(value: object, what: str) -> str:
    """Return a Celery node name ``NAME@HOST`` when both parts are valid names, else raise one line.

    Raises:
        ConfigError: not ``NAME@HOST`` with two valid names.
    """
    if not isinstance(value, str) or value.count("@") != 1 or not all(map(is_name, value.split("@"))):
        raise ConfigError(f"{what} {_shown(value)} is not a valid node name: give NAME@HOST, each part: {NAME_RULE}")
    return value


def _shown(value: object) -> str:
    """The value as a message may show it: repr (escapes control characters), cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

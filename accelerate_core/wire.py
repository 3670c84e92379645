"""The wire format: every encode and decode of a contract, at a process edge, in one place.

A contract (:mod:`accelerate_core.contracts`, and the runner's ``JobRequest``/``ChildOutcome``) is an object
inside a process. It becomes JSON only where it leaves one: a broker message, the fork-server pipe, a
DuckDB JSON column, a status snapshot, a measurements file. :func:`encode` makes that JSON; :func:`decode`
is the only way back.

Versions
    Every encoded message carries the schema version under ``"v"``, as ``"MAJOR.MINOR"`` (nested objects
    do not: they share their message's). A new field *with a default* is a minor change; renaming,
    removing or retyping a field, or adding one without a default, is a major change.

The decoding rule (one rule, for every message)
    1. A message that is not an object, or whose ``"v"`` is not ``"MAJOR.MINOR"``, is a :class:`ContractError`.
    2. Another MAJOR (older or newer; a message without ``"v"`` predates versioning) is a
       :class:`VersionSkewError` naming both versions. Its receiver records it as a row with error class
       ``version-skew`` (the worker for a job it cannot decode, the writer for a result or run whose job
       keys it can still read), never a vanished message.
    3. The same MAJOR and a newer MINOR: keys this code does not know are ignored, each logged once per
       contract and key (an older reader meeting a newer optional field).
    4. The same MAJOR and the same or an older MINOR: an unknown key is a :class:`ContractError`
       (nothing newer can have written it: it is a typo or corruption).
    5. A missing required key, a value of the wrong type (``bool`` is not an ``int``; an ``int`` is
       accepted as a ``float``) or a value the contract's own checks refuse is a :class:`ContractError`
       naming the path (``JobSpec.bench.warmup``).

Whatever the input (any JSON value), :func:`decode` returns the contract or raises exactly one
:class:`ContractError`; no other exception escapes (a property test holds it to that).

Canonical bytes
    :func:`canonical` is the one byte form of an encoded message (sorted keys, no spaces, ``\\u`` escapes):
    what the fleet key signs (:mod:`accelerate_core.signing`). Decoding the JSON and encoding it again gives
    the same bytes, so a signature made before the broker is checked after it.

The decoder walks the dataclasses' own type hints, so a contract is declared once, as a dataclass, and
needs no converter of its own; it walks them once per type (a compiled decoder per hint, cached), and a value of
an exact JSON type its field takes as it is (a string for ``str``, a list of floats for ``tuple[float, ...]``)
costs no call: decoding is the writer's main cost per result. The hints it understands: ``str``, ``int``,
``float``, ``bool``, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``, ``dict[str, X]``, ``Any`` (free JSON)
and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from accelerate_core.errors import AccelerateError, ContractError, VersionSkewError

__all__ = [
    "SCHEMA_MAJOR",
    "SCHEMA_MINOR",
    "SCHEMA_VERSION",
    "VERSION_KEY",
    "canonical",
    "decode",
    "encode",
    "message_version",
]

logger = logging.getLogger(__name__)

SCHEMA_MAJOR: Final = 1
"""The major schema version: messages of another major are not read (``version-skew`` rows)."""

SCHEMA_MINOR: Final = 6
"""The minor schema version: bump it with every new optional field of any contract."""

SCHEMA_VERSION: Final = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
"""This code's schema version, as every message it writes carries it."""

VERSION_KEY: Final = "v"
"""The key of the schema version in every encoded message."""

UNVERSIONED: Final = "0 (unversioned)"
"""The version :class:`VersionSkewError` names for a message without ``"v"`` (written before versioning)."""

T = TypeVar("T")
_VERSION = re.compile(r"^(\d{1,6})\.(\d{1,6})$", re.ASCII)
_logged_unknown: set[tuple[str, str]] = set()


def encode(obj: Any) -> dict[str, Any]:
    """A contract as a JSON-ready message: its fields (nested contracts too) plus ``"v"``.

    Raises:
        TypeError: ``obj`` is not a dataclass instance (a programming error, not bad input).
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"encode() takes a contract (a dataclass instance), not {type(obj).__name__}")
    return {VERSION_KEY: SCHEMA_VERSION, **_plain_fields(obj)}


def canonical(message: object) -> bytes:
    """The one byte form of a JSON message: keys sorted, no whitespace, ASCII (what a signature covers).

    Raises:
        TypeError: ``message`` holds something JSON cannot represent (a programming error).
        ValueError: it holds a circular reference.
    """
    return json.dumps(message, sort_keys=True, separators=(",", ":")).encode("ascii")


def _plain_fields(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


_JSON_SCALARS: Final = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    if type(value) in _JSON_SCALARS:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain_fields(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def message_version(cls: type[Any], data: object) -> tuple[int, int]:
    """The ``(major, minor)`` of a message meant to be a ``cls``, checked against this code's major.

    Raises:
        ContractError: not an object, or a malformed ``"v"``.
        VersionSkewError: another major version (or none at all).
    """
    name = cls.__name__
    if not isinstance(data, dict):
        raise ContractError(f"a {name} message must be a JSON object, got {_kind(data)}")
    if VERSION_KEY not in data:
        raise _skew(name, UNVERSIONED, newer=False)
    raw = data[VERSION_KEY]
    match = _VERSION.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ContractError(f"a {name} message has a malformed schema version {raw!r:.40}: expected 'MAJOR.MINOR'")
    major, minor = int(match[1]), int(match[2])
    if major != SCHEMA_MAJOR:
        raise _skew(name, raw, newer=major > SCHEMA_MAJOR)
    return major, minor


def _skew(name: str, theirs: str, *, newer: bool) -> VersionSkewError:
    advice = "upgrade this process" if newer else "upgrade its sender"
    return VersionSkewError(
        f"a {name} message of schema {theirs} cannot be read by this accelerate-fleet (schema {SCHEMA_VERSION}): "
        f"{advice} so both run the same major version",
        theirs=theirs,
        ours=SCHEMA_VERSION,
    )


def decode(cls: type[T], data: object) -> T:
    """The contract ``cls`` from an encoded message, by the rule in this module's docstring.

    Raises:
        ContractError: the message does not decode (one line naming the path and the problem).
        VersionSkewError: it was written by another major schema version (both versions named).
    """
    _major, minor = message_version(cls, data)
    assert isinstance(data, dict)  # message_version checked it
    body = {k: v for k, v in data.items() if k != VERSION_KEY}
    return _dataclass(cls, body, cls.__name__, minor > SCHEMA_MINOR)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


Decoder = Callable[[object, str, bool], Any]
"""A compiled decoder of one type hint: ``(value, path, lenient) -> decoded``; ``lenient`` ignores unknown keys."""

_SCALARS: Final = (str, int, float, bool)
_NONE: Final = type(None)
_WHOLE: Final[dict[Any, frozenset[type]]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    bool: frozenset({bool}),
    float: frozenset({float, int}),
}
"""Per scalar item type of a tuple, the exact element types of a list taken whole (ints widened to floats)."""


@functools.cache
def _decoder(hint: Any) -> Decoder:
    """The decoder of ``hint``, compiled once: each value then costs no walk of the type hints.

    A hint the wire cannot decode compiles to a decoder that raises ``TypeError`` when a value meets it (a
    programming error, as before compiling): a contract may declare one in a field no message carries.
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return _any
    if origin in (typing.Union, types.UnionType):
        return _optional(typing.get_args(hint))
    if origin is tuple:
        return _tuple(typing.get_args(hint)[0])
    if origin in (Mapping, dict):
        return _mapping(typing.get_args(hint)[1])
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return functools.partial(_dataclass, hint)
    if hint in _SCALARS:
        return functools.partial(_scalar_of, hint)
    return _unsupported(f"wire cannot decode type {hint!r} at {{path}}: extend accelerate_core.wire")


def _fast_types(hint: Any) -> frozenset[type]:
    """The exact types a value of ``hint`` may have to be taken as it is (the decoder's fast path)."""
    if hint is Any:
        return frozenset()
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    others = [a for a in args if a is not _NONE]
    if len(others) != 1 or others[0] not in _SCALARS:
        return frozenset()  # not a scalar or an optional one: its decoder decides
    return frozenset(args)


@functools.cache
def _plan(cls: Any) -> tuple[frozenset[str], tuple[tuple[str, Decoder, frozenset[type], bool, bool], ...]]:
    """``cls``'s field names and, per init field: its name, decoder, fast types, whether it is ``Any`` and
    whether it is required."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.init:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            hint = hints[f.name]
            out.append((f.name, _decoder(hint), _fast_types(hint), hint is Any, required))
    return frozenset(name for name, *_ in out), tuple(out)


def _dataclass(cls: type[T], data: object, path: str, lenient: bool) -> T:
    if not isinstance(data, dict):
        raise ContractError(f"{path} must be an object, got {_kind(data)}")
    names, known = _plan(typing.cast(Any, cls))
    if not names.issuperset(data):
        _unknown(cls.__name__, path, [k for k in data if k not in names], lenient=lenient)
    kwargs: dict[str, Any] = {}
    for name, decoder, fast, free, required in known:
        if name in data:
            value = data[name]
            if free or type(value) in fast:
                kwargs[name] = value
            else:
                kwargs[name] = decoder(value, f"{path}.{name}", lenient)
        elif required:
            raise ContractError(f"{path} has no {name!r}: a required key is missing")
    try:
        return cls(**kwargs)
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from e
    except (AccelerateError, TypeError, ValueError) as e:
        raise ContractError(f"{path} is invalid: {e}") from e


def _unknown(name: str, path: str, keys: list[Any], *, lenient: bool) -> None:
    if not lenient:
        raise ContractError(
            f"{path} has unknown keys {sorted(map(str, keys))}: not in schema {SCHEMA_VERSION} of {name}"
        )
    for key in keys:
        if (name, key) not in _logged_unknown:
            _logged_unknown.add((name, key))
            logger.warning("ignoring %s key %r of a newer schema minor (this is %s)", name, key, SCHEMA_VERSION)


def _any(value: object, path: str, lenient: bool) -> Any:
    return value


def _scalar_of(kind: type, value: object, path: str, lenient: bool) -> Any:
    return _scalar(kind, value, path)


def _unsupported(problem: str) -> Decoder:
    """A decoder that refuses every value: ``problem`` (with ``{path}`` in it) as a ``TypeError``."""

    def refuse(value: object, path: str, lenient: bool) -> Any:
        raise TypeError(problem.replace("{path}", path))

    return refuse


def _optional(args: tuple[Any, ...]) -> Decoder:
    others = [a for a in args if a is not _NONE]
    if len(others) != 1:
        refuse = _unsupported(f"wire decodes only 'X | None' unions, not {args!r} at {{path}}")
        return lambda value, path, lenient: None if value is None and _NONE in args else refuse(value, path, lenient)
    inner = _decoder(others[0])
    return lambda value, path, lenient: None if value is None else inner(value, path, lenient)


def _tuple(item: Any) -> Decoder:
    inner = _decoder(item)
    # raw samples: a list of one exact scalar type is taken whole (ints widened to floats), without a call or a
    # path string per element; any other list is decoded element by element, naming the one that is wrong
    whole = _WHOLE.get(item)

    def decode_tuple(value: object, path: str, lenient: bool) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise ContractError(f"{path} must be a list, got {_kind(value)}")
        if whole is not None:
            kinds = set(map(type, value))
            if kinds <= whole:
                return tuple(map(float, value)) if int in kinds and item is float else tuple(value)
        return tuple(inner(v, f"{path}[{i}]", lenient) for i, v in enumerate(value))

    return decode_tuple


def _mapping(item: Any) -> Decoder:
    inner = _decoder(item)

    def decode_mapping(value: object, path: str, lenient: bool) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ContractError(f"{path} must be an object, got {_kind(value)}")
        if item is Any and set(map(type, value)) <= {str}:
            return dict(value)
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ContractError(f"{path} must have string keys, got {_kind(k)}")
            out[k] = inner(v, _key_path(path, k), lenient)
        return out

    return decode_mapping


def _key_path(path: str, key: str) -> str:
    """``path.key``, or ``path['key']`` for a key a line cannot show as it is (a line break, a control
    character): an error naming it stays one line."""
    return f"{path}.{key}" if key.isprintable() else f"{path}[{key!r}]"


def _scalar(kind: type, value: object, path: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ContractError(f"{path} must be {_kind(kind())}, got {_kind(value)}")

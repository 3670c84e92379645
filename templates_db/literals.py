"""Python literals for generated code: the ``pyrepr`` filter.

Configs come from JSON (``true``/``false``/``null``), so pasting them as text into Python would be
wrong or unsafe; this module writes any JSON-like value as a Python expression that evaluates back to
an equal value, pretty-printed when it does not fit on one line.
"""

from __future__ import annotations

import math
from typing import Any

_SCALARS = (type(None), bool, int, float, str)


def pyrepr(value: Any, *, indent: int = 0, width: int = 100) -> str:
    """Return a Python expression equal to ``value``.

    Args:
        value: None, bool, int, float (inf/nan included), str, or lists, tuples and dicts of them
            (dict keys must be scalars).
        indent: the column the expression starts at (continuation lines are indented from it).
        width: lines longer than this are broken, one item per line.

    Raises:
        TypeError: a value of another type (a set, an object, ...) that has no safe literal.
    """
    flat = _flat(value)
    if len(flat) + indent <= width or not isinstance(value, list | tuple | dict) or not value:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{pad}{_flat(k)}: {pyrepr(v, indent=indent + 4, width=width)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
    items = [f"{pad}{pyrepr(v, indent=indent + 4, width=width)}," for v in value]
    return open_ + "\n" + "\n".join(items) + "\n" + " " * indent + close


def _flat(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(float(value))
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):  # str() first: a str enum's repr is not a literal
        return repr(str.__str__(value))
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_flat(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, _SCALARS):
                raise TypeError(f"pyrepr: dict key {key!r} of type {type(key).__name__} has no safe literal")
        return "{" + ", ".join(f"{_flat(k)}: {_flat(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"pyrepr: a {type(value).__name__} has no safe Python literal; pass JSON-like data")

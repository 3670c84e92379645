"""Untrusted text on the terminal: tables whose cells and titles are shown as written, never as rich markup.

Run ids, phases, model types, hosts and error messages come from users, stores and broker messages. Given to
rich as ``str``, ``[red]`` would restyle the output and ``[/x]`` would crash it (``MarkupError``); given as
:class:`~rich.text.Text` they are shown literally. Every table of the CLI is a :class:`PlainTable`, every
line is printed with ``markup=False`` (and the consoles have emoji codes off).
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Column, Table
from rich.text import Text


def plain(value: RenderableType | None) -> RenderableType | None:
    """``value`` made safe to render: a ``str`` becomes literal :class:`Text`; other renderables pass through."""
    return Text(value) if isinstance(value, str) else value


class PlainTable(Table):
    """A rich table that shows its string cells, headers and title literally (no markup, no emoji codes)."""

    def __init__(self, *headers: Column | str, title: str | None = None, **options: Any) -> None:
        columns = [Column(header=Text(h)) if isinstance(h, str) else h for h in headers]
        super().__init__(*columns, title=Text(title) if title is not None else None, **options)

    def add_column(self, header: RenderableType = "", *args: Any, **options: Any) -> None:
        """Add a column whose header is shown literally."""
        super().add_column(plain(header) or "", *args, **options)

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        """Add a row; string cells are shown literally."""
        super().add_row(*(plain(r) for r in renderables), **options)

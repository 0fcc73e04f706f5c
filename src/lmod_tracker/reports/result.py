"""What a question answers: a named table of typed columns, independent of any output format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: ``text``: a string; ``int``: a count; ``time``: an aware datetime (UTC, shown in the chosen
#: zone); ``date``: a ``datetime.date`` or a period label such as ``2026-03``.
Kind = Literal["text", "int", "time", "date"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = "text"
    title: str = ""

    @property
    def heading(self) -> str:
        return self.title or self.name.replace("_", " ")


@dataclass
class Table:
    """Rows answering one question. ``meta`` says what was asked (window, filters)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        index = [c.name for c in self.columns].index(name)
        return [row[index] for row in self.rows]

    def dicts(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

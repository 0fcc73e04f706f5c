"""Tables as text for people (a terminal table), CSV for spreadsheets, JSON for scripts.

CSV: one header row of column names, then one row per line; times are ISO 8601 with the
zone's offset (``2026-03-01T09:30:00+01:00``), counts are plain integers, empty cells are
missing values. A report of several tables (``health``) writes each after a ``# name`` line
and separates them by an empty line.

JSON: ``{"report", "generated", "timezone", "tables": [{"name", "title", "query",
"columns": [{"name", "type"}], "rows": [{column: value}], "notes"}]}``; times as in CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Sequence
from typing import Any

from lmod_tracker.reports.result import Table

__all__ = ["Zone", "in_zone", "to_csv", "to_json", "to_text", "zone"]

#: ``dt.UTC``, or None for the local zone of this machine (``TZ`` honoured): each time is
#: converted with the rules in force at that instant (daylight saving time included).
Zone = dt.tzinfo | None


def zone(utc: bool) -> Zone:
    return dt.UTC if utc else None


def in_zone(value: dt.datetime, tz: Zone) -> dt.datetime:
    return value.astimezone(tz) if tz is not None else value.astimezone()


def zone_name(tz: Zone) -> str:
    if tz is dt.UTC:
        return "UTC"
    key = os.environ.get("TZ", "").lstrip(":")
    if key and "/" in key:
        return key
    return dt.datetime.now().astimezone().tzname() or "local"


def _iso(value: Any, tz: Zone) -> Any:
    if isinstance(value, dt.datetime):
        return in_zone(value, tz).isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _cell(value: Any, tz: Zone) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return in_zone(value, tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_csv(tables: Sequence[Table], tz: Zone) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    many = len(tables) > 1
    for n, table in enumerate(tables):
        if many:
            if n:
                out.write("\n")
            out.write(f"# {table.name}\n")
        writer.writerow([c.name for c in table.columns])
        for row in table.rows:
            writer.writerow(["" if v is None else _iso(v, tz) for v in row])
    return out.getvalue()


def to_json(report: str, tables: Sequence[Table], tz: Zone) -> str:
    doc = {
        "report": report,
        "generated": in_zone(dt.datetime.now(dt.UTC), tz).isoformat(timespec="seconds"),
        "timezone": zone_name(tz),
        "tables": [{
            "name": t.name,
            "title": t.title,
            "query": {k: _iso(v, tz) for k, v in t.meta.items()},
            "columns": [{"name": c.name, "type": c.kind} for c in t.columns],
            "rows": [{c.name: _iso(v, tz) for c, v in zip(t.columns, row, strict=True)}
                     for row in t.rows],
            "notes": t.notes,
        } for t in tables],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_text(tables: Sequence[Table], tz: Zone, *, width: int | None = None,
            color: bool | None = None) -> str:
    """A table per section, rendered by rich (boxes on a terminal, plain ASCII otherwise)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RichTable

    out = io.StringIO()
    console = Console(file=out, width=width or 200, force_terminal=color,
                      no_color=not color, highlight=False, soft_wrap=False)
    for n, table in enumerate(tables):
        if n:
            console.print()
        rt = RichTable(title=f"{table.title} (times {zone_name(tz)})",
                       title_justify="left", box=box.SIMPLE_HEAD if color else box.ASCII2,
                       pad_edge=True)
        for c in table.columns:
            rt.add_column(c.heading, justify="right" if c.kind == "int" else "left",
                          overflow="fold")
        for row in table.rows:
            rt.add_row(*(_cell(v, tz) for v in row))
        if not table.rows:
            console.print(f"{table.title}: no rows")
        else:
            console.print(rt)
        for note in table.notes:
            console.print(f"({note})")
    return out.getvalue()

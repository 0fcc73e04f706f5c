"""The HTML report: one self-contained page (inline CSS and SVG charts, no script, nothing
fetched at view time) made of the same tables the other reports print.

Every table cell carries ``data-col`` (the column name) and, for numbers and times,
``data-value`` (the raw count, or the ISO time): scripts and tests read the page like CSV.
"""

from __future__ import annotations

import datetime as dt
import html as _html
from collections.abc import Sequence
from typing import Any

from lmod_tracker import __version__
from lmod_tracker.reports import queries
from lmod_tracker.reports.db import Reader
from lmod_tracker.reports.render import Zone, in_zone, zone_name
from lmod_tracker.reports.result import Table

__all__ = ["gather", "render"]

#: Top packages whose users are listed, and users listed per package.
USERS_OF = 5
USERS_PER = 10


async def gather(reader: Reader, cat: queries.Catalog, sc: queries.Scope, *,
                 installed: Sequence[tuple[str, str]] | None, top_n: int = 20) -> list[Table]:
    """The tables of the page, in order: top, trend (per month), top_users, [unused],
    then the health tables."""
    top, top_users = await queries.top_with_users(reader, cat, sc, limit=top_n,
                                                  users_of=USERS_OF, users_per=USERS_PER)
    trend = await queries.trend(reader, cat, sc, None, "month")
    tables = [top, trend, top_users]
    if installed is not None:
        tables.append(await queries.unused(reader, cat, sc, installed))
    tables.extend(await queries.health(reader, sc))
    return tables


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f6f7f9;color:#1d2330}
header{background:#1f3b57;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:18px 0;
 padding:14px 18px}
h2{font-size:17px;margin:0 0 10px}
.cards{display:flex;gap:14px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 16px;
 min-width:150px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3}
th{background:#f0f2f5}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#5b6576;font-size:12px}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
.wrap{overflow-x:auto}
"""


def _e(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def _shown(value: Any, tz: Zone) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return in_zone(value, tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _raw(value: Any, tz: Zone) -> str | None:
    if isinstance(value, dt.datetime):
        return in_zone(value, tz).isoformat(timespec="seconds")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _table(table: Table, tz: Zone) -> str:
    if not table.rows:
        return f'<p class="note" id="{_e(table.name)}-empty">No rows.</p>'
    head = "".join(f'<th class="{"n" if c.kind == "int" else ""}">{_e(c.heading)}</th>'
                   for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for c, v in zip(table.columns, row, strict=True):
            raw = _raw(v, tz)
            attr = f' data-value="{_e(raw)}"' if raw is not None else ""
            cls = ' class="n"' if c.kind == "int" else ""
            cells.append(f'<td data-col="{_e(c.name)}"{attr}{cls}>{_e(_shown(v, tz))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="wrap"><table id="{_e(table.name)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _bars(labels: Sequence[str], values: Sequence[int], title: str, *, width: int = 760,
          color: str = "#3b7dd8") -> str:
    """A horizontal bar chart as inline SVG."""
    if not values:
        return ""
    bar, gap, left, right = 18, 6, 190, 90
    height = len(values) * (bar + gap) + 10
    top = max(max(values), 1)
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * (bar + gap)
        w = max(1.0, (width - left - right) * value / top)
        parts.append(
            f'<text x="{left - 8}" y="{y + bar - 5}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{color}"'
            f' data-label="{_e(label)}" data-value="{value}"><title>{_e(label)}: {value:,}'
            f"</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + bar - 5}">{value:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _columns(labels: Sequence[str], loads: Sequence[int], users: Sequence[int], title: str,
             *, width: int = 1000, height: int = 300) -> str:
    """Loads per period as columns, distinct users as a line (right axis), inline SVG."""
    if not loads:
        return ""
    left, right, top, bottom = 70, 70, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(loads)
    step = plot_w / n
    max_l, max_u = max(max(loads), 1), max(max(users), 1)
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"'
             ' stroke="#8a94a6"/>']
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"'
                     ' stroke="#eceff3"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{round(max_l * frac):,}</text>"
                     f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="#d8613b">'
                     f"{round(max_u * frac):,}</text>")
    points = []
    every = max(1, n // 14)
    for i, (label, n_loads, n_users) in enumerate(zip(labels, loads, users, strict=True)):
        x = left + i * step
        h = plot_h * n_loads / max_l
        parts.append(f'<rect x="{x + step * 0.15:.1f}" y="{top + plot_h - h:.1f}"'
                     f' width="{step * 0.7:.1f}" height="{h:.1f}" fill="#3b7dd8"'
                     f' data-label="{_e(label)}" data-value="{n_loads}"><title>{_e(label)}:'
                     f" {n_loads:,} loads, {n_users:,} users</title></rect>")
        points.append(f"{x + step / 2:.1f},{top + plot_h * (1 - n_users / max_u):.1f}")
        if i % every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 16}"'
                         f' text-anchor="middle">{_e(label)}</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#d8613b"'
                 ' stroke-width="2"/>')
    parts.append(f'<text x="{left}" y="{height - 8}">■ loads (left axis)</text>'
                 f'<text x="{left + 160}" y="{height - 8}" fill="#d8613b">— distinct users'
                 " (right axis)</text></svg>")
    return "".join(parts)


def _section(key: str, title: str, body: str, notes: Sequence[str] = ()) -> str:
    extra = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return f'<section id="section-{key}"><h2>{_e(title)}</h2>{body}{extra}</section>'


def render(tables: Sequence[Table], tz: Zone) -> str:
    by_name = {t.name: t for t in tables}
    top, trend, top_users = by_name["top"], by_name["trend"], by_name["top_users"]
    meta = top.meta
    total = sum(trend.column("loads"))
    cards = [("loads in window", f"{total:,}", "total-loads"),
             ("packages shown", f"{len(top.rows):,}", "packages-shown"),
             ("window", f"{meta['since']} to {meta['until']}", "window")]
    if meta.get("cluster"):
        cards.append(("cluster", str(meta["cluster"]), "cluster"))
    card_html = "".join(f'<div class="card" id="card-{k}">{_e(label)}<b>{_e(v)}</b></div>'
                        for label, v, k in cards)
    sections = [
        f'<div class="cards">{card_html}</div>',
        _section("top", top.title,
                 _bars([str(r[0]) for r in top.rows], [int(r[2]) for r in top.rows],
                       "loads per package") + _table(top, tz), top.notes),
        _section("trend", trend.title,
                 _columns([str(r[0]) for r in trend.rows], [int(r[1]) for r in trend.rows],
                          [int(r[2]) for r in trend.rows], "loads and users per month")
                 + _table(trend, tz), trend.notes),
        _section("top_users", top_users.title, _table(top_users, tz)),
    ]
    if "unused" in by_name:
        unused = by_name["unused"]
        sections.append(_section("unused", unused.title, _table(unused, tz), unused.notes))
    for name in ("database", "instances", "files", "rejects"):
        if name in by_name:
            t = by_name[name]
            sections.append(_section(name, t.title, _table(t, tz), t.notes))
    generated = in_zone(dt.datetime.now(dt.UTC), tz).strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Module usage {_e(meta['since'])} to {_e(meta['until'])}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>Module usage</h1><p>{_e(meta['since'])} to {_e(meta['until'])}"
        f" (UTC days) · times in {_e(zone_name(tz))} · generated {_e(generated)}"
        f" by lmod-tracker {_e(__version__)}</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n")

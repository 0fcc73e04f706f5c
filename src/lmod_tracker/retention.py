"""Retention: delete load rows older than a window, in small transactions.

``db prune --older-than 13mo`` and the daemon's optional ``retention`` setting both end in
:func:`prune`. Only ``module_usage`` rows (by ``load_time``) and ``rejected_line`` rows (by
``seen_at``) older than the cut-off are deleted; ``usage_daily``, the dimension tables and the
checkpoints are never touched, so reports over the rollup still see every load ever counted.

Rows are deleted by primary-key range, at most ``step`` ids per transaction: each transaction
locks a short id range only, and a replica applies many small deletes instead of one huge one.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

_AGE = re.compile(r"\s*([0-9]{1,5})\s*(d|w|mo|y)\s*\Z")
_DATE = re.compile(r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})\s*\Z")
ACCEPTED = "Nd (days), Nw (weeks), Nmo (months), Ny (years) or a date YYYY-MM-DD"
#: Tables pruned, in this order.
TABLES = ("module_usage", "rejected_line")


class Prunable(Protocol):
    async def prune_span(self, table: str, before: str) -> tuple[int, int] | None: ...

    async def prune_range(self, table: str, before: str, low: int, high: int) -> int: ...


@dataclass(frozen=True)
class PruneResult:
    before: str
    #: rows deleted per table
    deleted: dict[str, int]


def _months_back(when: dt.datetime, months: int) -> dt.datetime:
    index = when.year * 12 + when.month - 1 - months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def parse_age(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """The cut-off that ``text`` names: rows older than it are deleted (UTC, naive).

    ``13mo`` is 13 calendar months before ``now`` (the same day of the month, or the last day
    of a shorter month), ``400d`` 400 days, ``52w`` 52 weeks, ``2y`` 2 years; ``2025-01-01``
    means midnight UTC at the start of that day. Raises ``ValueError`` for anything else (and
    for a window of 0).
    """
    if now is None:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    m = _DATE.match(text)
    if m is not None:
        try:
            return dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid date") from None
    m = _AGE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not an age: use {ACCEPTED}")
    n, unit = int(m.group(1)), m.group(2)
    if n == 0:
        raise ValueError(f"{text!r}: a window of 0 would delete everything")
    if unit == "d":
        return now - dt.timedelta(days=n)
    if unit == "w":
        return now - dt.timedelta(weeks=n)
    return _months_back(now, n * 12 if unit == "y" else n)


def cutoff_text(text: str, now: dt.datetime | None = None) -> str:
    """:func:`parse_age` as the stores' UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return parse_age(text, now).strftime("%Y-%m-%d %H:%M:%S.%f")


async def prune(store: Prunable, before: str, *, step: int = 10_000, pause: float = 0.0,
                progress: Callable[[int, int], None] | None = None) -> PruneResult:
    """Delete fact rows and rejects older than ``before`` (UTC text), ``step`` ids per
    transaction, sleeping ``pause`` seconds between transactions.

    ``progress(advance, total)`` is called after each transaction with the ids covered (total:
    the ids of every range to walk, known before the first delete).
    """
    spans = {t: await store.prune_span(t, before) for t in TABLES}
    total = sum(hi - lo + 1 for lo, hi in (s for s in spans.values() if s is not None))
    deleted = dict.fromkeys(TABLES, 0)
    for table, span in spans.items():
        if span is None:
            continue
        low, high = span
        for start in range(low, high + 1, step):
            end = min(start + step, high + 1)
            deleted[table] += await store.prune_range(table, before, start, end)
            if progress is not None:
                progress(end - start, total)
            if pause:
                await asyncio.sleep(pause)
    return PruneResult(before, deleted)


async def apply_retention(store: Any, settings: Any, now: dt.datetime | None = None
                          ) -> PruneResult | None:
    """What the daemon runs now and then: prune by the ``retention`` setting, if set.

    Short transactions with a pause between them, so the writer's commits go on meanwhile.
    """
    if not settings.retention:
        return None
    return await prune(store, cutoff_text(settings.retention, now), pause=0.01)

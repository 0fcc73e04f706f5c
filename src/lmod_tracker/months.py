"""The monthly rollup: ``usage_monthly`` built from ``usage_daily`` for months that have ended.

A year of reports reads 12 monthly rows per (cluster, module version, user) instead of one per
day used. The daily rollup stays the truth: it is written in the transaction of the facts, and
the monthly one is derived from it, a month at a time, outside that transaction, so ingest pays
for it only a one-row delete per batch. ``usage_month`` lists the months whose monthly rows
agree with the daily ones; the writer deletes a month's entry in the transaction of any change
to that month's daily rows (a late line, a backfill), and reports read only listed months from
``usage_monthly`` (the rest from ``usage_daily``), so an answer never depends on whether or
when a month was built.

The daemon builds what is missing once it has read its files to their end after starting (a
backlog still being read would unmark the months again), then hourly. ``lmod-tracker db months``
does it at once: after a backfill with ``ingest``, or from cron next to ``run --once``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol


class MonthStore(Protocol):
    async def unbuilt_months(self, today: dt.date) -> list[str]: ...

    async def build_month(self, month: str) -> int: ...


def next_month(day: dt.date) -> dt.date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


#: How often the daemon looks for months to build (and once at start).
INTERVAL = 3600.0


async def build_months(store: MonthStore, today: dt.date | None = None,
                       done: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Build every month that ended before ``today`` (UTC) and is not built, oldest first,
    one transaction each; the rows written per month. ``done(month, rows)`` after each."""
    if today is None:
        today = dt.datetime.now(dt.UTC).date()
    built: dict[str, int] = {}
    for month in await store.unbuilt_months(today):
        built[month] = await store.build_month(month)
        if done is not None:
            done(month, built[month])
    return built

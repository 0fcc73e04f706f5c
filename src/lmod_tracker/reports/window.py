"""Report windows (``--since 30d``, ``--until 2026-01-31``), module specs and version order.

Windows are whole days: the rollup (``usage_daily``) keeps one row per UTC day, so a window is
a range of UTC days, both ends included. ``30d`` is the last 30 days with today (UTC), ``12w``
the last 84 days, ``6mo`` the days after the same day-of-month 6 months ago, ``1y`` 12 months.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["ReportError", "Window", "parse_day", "resolve_window", "version_key"]

_RELATIVE = re.compile(r"\s*(\d+)\s*(d|w|mo|m|y)\s*\Z", re.IGNORECASE)
_TOKENS = re.compile(r"\d+|\D+")


class ReportError(Exception):
    """A bad argument (date, window, module, user, cluster): one line, exit 2."""


@dataclass(frozen=True)
class Window:
    """The UTC days ``since`` .. ``until``, both included."""

    since: dt.date
    until: dt.date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def start_text(self) -> str:
        """The first instant of the window, as stored (``YYYY-MM-DD 00:00:00.000000``)."""
        return f"{self.since.isoformat()} 00:00:00.000000"

    def end_text(self) -> str:
        """The first instant after the window (exclusive bound on load times)."""
        return f"{(self.until + dt.timedelta(days=1)).isoformat()} 00:00:00.000000"


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _months_back(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for d in range(day.day, 0, -1):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise ReportError(f"cannot go back {months} months from {day}")  # pragma: no cover


def parse_day(text: str, option: str, *, today: dt.date, end: bool) -> dt.date:
    """A date (``2026-01-31``) or an age (``30d``, ``12w``, ``6mo``, ``1y``) as a UTC day.

    An age as ``--since`` is the first day of the last N units (today included); as
    ``--until`` it is the day N units ago.
    """
    m = _RELATIVE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2).lower()
        if n > 100_000:
            raise ReportError(f"{option} {text!r}: too far back")
        if unit == "d":
            back = today - dt.timedelta(days=n)
        elif unit == "w":
            back = today - dt.timedelta(weeks=n)
        else:
            back = _months_back(today, n * (12 if unit == "y" else 1))
        if end:
            return back
        if n == 0:
            raise ReportError(f"{option} {text!r}: an empty window; use at least 1{unit}")
        return back + dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(
            f"{option} {text!r}: not a date (YYYY-MM-DD) or an age (30d, 12w, 6mo, 1y)"
        ) from None


def resolve_window(since: str | None, until: str | None, *, default_since: str,
                   today: dt.date | None = None) -> Window:
    today = today or utc_today()
    first = parse_day(default_since if since is None else since, "--since", today=today,
                      end=False)
    last = today if until is None else parse_day(until, "--until", today=today, end=True)
    if first > last:
        raise ReportError(f"empty window: --since {first} is after --until {last}")
    return Window(first, last)


def version_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders versions as versions: ``9`` < ``12`` < ``12.2.0`` < ``12.10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in _TOKENS.findall(text))


def module_key(name: str, version: str) -> tuple[str, tuple[tuple[int, int, str], ...]]:
    return (name.lower(), version_key(version))


def module_text(name: str, version: str) -> str:
    return f"{name}/{version}" if version else name

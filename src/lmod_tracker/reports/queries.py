"""One function per question, with the SQL it runs on each backend.

Every question but ``jobs`` reads the daily rollup ``usage_daily`` (one row per UTC day,
cluster, module version and user; it stays when old facts are pruned), so a report costs what
the window holds in rollup rows, not in loads. Where a window covers whole months that are
built (``usage_month``, see months.py), the heavy statements read those months from
``usage_monthly`` instead, a twelfth of the rows for a year or less (:class:`Part`): the same
statement, pointed at the other table, gives the same sums, and distinct users are counted
over the union of both. ``jobs`` needs the job ids, which only the facts
(``module_usage``) have. Small dimension tables (package, user, cluster) are read whole and
matched in Python: module patterns, ``--exclude`` expressions and version order need no SQL.

SQL is written once with ``?`` placeholders where both backends agree (``_q`` makes them
``%s`` for MariaDB) and twice where they differ (date arithmetic). Nothing here formats
output: each function returns :class:`~lmod_tracker.reports.result.Table` values.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from lmod_tracker.errors import SchemaError
from lmod_tracker.months import next_month
from lmod_tracker.reports.db import Reader
from lmod_tracker.reports.result import Column, Table
from lmod_tracker.reports.window import (
    ReportError,
    Window,
    module_key,
    module_text,
    version_key,
)

Every = Literal["day", "week", "month"]
K = TypeVar("K")
#: before any load: "since the beginning"
_EPOCH = dt.date(1970, 1, 1)
_GLOB = re.compile(r"[*?\[]")
_CHUNK = 500
#: windows up to this many days are given as a list of days with --cluster (see _Filter.days)
_DAY_POINTS = 1000
#: at most this many parameters in one statement: the list of days is used only when it fits
#: with the others (SQLite builds before 3.32, such as RHEL 8's 3.26, allow 999)
MAX_PARAMS = 900

# ------------------------------------------------------------------------------------ SQL
# Shared text uses ``?``; _q() turns it into ``%s`` for MariaDB. {where} holds the filters.
# {g} is ``+`` on SQLite: without it SQLite's planner reads a window's rows through the
# (package_id, day) index to save the sort, one table lookup per row. Timings of these
# statements: README.md, "How fast" (10M loads, measured by bench/reports.py).

SQL_TOP_VERSION = """
SELECT r.package_id, SUM(r.{loads}) AS loads, COUNT(DISTINCT r.user_id) AS users,
       MIN(r.first_load), MAX(r.last_load)
FROM usage_daily r
WHERE {days}{where}
GROUP BY {g}r.package_id"""

#: the derived table of SQL_TOP_PACKAGE alone (its rows summed in Python)
SQL_TOP_PAIRS = """
SELECT r.package_id, r.user_id, SUM(r.{loads}), MIN(r.first_load), MAX(r.last_load)
FROM usage_daily r
WHERE {days}{where}
GROUP BY {g}r.package_id, {g}r.user_id"""

SQL_TOP_PACKAGE = """
SELECT p.name, SUM(t.loads) AS loads, COUNT(DISTINCT t.user_id) AS users,
       MIN(t.first_load), MAX(t.last_load), COUNT(DISTINCT p.version)
FROM (SELECT r.package_id, r.user_id, SUM(r.{loads}) AS loads,
             MIN(r.first_load) AS first_load, MAX(r.last_load) AS last_load
      FROM usage_daily r
      WHERE {days}{where}
      GROUP BY {g}r.package_id, {g}r.user_id) t
JOIN package p ON p.id = t.package_id
GROUP BY p.name"""

#: top with a limit: the window's loads per version (no distinct count, no times: the cheapest
#: aggregate of a year of rows), then only for the versions or packages shown (and ties at the
#: cut) their distinct users, read from the (package_id, day) index alone (it holds cluster_id
#: and user_id too), and their first and last load, from the first and last day each version
#: was loaded on (index probes).
SQL_TOP_LOADS = """
SELECT r.package_id, SUM(r.{loads})
FROM usage_daily r
WHERE {days}{where}
GROUP BY {g}r.package_id"""

SQL_TOP_USERS_OF_VERSIONS = """
SELECT r.package_id, COUNT(DISTINCT r.user_id)
FROM usage_daily r{ix}
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}
GROUP BY r.package_id"""

SQL_TOP_USERS_OF_PACKAGE = """
SELECT COUNT(DISTINCT r.user_id)
FROM usage_daily r{ix}
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}"""

#: the same over a window in several parts (built months and days): the pairs, counted in
#: Python, since a user of two parts is one user
SQL_TOP_USER_PAIRS = """
SELECT DISTINCT r.package_id, r.user_id
FROM usage_daily r{ix}
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}"""

#: The first (last, {order} DESC) day of the window a version was loaded on, then the first
#: (last, {agg} MAX) load of that day. ORDER BY .. LIMIT 1 walks the index and stops at the
#: first row that passes the filters (MIN() with a filter outside the key reads every row).
SQL_EDGE_DAY = """
SELECT r.day FROM usage_daily r
WHERE r.package_id = ? AND r.day BETWEEN ? AND ?{where}
ORDER BY r.day{order} LIMIT 1"""

SQL_EDGE_TIME = """
SELECT {agg}(r.{col}) FROM usage_daily r
WHERE r.package_id = ? AND r.day = ?{where}"""

#: top_users of the html page: the loads and last load of each user of each version of the
#: packages listed, in one statement.
SQL_USERS_OF_PACKAGES = """
SELECT r.package_id, r.user_id, SUM(r.loads), MAX(r.last_load)
FROM usage_daily r
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}
GROUP BY r.package_id, r.user_id"""

SQL_USERS = """
SELECT r.user_id, r.package_id, SUM(r.loads), MIN(r.first_load), MAX(r.last_load)
FROM usage_daily r
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}
GROUP BY r.user_id, r.package_id"""

SQL_USER = """
SELECT r.package_id, SUM(r.loads), SUM(r.user_loads), COUNT(DISTINCT r.day),
       MIN(r.first_load), MAX(r.last_load)
FROM usage_daily r
WHERE r.user_id = ? AND r.day BETWEEN ? AND ?{where}
GROUP BY r.package_id"""

#: trend: one statement per period (a day, a week from Monday, a month), each a range of the
#: primary key: no sort of the window's rows by an expression (faster than one GROUP BY by a
#: date expression over a year on both engines).
SQL_TREND = """
SELECT SUM(r.loads), COUNT(DISTINCT r.user_id), COUNT(DISTINCT r.package_id)
FROM usage_daily r
WHERE r.day BETWEEN ? AND ?{where}"""

#: trend of a module per week or month on MariaDB: the period's days, every cluster and the
#: module's versions as points of the primary key (day, cluster_id, package_id), so it reads
#: exactly the module's rows, in key order, without the one primary-key lookup per row that
#: the (package_id, day) index needs for loads (measured: 5-8 ms a week instead of 11-20)
SQL_TREND_SEEK = """
SELECT SUM(r.loads), COUNT(DISTINCT r.user_id), COUNT(DISTINCT r.package_id)
FROM usage_daily r FORCE INDEX (PRIMARY)
WHERE r.day IN {days} AND r.cluster_id IN {clusters}{where}"""

#: trend per day: one statement, grouped by the primary key's first column (no sort)
SQL_TREND_DAYS = """
SELECT r.day, SUM(r.loads), COUNT(DISTINCT r.user_id), COUNT(DISTINCT r.package_id)
FROM usage_daily r
WHERE r.day BETWEEN ? AND ?{where}
GROUP BY r.day"""

#: trend without a module, per week or month: a period's distinct users (module versions)
#: counted as the users (versions) with a row in it, one probe each of the (user_id, day) or
#: (package_id, day) index instead of COUNT(DISTINCT) over the period's rows. SQLite: EXISTS
#: per user (version); MariaDB: GROUP BY on the index, read as a loose index scan (it would
#: turn the EXISTS into a join reading every row). Measured dearer than COUNT(DISTINCT) per day
#: (SQLite) and, on MariaDB, per week or with --cluster (no loose scan): those keep SQL_TREND.
SQL_TREND_LOADS = """
SELECT SUM(r.loads) FROM usage_daily r
WHERE r.day BETWEEN ? AND ?{where}"""

SQL_TREND_HAVING_ROWS = {
    "sqlite": """
SELECT COUNT(*) FROM {table} d
WHERE EXISTS (SELECT 1 FROM usage_daily r
              WHERE r.{column} = d.id AND r.day BETWEEN ? AND ?{where})""",
    "mysql": """
SELECT COUNT(*) FROM (SELECT r.{column}, MIN(r.day) FROM usage_daily r
                      WHERE r.day BETWEEN ? AND ?{where}
                      GROUP BY r.{column}) t""",
}

#: unused: the last day (up to the window's end) each module version was loaded on; one index
#: probe per version on (package_id, day). ORDER BY .. LIMIT 1, not MAX(): MariaDB reads every
#: row of the version for a MAX() under a range.
SQL_LAST_DAY = """
SELECT p.id, (SELECT r.day FROM usage_daily r
              WHERE r.package_id = p.id AND r.day <= ?{where}
              ORDER BY r.day DESC LIMIT 1) AS last_day
FROM package p"""

SQL_TOTALS = """
SELECT r.package_id, SUM(r.loads), MAX(r.last_load)
FROM usage_daily r
WHERE r.package_id IN {ids} AND r.day BETWEEN ? AND ?{where}
GROUP BY r.package_id"""

SQL_JOBS = """
SELECT m.jobid, m.user_id, m.package_id, COUNT(*), COUNT(DISTINCT m.host_id),
       MIN(m.load_time), MAX(m.load_time)
FROM module_usage m
WHERE m.package_id IN {ids} AND m.load_time >= ? AND m.load_time < ?
  AND m.jobid IS NOT NULL{where}
GROUP BY m.jobid, m.user_id, m.package_id"""

SQL_HEALTH_INSTANCES = """
SELECT instance, COUNT(*), MAX(updated_at), SUM(byte_offset)
FROM file_checkpoint
GROUP BY instance"""

SQL_HEALTH_FILES = """
SELECT instance, path, byte_offset, updated_at
FROM file_checkpoint
WHERE updated_at >= ?
ORDER BY updated_at DESC
LIMIT 200"""

SQL_HEALTH_REJECTS = """
SELECT reason, COUNT(*), MAX(seen_at)
FROM rejected_line
WHERE seen_at >= ? AND seen_at < ?
GROUP BY reason"""

SQL_HEALTH_NEWEST = {
    "newest load": "SELECT MAX(load_time) FROM module_usage",
    "newest rollup day": "SELECT MAX(day) FROM usage_daily",
    "schema version": "SELECT MAX(version) FROM lmod_tracker_schema",
}


def _q(reader: Reader, sql: str) -> str:
    """Shared SQL for this backend: ``?`` placeholders become ``%s`` on MariaDB."""
    if reader.backend == "mysql":
        return sql.replace("?", "%s")
    return sql


def _g(reader: Reader) -> str:
    return "+" if reader.backend == "sqlite" else ""


def _ix(reader: Reader) -> str:
    """MariaDB: count a few versions' distinct users from the (package_id, day) index alone (its
    optimizer prefers a range of the primary key and a sort). Only for statements the index
    covers (it holds cluster_id and user_id): forcing it on a statement that reads loads or
    times costs one primary-key lookup per row."""
    return " FORCE INDEX (ix_usage_daily_package_day)" if reader.backend == "mysql" else ""


def _in(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


def _chunks(values: Sequence[int], size: int = _CHUNK) -> Iterable[Sequence[int]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


# --------------------------------------------------------------------------- value helpers


def _time(value: Any) -> dt.datetime | None:
    """A stored UTC time (DATETIME or SQLite text) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC)


def _day(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


# ---------------------------------------------------------------------------------- scope


@dataclass
class Catalog:
    """The small dimension tables, read once per command."""

    packages: dict[int, tuple[str, str]]
    clusters: dict[str, int] = field(default_factory=dict)

    def text(self, package_id: int) -> str:
        return module_text(*self.packages[package_id])

    def match(self, spec: str) -> list[int]:
        """Package ids a module spec names: ``gcc`` (every version), ``gcc/12.2.0`` (one), or
        a shell pattern (``gcc/1*``, ``*mpi*``) matched against ``name/version`` and ``name``.
        A spec nothing matches is an error (exit 2)."""
        spec = spec.strip()
        if not spec:
            raise ReportError("empty module name")
        if _GLOB.search(spec):
            ids = [i for i, (n, v) in self.packages.items()
                   if fnmatch.fnmatchcase(module_text(n, v), spec)
                   or fnmatch.fnmatchcase(n, spec)]
        else:
            ids = [i for i, (n, _) in self.packages.items() if n == spec]
            if not ids:
                ids = [i for i, (n, v) in self.packages.items() if module_text(n, v) == spec]
        if not ids:
            near = sorted({n for n, _ in self.packages.values()
                           if n.lower() == spec.split("/")[0].lower()})
            hint = f" (known: {', '.join(near)})" if near else ""
            raise ReportError(f"unknown module {spec!r}: no load of it is recorded{hint};"
                              " a pattern such as 'gcc*' matches several")
        return ids

    def exclude(self, expressions: Sequence[str]) -> list[int]:
        """Package ids whose ``name/version`` matches one of the regular expressions."""
        patterns = []
        for expr in expressions:
            try:
                patterns.append(re.compile(expr))
            except re.error as exc:
                raise ReportError(f"--exclude {expr!r}: not a regular expression: {exc}"
                                  ) from None
        return [i for i in self.packages
                if any(p.search(self.text(i)) for p in patterns)]


async def catalog(reader: Reader) -> Catalog:
    if not await reader.table_exists("usage_daily"):
        raise SchemaError(f"{reader.describe()} has no usage rollup (schema version 3): run"
                          " `lmod-tracker db upgrade`")
    packages = {int(i): (str(n), str(v)) for i, n, v in
                await reader.rows("SELECT id, name, version FROM package")}
    clusters = {str(n): int(i) for i, n in await reader.rows("SELECT id, name FROM cluster")}
    return Catalog(packages, clusters)


@dataclass(frozen=True)
class Scope:
    """What every question is restricted to: a window of UTC days and maybe one cluster."""

    window: Window
    cluster: str | None = None
    cluster_id: int | None = None

    def meta(self) -> dict[str, Any]:
        return {"since": self.window.since.isoformat(), "until": self.window.until.isoformat(),
                "cluster": self.cluster}


def scope(cat: Catalog, window: Window, cluster: str | None) -> Scope:
    if cluster is None:
        return Scope(window)
    if cluster not in cat.clusters:
        known = ", ".join(sorted(cat.clusters)) or "none recorded"
        raise ReportError(f"unknown cluster {cluster!r} (known: {known})")
    return Scope(window, cluster, cat.clusters[cluster])


def _cluster_filter(sc: Scope, alias: str, params: list[Any]) -> str:
    if sc.cluster_id is None:
        return ""
    params.append(sc.cluster_id)
    return f" AND {alias}.cluster_id = ?"


async def _user_names(reader: Reader, ids: Iterable[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for chunk in _chunks(sorted(set(ids))):
        for i, n in await reader.rows(
                _q(reader, f"SELECT id, name FROM `user` WHERE id IN {_in(len(chunk))}"),
                list(chunk)):
            names[int(i)] = str(n)
    return names


def _days(window: Window) -> list[Any]:
    return [window.since.isoformat(), window.until.isoformat()]


@dataclass(frozen=True)
class Part:
    """A stretch of a window read from one rollup table: whole built months from
    ``usage_monthly`` (``first`` and ``last`` are first days of months), or days from
    ``usage_daily``. Statements are written against ``usage_daily r``; :meth:`sql` points one
    at ``usage_monthly``, whose columns are the same with ``month`` for ``day``."""

    monthly: bool
    first: dt.date
    last: dt.date

    def sql(self, text: str, monthly: str = "usage_monthly") -> str:
        """``text`` for this part (``monthly``: ``package_monthly`` for a statement that reads
        no user)."""
        if not self.monthly:
            return text
        return (text.replace("usage_daily", monthly).replace("r.day", "r.month")
                .replace("_package_day", "_package_month"))

    def params(self) -> list[Any]:
        return [self.first.isoformat(), self.last.isoformat()]

    def points(self) -> list[str]:
        """Each day (each month) of the part."""
        out, day = [], self.first
        while day <= self.last:
            out.append(day.isoformat())
            day = next_month(day) if self.monthly else day + dt.timedelta(days=1)
        return out


async def parts(reader: Reader, window: Window) -> list[Part]:
    """The window as parts, in order: each whole month of it that is built from
    ``usage_monthly``, everything else from ``usage_daily``."""
    built: set[dt.date] = set()
    if await reader.table_exists("usage_month"):
        built = {_day(m) for (m,) in await reader.rows(  # type: ignore[misc]
            _q(reader, "SELECT month FROM usage_month WHERE month BETWEEN ? AND ?"),
            _days(window))}
    out: list[Part] = []
    day = window.since
    while day <= window.until:
        after = next_month(day)
        monthly = day.day == 1 and after <= window.until + dt.timedelta(days=1) and day in built
        last = day if monthly else min(after - dt.timedelta(days=1), window.until)
        if out and out[-1].monthly == monthly:  # contiguous: one part
            out[-1] = Part(monthly, out[-1].first, last)
        else:
            out.append(Part(monthly, day, last))
        day = after if monthly else last + dt.timedelta(days=1)
    return out


# ---------------------------------------------------------------------------------- top

TIME_COLUMNS = [Column("first_load", "time"), Column("last_load", "time")]


@dataclass
class _Filter:
    """The conditions of one ``top`` question on ``usage_daily r``: SQL text (after the
    window) and its parameters, ready to append to a statement's own parameters."""

    where: str
    params: list[Any]
    loads: str
    #: every condition is on a column of the (package_id, day) index (user_loads is not)
    indexed: bool
    cluster: bool = False
    #: a condition on the user (then loads per version cannot come from package_monthly)
    user: bool = False
    #: versions --exclude names: dropped in Python from what the statements return (grouped
    #: by version), so no list of them, however long, reaches the SQL
    excluded: frozenset[int] = frozenset()

    def days(self, part: Part) -> tuple[str, list[Any]]:
        """The part in the statements that read it by primary key: with a cluster, each day
        (month) as a point, so (day, cluster_id) seeks that cluster's rows instead of reading
        every cluster's and filtering; the range when the points and the other parameters
        would pass MAX_PARAMS."""
        if self.cluster:
            points = part.points()
            if len(points) <= _DAY_POINTS and len(points) + len(self.params) <= MAX_PARAMS:
                return f"r.day IN {_in(len(points))}", points
        return "r.day BETWEEN ? AND ?", part.params()


async def _top_filter(reader: Reader, cat: Catalog, sc: Scope, *, user: str | None,
                      user_requested: bool, exclude: Sequence[str]) -> _Filter:
    params: list[Any] = []
    where = _cluster_filter(sc, "r", params)
    if user is not None:
        found = await reader.rows(_q(reader, "SELECT id FROM `user` WHERE name = ?"), [user])
        if not found:
            raise ReportError(f"unknown user {user!r}: no load of theirs is recorded")
        where += " AND r.user_id = ?"
        params.append(int(found[0][0]))
    if user_requested:
        where += " AND r.user_loads > 0"
    return _Filter(where, params, "user_loads" if user_requested else "loads",
                   indexed=not user_requested, cluster=sc.cluster_id is not None,
                   user=user is not None,
                   excluded=frozenset(cat.exclude(exclude) if exclude else ()))


async def _loads(reader: Reader, sc: Scope, flt: _Filter) -> dict[int, int]:
    """The window's loads per version (no distinct count, no times: the cheapest aggregate);
    built months from package_monthly unless a user is asked for (SUM(user_loads) is the
    same with or without the rows where it is 0)."""
    loads: dict[int, int] = defaultdict(int)
    monthly = "usage_monthly" if flt.user else "package_monthly"
    for part in await parts(reader, sc.window):
        days, days_params = flt.days(part)
        sql = part.sql(SQL_TOP_LOADS.format(loads=flt.loads, days=days, where=flt.where,
                                            g=_g(reader)), monthly)
        for pid, n in await reader.rows(_q(reader, sql), [*days_params, *flt.params]):
            if int(pid) not in flt.excluded:
                loads[int(pid)] += _int(n)
    return loads


async def _user_counts(reader: Reader, sc: Scope, flt: _Filter, groups: dict[K, list[int]]
                       ) -> dict[K, int]:
    """The distinct users in the window of each group of versions (a version, or a package's
    versions), read from the (package_id, day) index alone where it covers the filters:
    COUNT(DISTINCT) when the window is one part, else the (version, user) pairs of each."""
    ix = _ix(reader) if flt.indexed else ""
    window_parts = await parts(reader, sc.window)
    counts: dict[K, int] = {}
    if len(window_parts) == 1:
        [part] = window_parts
        params = [*part.params(), *flt.params]
        singles = {ids[0]: key for key, ids in groups.items() if len(ids) == 1}
        for chunk in _chunks(sorted(singles)):
            sql = part.sql(SQL_TOP_USERS_OF_VERSIONS.format(ids=_in(len(chunk)),
                                                            where=flt.where, ix=ix))
            for pid, u in await reader.rows(_q(reader, sql), [*chunk, *params]):
                counts[singles[int(pid)]] = _int(u)
        for key, ids in groups.items():
            if len(ids) > 1:  # a package's versions: few enough for one IN list
                sql = part.sql(SQL_TOP_USERS_OF_PACKAGE.format(ids=_in(len(ids)),
                                                               where=flt.where, ix=ix))
                [(u,)] = await reader.rows(_q(reader, sql), [*sorted(ids), *params])
                counts[key] = _int(u)
        return {key: counts.get(key, 0) for key in groups}
    users: dict[int, set[int]] = defaultdict(set)
    every = sorted({pid for ids in groups.values() for pid in ids})
    for part in window_parts:
        for chunk in _chunks(every):
            sql = part.sql(SQL_TOP_USER_PAIRS.format(ids=_in(len(chunk)), where=flt.where,
                                                     ix=ix))
            for pid, uid in await reader.rows(_q(reader, sql),
                                              [*chunk, *part.params(), *flt.params]):
                users[int(pid)].add(int(uid))
    return {key: len(set().union(*(users.get(pid, set()) for pid in ids)))
            for key, ids in groups.items()}


async def _edges(reader: Reader, sc: Scope, flt: _Filter, ids: Iterable[int]
                 ) -> dict[int, tuple[dt.datetime | None, dt.datetime | None]]:
    """First and last load in the window of each version: index probes, no scan."""
    days = _days(sc.window)
    out: dict[int, tuple[dt.datetime | None, dt.datetime | None]] = {}
    for pid in ids:
        edge: list[dt.datetime | None] = []
        for agg, col, order in (("MIN", "first_load", ""), ("MAX", "last_load", " DESC")):
            found = await reader.rows(
                _q(reader, SQL_EDGE_DAY.format(order=order, where=flt.where)),
                [pid, *days, *flt.params])
            if not found:
                edge.append(None)
                continue
            day = found[0][0]
            [(t,)] = await reader.rows(
                _q(reader, SQL_EDGE_TIME.format(agg=agg, col=col, where=flt.where)),
                [pid, _day(day).isoformat(), *flt.params])  # type: ignore[union-attr]
            edge.append(_time(t))
        out[pid] = (edge[0], edge[1])
    return out


def _cut(loads: dict[Any, int], limit: int) -> list[Any]:
    """The keys that can be among the first ``limit`` by loads: ties at the cut included
    (distinct users and the name decide between them)."""
    ranked = sorted(loads.values(), reverse=True)
    least = ranked[limit - 1] if len(ranked) >= limit else 0
    return [k for k, n in loads.items() if n >= least]


async def _top_versions(reader: Reader, cat: Catalog, sc: Scope, flt: _Filter, limit: int
                        ) -> tuple[list[tuple[Any, ...]], int]:
    key = lambda r: (-r[2], -r[3], module_key(r[0], r[1]))  # noqa: E731
    if limit <= 0:
        days, days_params = flt.days(Part(False, sc.window.since, sc.window.until))
        sql = SQL_TOP_VERSION.format(loads=flt.loads, days=days, where=flt.where,
                                     g=_g(reader))
        rows = [(*cat.packages[int(pid)], _int(n), _int(u), _time(a), _time(b))
                for pid, n, u, a, b in await reader.rows(_q(reader, sql),
                                                         [*days_params, *flt.params])
                if int(pid) not in flt.excluded]
        rows.sort(key=key)
        return rows, len(rows)
    loads = await _loads(reader, sc, flt)
    chosen = sorted(_cut(loads, limit))
    users_of = await _user_counts(reader, sc, flt, {pid: [pid] for pid in chosen})
    ranked = sorted(((*cat.packages[pid], loads[pid], users_of[pid], pid)
                     for pid in chosen), key=key)[:limit]
    edges = await _edges(reader, sc, flt, [r[4] for r in ranked])
    return [(*r[:4], *edges[r[4]]) for r in ranked], len(loads)


async def _top_packages(reader: Reader, cat: Catalog, sc: Scope, flt: _Filter, limit: int
                        ) -> tuple[list[tuple[Any, ...]], int]:
    """Rows (package, versions, loads, users, first, last) sorted and the number of packages
    with loads."""
    if limit <= 0 and flt.excluded:
        return await _top_packages_excluding(reader, cat, sc, flt)
    if limit <= 0:
        days, days_params = flt.days(Part(False, sc.window.since, sc.window.until))
        sql = SQL_TOP_PACKAGE.format(loads=flt.loads, days=days, where=flt.where,
                                     g=_g(reader))
        rows = [(str(name), _int(v), _int(n), _int(u), _time(a), _time(b))
                for name, n, u, a, b, v in await reader.rows(_q(reader, sql),
                                                             [*days_params, *flt.params])]
        rows.sort(key=lambda r: (-r[2], -r[3], r[0].lower()))
        return rows, len(rows)
    loads: dict[str, int] = defaultdict(int)
    versions: dict[str, list[int]] = defaultdict(list)
    for pid, n in (await _loads(reader, sc, flt)).items():
        name = cat.packages[pid][0]
        loads[name] += n
        versions[name].append(pid)
    names = _cut(loads, limit)
    users_of = await _user_counts(reader, sc, flt, {name: versions[name] for name in names})
    candidates = [(name, len(versions[name]), loads[name], users_of[name]) for name in names]
    candidates.sort(key=lambda r: (-r[2], -r[3], r[0].lower()))
    candidates = candidates[:limit]
    edges = await _edges(reader, sc, flt, [pid for r in candidates for pid in versions[r[0]]])
    rows = []
    for name, n_versions, n, u in candidates:
        firsts = [f for f in (edges[p][0] for p in versions[name]) if f is not None]
        lasts = [t for t in (edges[p][1] for p in versions[name]) if t is not None]
        rows.append((name, n_versions, n, u, min(firsts, default=None),
                     max(lasts, default=None)))
    return rows, len(loads)


async def _top_packages_excluding(reader: Reader, cat: Catalog, sc: Scope, flt: _Filter
                                  ) -> tuple[list[tuple[Any, ...]], int]:
    """``--limit 0 --by package`` with ``--exclude``: the window's (version, user) groups,
    summed per package in Python without the excluded versions."""
    days, days_params = flt.days(Part(False, sc.window.since, sc.window.until))
    sql = SQL_TOP_PAIRS.format(loads=flt.loads, days=days, where=flt.where, g=_g(reader))
    acc: dict[str, list[Any]] = {}
    for pid, uid, n, first, last in await reader.rows(_q(reader, sql),
                                                      [*days_params, *flt.params]):
        if int(pid) in flt.excluded:
            continue
        entry = acc.setdefault(cat.packages[int(pid)][0], [0, set(), None, None, set()])
        entry[0] += _int(n)
        entry[1].add(int(uid))
        first_t, last_t = _time(first), _time(last)
        if first_t is not None and (entry[2] is None or first_t < entry[2]):
            entry[2] = first_t
        if last_t is not None and (entry[3] is None or last_t > entry[3]):
            entry[3] = last_t
        entry[4].add(int(pid))
    rows = [(name, len(vs), n, len(us), a, b) for name, (n, us, a, b, vs) in acc.items()]
    rows.sort(key=lambda r: (-r[2], -r[3], r[0].lower()))
    return rows, len(rows)


async def top(reader: Reader, cat: Catalog, sc: Scope, *, by: Literal["package", "version"],
              user: str | None = None, user_requested: bool = False,
              exclude: Sequence[str] = (), limit: int = 20) -> Table:
    """Loads, distinct users, first and last load per package or per version."""
    flt = await _top_filter(reader, cat, sc, user=user, user_requested=user_requested,
                            exclude=exclude)
    meta = {**sc.meta(), "by": by, "user": user, "user_requested": user_requested,
            "exclude": list(exclude), "limit": limit}
    rows: list[tuple[Any, ...]]
    if by == "version":
        rows, total = await _top_versions(reader, cat, sc, flt, limit)
        columns = [Column("package"), Column("version"), Column("loads", "int"),
                   Column("users", "int"), *TIME_COLUMNS]
    else:
        rows, total = await _top_packages(reader, cat, sc, flt, limit)
        columns = [Column("package"), Column("versions", "int"), Column("loads", "int"),
                   Column("users", "int"), *TIME_COLUMNS]
    if limit > 0:
        rows = rows[:limit]
    what = "user-requested loads" if user_requested else "loads"
    table = Table("top", f"Top modules by {what}, {sc.window.since} to {sc.window.until}",
                  columns, rows, meta)
    if limit > 0 and total > limit:
        table.notes.append(f"{limit} of {total} {'packages' if by == 'package' else 'versions'}"
                           " shown (--limit 0 for all)")
    return table


async def top_with_users(reader: Reader, cat: Catalog, sc: Scope, *, limit: int,
                         users_of: int, users_per: int) -> tuple[Table, Table]:
    """The same answer as :func:`top` by package, and the ``users_per`` heaviest users of each
    of the first ``users_of`` packages (as :func:`users` would list them): one statement per
    listed package, reading only that package's rows."""
    flt = await _top_filter(reader, cat, sc, user=None, user_requested=False, exclude=())
    rows, total = await _top_packages(reader, cat, sc, flt, limit)
    rows = rows[:limit] if limit > 0 else rows
    columns = [Column("package"), Column("versions", "int"), Column("loads", "int"),
               Column("users", "int"), *TIME_COLUMNS]
    top_table = Table("top", f"Top modules by loads, {sc.window.since} to {sc.window.until}",
                      columns, rows, {**sc.meta(), "by": "package", "limit": limit})
    if limit > 0 and total > limit:
        top_table.notes.append(f"{limit} of {total} packages shown")
    ids_of: dict[str, list[int]] = defaultdict(list)
    for pid, (name, _) in cat.packages.items():
        ids_of[name].append(pid)
    listed = [r[0] for r in rows[:users_of]]
    per_user: dict[str, dict[int, list[Any]]] = {name: {} for name in listed}
    # MariaDB: one statement for every listed package; SQLite: one per package (it sorts
    # each package's rows apart faster than all of them at once). None when nothing is listed
    # (a window or cluster without loads): MariaDB refuses an empty IN ().
    batches = [listed] if reader.backend == "mysql" else [[name] for name in listed]
    window_parts = await parts(reader, sc.window)
    for batch in batches:
        ids = sorted(pid for name in batch for pid in ids_of[name])
        if not ids:
            continue
        sql = SQL_USERS_OF_PACKAGES.format(ids=_in(len(ids)), where=flt.where)
        for pid, uid, n, last in [row for part in window_parts for row in await reader.rows(
                _q(reader, part.sql(sql)), [*ids, *part.params(), *flt.params])]:
            entry = per_user[cat.packages[int(pid)][0]].setdefault(int(uid), [0, None])
            entry[0] += _int(n)
            last_t = _time(last)
            if entry[1] is None or (last_t is not None and last_t > entry[1]):
                entry[1] = last_t
    chosen = [(name, [(uid, n, last) for uid, (n, last) in per_user[name].items()])
              for name in listed]
    names = await _user_names(reader, {uid for _, us in chosen for uid, _, _ in us})
    user_rows: list[tuple[Any, ...]] = []
    for package, us in chosen:
        listed = sorted(((names.get(uid, f"#{uid}"), n, last) for uid, n, last in us),
                        key=lambda r: (-r[1], r[0]))
        user_rows.extend((package, u, n, last) for u, n, last in listed[:users_per])
    users_table = Table("top_users", f"Users of the top {users_of} packages (at most"
                        f" {users_per} each)",
                        [Column("package"), Column("user"), Column("loads", "int"),
                         Column("last_load", "time")], user_rows, sc.meta())
    return top_table, users_table


# -------------------------------------------------------------------------------- users


async def users(reader: Reader, cat: Catalog, sc: Scope, module: str) -> Table:
    """Who loaded a module (every version, one version or a pattern), how often, last time."""
    ids = cat.match(module)
    per_user: dict[int, list[Any]] = {}
    versions: dict[int, set[int]] = defaultdict(set)
    queries = []
    for part in await parts(reader, sc.window):
        for chunk in _chunks(ids):
            params: list[Any] = [*chunk, *part.params()]
            where = _cluster_filter(sc, "r", params)
            queries.append((part.sql(SQL_USERS.format(ids=_in(len(chunk)), where=where)),
                            params))
    for sql, params in queries:
        for uid, pid, n, first, last in await reader.rows(_q(reader, sql), params):
            uid = int(uid)
            entry = per_user.setdefault(uid, [0, None, None])
            entry[0] += _int(n)
            first_t, last_t = _time(first), _time(last)
            if first_t and (entry[1] is None or first_t < entry[1]):
                entry[1] = first_t
            if last_t and (entry[2] is None or last_t > entry[2]):
                entry[2] = last_t
            versions[uid].add(int(pid))
    names = await _user_names(reader, per_user)
    rows = []
    for uid, (n, first, last) in per_user.items():
        mods = sorted((cat.packages[p] for p in versions[uid]), key=lambda m: module_key(*m))
        rows.append((names.get(uid, f"#{uid}"), n,
                     " ".join(module_text(*m) for m in mods), first, last))
    rows.sort(key=lambda r: (-r[1], r[0]))
    columns = [Column("user"), Column("loads", "int"), Column("modules"), *TIME_COLUMNS]
    return Table("users", f"Users of {module}, {sc.window.since} to {sc.window.until}",
                 columns, rows, {**sc.meta(), "module": module})


# --------------------------------------------------------------------------------- user


async def user(reader: Reader, cat: Catalog, sc: Scope, name: str) -> Table:
    """What one user loads: per module version, loads, user-requested loads, days used."""
    found = await reader.rows(_q(reader, "SELECT id FROM `user` WHERE name = ?"), [name])
    if not found:
        raise ReportError(f"unknown user {name!r}: no load of theirs is recorded")
    params: list[Any] = [int(found[0][0]), *_days(sc.window)]
    where = _cluster_filter(sc, "r", params)
    rows = [(*cat.packages[int(pid)], _int(n), _int(un), _int(days), _time(a), _time(b))
            for pid, n, un, days, a, b in
            await reader.rows(_q(reader, SQL_USER.format(where=where)), params)]
    rows.sort(key=lambda r: (-r[2], module_key(r[0], r[1])))
    columns = [Column("package"), Column("version"), Column("loads", "int"),
               Column("user_loads", "int", "user-requested"), Column("days", "int"),
               *TIME_COLUMNS]
    return Table("user", f"Modules loaded by {name}, {sc.window.since} to {sc.window.until}",
                 columns, rows, {**sc.meta(), "user": name})


# -------------------------------------------------------------------------------- trend


def period_start(day: dt.date, every: Every) -> dt.date:
    if every == "week":
        return day - dt.timedelta(days=day.weekday())
    if every == "month":
        return day.replace(day=1)
    return day


def _next_period(day: dt.date, every: Every) -> dt.date:
    if every == "day":
        return day + dt.timedelta(days=1)
    if every == "week":
        return day + dt.timedelta(days=7)
    return next_month(day)


def period_label(day: dt.date, every: Every) -> str:
    return day.strftime("%Y-%m") if every == "month" else day.isoformat()


def _module_filter(cat: Catalog, module: str, params: list[Any]) -> str:
    """The versions a module spec names, as one condition of a statement that counts distinct
    users over all of them (so they cannot be split across statements): the list of them, or
    of the others when that is the shorter, within MAX_PARAMS either way."""
    ids = cat.match(module)
    if len(ids) <= MAX_PARAMS - 3:  # with the window and a cluster
        params.extend(ids)
        return f" AND r.package_id IN {_in(len(ids))}"
    matched = set(ids)
    rest = [i for i in cat.packages if i not in matched]
    if not rest:
        return ""
    if len(rest) > MAX_PARAMS - 3:
        raise ReportError(f"{module!r} matches {len(ids)} module versions and leaves"
                          f" {len(rest)}: more than one statement can list (at most"
                          f" {MAX_PARAMS - 3}); narrow the pattern")
    params.extend(rest)
    return f" AND r.package_id NOT IN {_in(len(rest))}"


async def trend(reader: Reader, cat: Catalog, sc: Scope, module: str | None,
                every: Every) -> Table:
    """Loads, distinct users and distinct module versions per day, week (from Monday) or
    month; periods without loads are rows of zeros."""
    params = _days(sc.window)
    where = ""
    if module is not None:
        where += _module_filter(cat, module, params)
    where += _cluster_filter(sc, "r", params)
    sql = _q(reader, SQL_TREND.format(where=where))
    if reader.backend == "sqlite":
        probes = module is None and every != "day"
    else:  # the loose index scan pays for whole months only, and not with a cluster
        probes = module is None and every == "month" and sc.cluster_id is None
    # a module's versions on MariaDB: every cluster id (0: unknown) for SQL_TREND_SEEK
    seek: list[int] | None = None
    if reader.backend == "mysql" and " AND r.package_id IN " in where:
        seek = [sc.cluster_id] if sc.cluster_id is not None else \
            sorted({0, *cat.clusters.values()})
    # whole months read from usage_monthly where built (its rows are per month: exact)
    monthly = {m for part in await parts(reader, sc.window) if part.monthly
               for m in part.points()} if every == "month" else set()
    rows = []
    per_day: dict[dt.date | None, tuple[Any, Any, Any]] = {}
    if every == "day":
        per_day = {_day(d): (n, u, m) for d, n, u, m in await reader.rows(
            _q(reader, SQL_TREND_DAYS.format(where=where)), params)}
    day = period_start(sc.window.since, every)
    while day <= sc.window.until:
        end = _next_period(day, every)
        first, last = max(day, sc.window.since), min(end - dt.timedelta(days=1),
                                                        sc.window.until)
        # a whole built month: the same statements on its usage_monthly rows
        part = Part(True, first, first) if first.isoformat() in monthly else \
            Part(False, first, last)
        period = [*part.params(), *params[2:]]
        if every == "day":
            n, u, m = per_day.get(day, (0, 0, 0))
        elif probes:
            [(n,)] = await reader.rows(part.sql(_q(reader, SQL_TREND_LOADS.format(where=where))),
                                       period)
            counts = [(await reader.rows(part.sql(_q(reader, SQL_TREND_HAVING_ROWS[
                reader.backend].format(table=table, column=column, where=where))),
                period))[0][0]
                for table, column in (("`user`", "user_id"), ("package", "package_id"))]
            u, m = counts
        elif seek is not None and len(part.points()) + len(seek) + len(period) <= MAX_PARAMS:
            points = part.points()
            [(n, u, m)] = await reader.rows(part.sql(_q(reader, SQL_TREND_SEEK.format(
                days=_in(len(points)), clusters=_in(len(seek)), where=where))),
                [*points, *seek, *params[2:]])
        else:
            [(n, u, m)] = await reader.rows(part.sql(sql), period)
        rows.append((period_label(day, every), _int(n), _int(u), _int(m)))
        day = end
    columns = [Column("period", "date"), Column("loads", "int"), Column("users", "int"),
               Column("modules", "int", "versions")]
    title = f"Loads per {every}{' of ' + module if module else ''}," \
            f" {sc.window.since} to {sc.window.until}"
    table = Table("trend", title, columns, rows, {**sc.meta(), "module": module,
                                                  "every": every})
    if rows and (period_start(sc.window.since, every) != sc.window.since
                 or _next_period(period_start(sc.window.until, every), every)
                 != sc.window.until + dt.timedelta(days=1)):
        table.notes.append("the first or last period is cut by the window")
    return table


# ------------------------------------------------------------------------------- unused


async def _last_days(reader: Reader, sc: Scope) -> dict[int, dt.date | None]:
    params: list[Any] = [sc.window.until.isoformat()]
    where = _cluster_filter(sc, "r", params)
    return {int(pid): _day(d) for pid, d in
            await reader.rows(_q(reader, SQL_LAST_DAY.format(where=where)), params)}


async def _totals(reader: Reader, sc: Scope, ids: Sequence[int]
                  ) -> dict[int, tuple[int, dt.datetime | None]]:
    """Loads and last load of each version up to the window's end, since the beginning."""
    out: dict[int, tuple[int, dt.datetime | None]] = {}
    for part in await parts(reader, Window(_EPOCH, sc.window.until)):
        for chunk in _chunks(sorted(ids)):
            params: list[Any] = [*chunk, *part.params()]
            where = _cluster_filter(sc, "r", params)
            sql = part.sql(SQL_TOTALS.format(ids=_in(len(chunk)), where=where))
            for pid, n, last in await reader.rows(_q(reader, sql), params):
                n0, last0 = out.get(int(pid), (0, None))
                last_t = _time(last)
                out[int(pid)] = (n0 + _int(n), last0 if last_t is None or (
                    last0 is not None and last0 >= last_t) else last_t)
    return out


async def unused(reader: Reader, cat: Catalog, sc: Scope,
                 installed: Sequence[tuple[str, str]] | None) -> Table:
    """Without ``installed``: module versions loaded before the window and not in it.
    With Lmod's list of installed modules: installed versions without a load in the window
    (``installed, unused``), and versions loaded in the window that are no longer installed
    (``loaded, not installed``). Loads and last load are counted up to the window's end."""
    last_days = await _last_days(reader, sc)
    since = sc.window.since
    used = {pid for pid, d in last_days.items() if d is not None and d >= since}
    listed: list[tuple[str, str, str, int | None]] = []  # name, version, status, package id
    if installed is None:
        listed = [(*cat.packages[pid], "not loaded in window", pid)
                  for pid, d in last_days.items() if d is not None and d < since]
    else:
        by_text = {cat.text(pid): pid for pid in cat.packages}
        wanted = {module_text(n, v): (n, v) for n, v in installed}
        for text, (n, v) in wanted.items():
            pid = by_text.get(text)
            if pid is None or pid not in used:
                listed.append((n, v, "installed, unused", pid))
        for pid in used:
            if cat.text(pid) not in wanted:
                listed.append((*cat.packages[pid], "loaded, not installed", pid))
    totals = await _totals(reader, sc, [p for *_, p in listed if p is not None])
    rows = []
    for n, v, status, pid in listed:
        loads, last = totals.get(pid, (0, None)) if pid is not None else (0, None)
        rows.append((n, v, status, loads, last))
    rows.sort(key=lambda r: (r[2], module_key(r[0], r[1])))
    columns = [Column("package"), Column("version"), Column("status"),
               Column("loads", "int", "loads (all time)"), Column("last_load", "time")]
    table = Table("unused", f"Unused modules: no load since {since}", columns, rows,
                  {**sc.meta(), "installed": installed is not None})
    if installed is None:
        table.notes.append("without --installed only versions loaded once are known;"
                           " give Lmod's spider list to see installed versions never loaded")
    return table


# --------------------------------------------------------------------------------- jobs


async def jobs(reader: Reader, cat: Catalog, sc: Scope, module: str,
               limit: int = 1000) -> Table:
    """Job ids (where logged) whose loads include the module, newest first."""
    ids = cat.match(module)
    merged: dict[tuple[str, int], list[Any]] = {}
    for chunk in _chunks(ids):
        params: list[Any] = [*chunk, sc.window.start_text(), sc.window.end_text()]
        where = _cluster_filter(sc, "m", params)
        sql = SQL_JOBS.format(ids=_in(len(chunk)), where=where)
        for jobid, uid, pid, n, hosts, first, last in await reader.rows(_q(reader, sql),
                                                                          params):
            entry = merged.setdefault((str(jobid), int(uid)), [0, 0, set(), None, None])
            entry[0] += _int(n)
            entry[1] = max(entry[1], _int(hosts))
            entry[2].add(int(pid))
            first_t, last_t = _time(first), _time(last)
            if entry[3] is None or (first_t and first_t < entry[3]):
                entry[3] = first_t
            if entry[4] is None or (last_t and last_t > entry[4]):
                entry[4] = last_t
    names = await _user_names(reader, {uid for _, uid in merged})
    rows = []
    for (jobid, uid), (n, hosts, pids, first, last) in merged.items():
        mods = sorted((cat.packages[p] for p in pids), key=lambda m: module_key(*m))
        rows.append((jobid, names.get(uid, f"#{uid}"),
                     " ".join(module_text(*m) for m in mods), n, hosts, first, last))
    rows.sort(key=lambda r: (r[5], version_key(r[0])), reverse=True)
    total = len(rows)
    if limit > 0:
        rows = rows[:limit]
    columns = [Column("jobid"), Column("user"), Column("modules"), Column("loads", "int"),
               Column("hosts", "int"), *TIME_COLUMNS]
    table = Table("jobs", f"Jobs that loaded {module}, {sc.window.since} to"
                  f" {sc.window.until}", columns, rows, {**sc.meta(), "module": module})
    if limit > 0 and total > limit:
        table.notes.append(f"newest {limit} of {total} jobs shown (--limit 0 for all)")
    return table


# ------------------------------------------------------------------------------- health

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'(?:\.\.\.)?|\"(?:[^\"\\]|\\.)*\"(?:\.\.\.)?")
_NUMBER = re.compile(r"\d+")


def reason_kind(reason: str) -> str:
    """A reject reason without its particulars: quoted values and numbers replaced."""
    return _NUMBER.sub("N", _QUOTED.sub("'...'", reason))


async def health(reader: Reader, sc: Scope) -> list[Table]:
    """What the tracker knows about itself: per daemon instance its last commit, the files
    it read recently (with lag when the file is readable here), rejects per reason."""
    instances = []
    for inst, files, updated, offset in await reader.rows(SQL_HEALTH_INSTANCES):
        instances.append((str(inst), _int(files), _int(offset), _time(updated)))
    instances.sort(key=lambda r: r[0])
    t_inst = Table("instances", "Daemon instances (last commit = newest checkpoint)",
                   [Column("instance"), Column("files", "int"), Column("bytes_read", "int"),
                    Column("last_commit", "time")], instances, sc.meta())
    files = []
    for inst, path, offset, updated in await reader.rows(
            _q(reader, SQL_HEALTH_FILES), [sc.window.start_text()]):
        try:
            size: int | None = os.stat(path).st_size
        except (OSError, ValueError):
            size = None
        lag = None if size is None else max(size - _int(offset), 0)
        files.append((str(inst), str(path), _int(offset), size, lag, _time(updated)))
    t_files = Table("files", f"Files read since {sc.window.since} (size and lag where the file"
                    " is readable here)",
                    [Column("instance"), Column("path"), Column("offset", "int"),
                     Column("size", "int"), Column("lag_bytes", "int"),
                     Column("updated", "time")], files, sc.meta())
    kinds: dict[str, list[Any]] = {}
    for reason, n, last in await reader.rows(
            _q(reader, SQL_HEALTH_REJECTS), [sc.window.start_text(), sc.window.end_text()]):
        entry = kinds.setdefault(reason_kind(str(reason)), [0, None, str(reason)])
        entry[0] += _int(n)
        last_t = _time(last)
        if entry[1] is None or (last_t and last_t > entry[1]):
            entry[1] = last_t
    rejects = sorted(((k, n, ex, last) for k, (n, last, ex) in kinds.items()),
                     key=lambda r: (-r[1], r[0]))
    t_rej = Table("rejects", f"Rejected lines per reason, {sc.window.since} to"
                  f" {sc.window.until}",
                  [Column("reason"), Column("lines", "int"), Column("example"),
                   Column("last_seen", "time")], rejects, sc.meta())
    facts = []
    for what, sql in SQL_HEALTH_NEWEST.items():
        value = (await reader.rows(sql))[0][0]
        if what == "newest load":
            facts.append((what, _time(value)))
        elif what == "newest rollup day":
            day = _day(value)
            facts.append((what, day.isoformat() if day else None))
        else:
            facts.append((what, None if value is None else str(value)))
    if await reader.table_exists("usage_month"):
        [(n, newest)] = await reader.rows("SELECT COUNT(*), MAX(month) FROM usage_month")
        facts.append(("monthly rollup", f"{_int(n)} months built, newest {str(newest)[:7]}"
                      if n else "no month built (reports read usage_daily alone)"))
    facts.insert(0, ("database", reader.describe()))
    t_db = Table("database", "Database", [Column("item"), Column("value")], facts, sc.meta())
    return [t_db, t_inst, t_files, t_rej]

"""A report reads one snapshot: loads committed by a writer while a report runs (between its
statements) are not seen by the rest of that report, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from lmod_tracker.reports import queries
from lmod_tracker.reports.cli import answer
from lmod_tracker.reports.db import MySQLReader, Reader, SQLiteReader
from lmod_tracker.reports.window import Window
from tests.support import reportdata as rd
from tests.support.daemon import cli
from tests.support.databases import (
    DbHandle,
)
from tests.support.reportdata import Load


@pytest.fixture(scope="module", params=rd.BACKENDS)
def sdb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[DbHandle]:
    tmp = tmp_path_factory.mktemp(f"snapshot-{request.param}")
    yield from rd.loaded(request, tmp, rd.make_loads(n=300))


def _reader(db: DbHandle) -> Reader:
    if db.kind == "sqlite":
        return SQLiteReader(Path(db.env["LMOD_TRACKER_SQLITE_PATH"]))
    s = db.env
    return MySQLReader(host=s["DB_HOST"], port=int(s["DB_PORT"]), user=s["DB_USER"],
                       password=s["DB_PASS"], database=s["DB_NAME"])


_WRITES = itertools.count()


def _ingest(db: DbHandle, tmp: Path, module: str) -> None:
    """The writer: 40 loads of ``module`` (a version no report has seen) and 40 of
    gcc/12.2.0 by a new user, a few minutes ago, committed by ``lmod-tracker ingest``."""
    at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=5)
    first = 1000 * next(_WRITES)  # equal loads would be stored once
    loads = [Load(at + dt.timedelta(microseconds=first + i), "zoe", m, "b01", "beta", 1, None)
             for i in range(40) for m in (module, "gcc/12.2.0")]
    log = tmp / f"{module.replace('/', '-')}.log"  # its own first bytes: a new file identity
    log.write_text("".join(rd.line(ld) for ld in loads))
    assert ": 80 events, 0 duplicates" in cli(db.env, "ingest", str(log)).stdout


def _run(db: DbHandle, ask: Callable[..., Any], window: Window,
         before: Callable[[str], bool] | None = None,
         write: Callable[[], None] | None = None) -> list[list[tuple[Any, ...]]]:
    """The rows of each table of one report; ``write`` runs once, right before the first
    statement ``before`` picks (the reader's connection is open, its snapshot taken)."""
    reader = _reader(db)
    real = reader.rows
    seen: list[str] = []

    async def rows(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if write is not None and before is not None and before(sql) and not seen:
            seen.append(sql)
            write()
        return await real(sql, params)

    reader.rows = rows  # type: ignore[method-assign]

    async def go() -> list[list[tuple[Any, ...]]]:
        try:
            return [list(t.rows) for t in await answer(reader, window, None, ask)]
        finally:
            await reader.close()

    result = asyncio.run(go())
    assert write is None or seen, "the writer never ran"
    return result


def _reads_rollup(sql: str) -> bool:
    return "usage_daily" in sql and "sqlite_master" not in sql \
        and "information_schema" not in sql


@pytest.mark.parametrize(("name", "ask", "days"), [
    ("top", functools.partial(queries.top, by="version", limit=3), 30),
    ("top-package", functools.partial(queries.top, by="package", limit=2), 30),
    ("trend", functools.partial(queries.trend, module=None, every="month"), 365),
    ("trend-week", functools.partial(queries.trend, module=None, every="week"), 60),
])
def test_a_report_reads_one_snapshot(sdb: DbHandle, tmp_path: Path, name: str,
                                     ask: Callable[..., Any], days: int) -> None:
    """The writer commits after the catalog was read and before the report's first statement
    on the rollup: the report answers as if nothing had been written (it would otherwise
    meet a module version its catalog lacks, or count the new loads in some periods only)."""
    today = dt.datetime.now(dt.UTC).date()
    window = Window(today - dt.timedelta(days=days - 1), today)
    before = _run(sdb, ask, window)
    during = _run(sdb, ask, window, before=_reads_rollup,
                  write=lambda: _ingest(sdb, tmp_path, f"zz-{name}/1"))
    after = _run(sdb, ask, window)
    assert during == before
    assert after != before, "the writer's loads should show in the next report"

"""The monthly rollup (usage_monthly, usage_month): built from usage_daily for ended months,
read by reports only for months marked built, unmarked by any writer transaction that changes
a month, on both backends; on MariaDB the two orders of a build racing a writer; the daemon
builds at start; the upgrade from schema version 3."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncmy
import pytest

from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support import reportdata as rd
from tests.support.daemon import Daemon, child_env, cli, wait_until
from tests.support.databases import DbHandle
from tests.support.reportdata import Load

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def _month_start(months_back: int) -> dt.date:
    day = rd.today().replace(day=1)
    for _ in range(months_back):
        day = (day - dt.timedelta(days=1)).replace(day=1)
    return day


def _loads(month: dt.date, n: int, user: str = "alice", module: str = "gcc/12.2.0",
           hour: int = 10) -> list[Load]:
    return [Load(dt.datetime.combine(month + dt.timedelta(days=1 + i % 20),
                                     dt.time(hour, 0, i % 60, 1000 * i), dt.UTC),
                 user, module, "a01", "alpha", 1 if i % 2 else 0, None) for i in range(n)]


def _ingest(db: DbHandle, path: Path, loads: list[Load]) -> None:
    path.write_text("".join(rd.line(x) for x in loads))
    cli(db.env, "ingest", str(path))


def _top(db: DbHandle, since: dt.date, until: dt.date, *extra: str) -> dict[str, int]:
    doc = json.loads(cli(db.env, "report", "top", "--since", since.isoformat(), "--until",
                         until.isoformat(), "--by", "version", "--format", "json",
                         *extra).stdout)
    return {f"{r['package']}/{r['version']}": int(r["loads"]) for r in doc["tables"][0]["rows"]}


def _users(db: DbHandle, module: str, since: dt.date, until: dt.date) -> dict[str, int]:
    doc = json.loads(cli(db.env, "report", "users", module, "--since", since.isoformat(),
                         "--until", until.isoformat(), "--format", "json").stdout)
    return {r["user"]: int(r["loads"]) for r in doc["tables"][0]["rows"]}


def _built(db: DbHandle) -> set[str]:
    return {str(m)[:10] for (m,) in db.rows("SELECT month FROM usage_month")}


def test_reports_read_built_months_and_only_those(db: DbHandle, tmp_path: Path) -> None:
    m2, m1 = _month_start(2), _month_start(1)
    _ingest(db, tmp_path / "a.log", _loads(m2, 30) + _loads(m1, 20, module="gcc/13.1.0"))
    until = rd.today()  # the current month's days come from usage_daily
    truth = {"gcc/12.2.0": 30, "gcc/13.1.0": 20}
    assert _top(db, m2, until) == truth
    assert rd.build_months(db) >= 2
    assert {m2.isoformat(), m1.isoformat()} <= _built(db)
    assert _top(db, m2, until) == truth
    # Proof that a built month is read from package_monthly (top's loads per version) and
    # usage_monthly (top with --user, users), a row changed by hand shows, and that an
    # unmarked one is not (the change is ignored).
    for table in ("package_monthly", "usage_monthly"):
        db.execute(f"UPDATE {table} SET loads = loads + 1000 WHERE month = %s",
                   (m2.isoformat(),))
    assert _top(db, m2, until) == {"gcc/12.2.0": 1030, "gcc/13.1.0": 20}
    assert _top(db, m2, until, "--user", "alice") == {"gcc/12.2.0": 1030, "gcc/13.1.0": 20}
    assert _users(db, "gcc", m2, until) == {"alice": 1050}
    assert _top(db, m2 + dt.timedelta(days=1), until) == truth  # m2 cut: its days read
    db.execute("DELETE FROM usage_month WHERE month = %s", (m2.isoformat(),))
    assert _top(db, m2, until) == truth
    assert _top(db, m2, until, "--user", "alice") == truth
    assert _users(db, "gcc", m2, until) == {"alice": 50}
    assert rd.build_months(db) == 1  # m2 again, from usage_daily
    assert _top(db, m2, until) == truth


def test_a_late_line_unmarks_its_month_and_db_months_rebuilds_it(db: DbHandle,
                                                                  tmp_path: Path) -> None:
    m3, m2, m1 = _month_start(3), _month_start(2), _month_start(1)
    _ingest(db, tmp_path / "a.log", _loads(m3, 10) + _loads(m2, 10) + _loads(m1, 10))
    rd.build_months(db)
    before = _built(db)
    assert {m3.isoformat(), m2.isoformat(), m1.isoformat()} <= before
    # A backfill: lines of m2 (another user and module); m3 and m1 stay built.
    _ingest(db, tmp_path / "b.log", _loads(m2, 7, user="bob", module="R/4.3.1", hour=11))
    assert _built(db) == before - {m2.isoformat()}
    rd.assert_months_agree(db)
    until = rd.today()
    assert _top(db, m3, until) == {"gcc/12.2.0": 30, "R/4.3.1": 7}
    out = cli(db.env, "db", "months").stdout
    assert out.splitlines()[0].startswith(m2.isoformat()[:7]) and "1 months built" in out, out
    assert _built(db) == before
    rd.assert_months_agree(db)
    assert _top(db, m3, until) == {"gcc/12.2.0": 30, "R/4.3.1": 7}


def test_the_daemon_builds_ended_months_at_start(db: DbHandle, tmp_path: Path) -> None:
    m2 = _month_start(2)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "lmod.log").write_text("".join(rd.line(x) for x in _loads(m2, 25)))
    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        # the loads are committed, then (caught up) the months built
        db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=25, timeout=30)
        # The log line follows the build's commit: wait for both, or SIGTERM may come between.
        wait_until(lambda: m2.isoformat() in _built(db)
                   and f"month={m2.isoformat()[:7]} rows=" in daemon.log_text(),
                   30, "the month to be built", on_timeout=daemon.log_text)
        assert daemon.stop() == 0
    rd.assert_months_agree(db)


def test_upgrade_from_version_3_then_build(db: DbHandle, tmp_path: Path) -> None:
    text = (SUPPORT / "schema_v3" / f"{db.kind}.sql").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
    for statement in (s.strip() for s in body.split(";")):
        if statement:
            db.execute(statement)
    assert db.scalar("SELECT MAX(version) FROM lmod_tracker_schema") == 3
    refused = cli(db.env, "ingest", "/dev/null", check=False)
    assert refused.returncode != 0 and "db upgrade" in refused.stderr
    out = cli(db.env, "db", "upgrade").stdout
    assert f"from version 3 to {SCHEMA_VERSION}" in out
    assert db.scalar("SELECT COUNT(*) FROM usage_monthly") == 0
    _ingest(db, tmp_path / "a.log", _loads(_month_start(1), 12))
    assert rd.build_months(db) >= 1
    assert _top(db, _month_start(1), rd.today()) == {"gcc/12.2.0": 12}


# ------------------------------------------------------------- MariaDB: builds racing writers


async def _connection(db: DbHandle) -> Any:
    assert db.server is not None
    s = db.server
    conn = await asyncmy.connect(host=s.host, port=s.port, user=s.user, password=s.password,
                                 database=db.name, autocommit=False)
    async with conn.cursor() as cur:
        # what the writer's session is (store/mysql.py)
        await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return conn


def _spawn(db: DbHandle, *args: str) -> subprocess.Popen[str]:
    """``lmod-tracker ARGS`` started, not waited for."""
    return subprocess.Popen([sys.executable, "-m", "lmod_tracker", *args],
                            env=child_env(db.env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.mysql
async def test_a_build_waits_for_a_writers_uncommitted_rows(mysql_db: DbHandle,
                                                            tmp_path: Path) -> None:
    """A writer's transaction has added to month M but not committed: the build waits for it
    and counts its rows (the writer found no mark to delete)."""
    db = mysql_db
    m2 = _month_start(2)
    _ingest(db, tmp_path / "a.log", _loads(m2, 10))
    conn = await _connection(db)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO usage_daily (day, cluster_id, package_id, user_id, loads,"
                " user_loads, first_load, last_load) VALUES (%s, 0, 999, 999, 5, 0, %s, %s)",
                (m2.isoformat(), f"{m2} 01:00:00", f"{m2} 02:00:00"))
            await cur.execute("DELETE FROM usage_month WHERE month IN (%s)", (m2.isoformat(),))
            proc = _spawn(db, "db", "months")
            await asyncio.sleep(2)
            assert proc.poll() is None, proc.communicate()[0]  # waiting for our row
            await conn.commit()
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out
    finally:
        conn.close()
    assert m2.isoformat() in _built(db)
    rd.assert_months_agree(db)
    assert db.scalar("SELECT loads FROM usage_monthly WHERE package_id = 999") == 5


@pytest.mark.mysql
async def test_a_writer_after_a_build_unmarks_the_month(mysql_db: DbHandle,
                                                        tmp_path: Path) -> None:
    """A build of month M has read M (as build_month does: REPEATABLE READ, INSERT .. SELECT)
    and not committed: a writer adding to M waits for it, then deletes the mark."""
    db = mysql_db
    m2 = _month_start(2)
    _ingest(db, tmp_path / "a.log", _loads(m2, 10))
    builder = await _connection(db)
    late = tmp_path / "late.log"
    late.write_text("".join(rd.line(x) for x in _loads(m2, 4, user="bob", hour=12)))
    try:
        async with builder.cursor() as cur:
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await cur.execute(
                "INSERT INTO usage_monthly (month, cluster_id, package_id, user_id, loads,"
                " user_loads, first_load, last_load) SELECT %s, cluster_id, package_id,"
                " user_id, SUM(loads), SUM(user_loads), MIN(first_load), MAX(last_load)"
                " FROM usage_daily WHERE day >= %s AND day < %s"
                " GROUP BY cluster_id, package_id, user_id",
                (m2.isoformat(), m2.isoformat(), _month_start(1).isoformat()))
            writer = _spawn(db, "ingest", str(late))
            await asyncio.sleep(2)
            assert writer.poll() is None, writer.communicate()[0]  # waiting for the build
            await cur.execute("INSERT INTO usage_month (month, built_at) VALUES (%s, %s)",
                              (m2.isoformat(), "2000-01-01 00:00:00"))
            await builder.commit()
        out = writer.communicate(timeout=60)[0]
        assert writer.returncode == 0, out
    finally:
        builder.close()
    assert m2.isoformat() not in _built(db)  # the build missed bob's loads: not used
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 14
    rd.build_months(db)
    assert db.scalar("SELECT SUM(loads) FROM usage_monthly") == 14

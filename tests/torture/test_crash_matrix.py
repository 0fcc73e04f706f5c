"""Crash matrix: the daemon killed (SIGKILL) at each named fault point, again and again.

``LMOD_TRACKER_FAULT=NAME:N`` (src/lmod_tracker/faults.py) makes the daemon SIGKILL itself the
N-th time it passes point NAME: ``read`` (a chunk read, not queued), ``lookup`` (a file's
checkpoint being looked up), ``insert`` (rows sent, no COMMIT yet), ``commit`` (COMMIT returned,
not recorded), ``drain`` (shutdown begun, queue not drained). For every point and backend, each
cycle changes the log directory (lines, half lines, rename rotations, copytruncate), starts the
daemon with the fault at a random N while lines keep coming and files keep rotating, waits
for it to die, then starts it without the fault and requires every line exactly once
(tests/support/torture.py). Deterministic: the draws come from a seeded generator.

An *uncertain commit* (MariaDB): a proxy that understands just enough of the MySQL protocol
forwards COMMIT and resets the connection before the answer comes back (the server committed,
the daemon cannot know), or resets it instead of forwarding COMMIT: the retry neither loses nor
doubles the batch, and turns no row into a reject.

CI mode: 2 kills per point and backend (20 kills; the whole file about 2 minutes). Long mode,
25 per point and backend (250 kills, about 11 minutes; 60 kills took 2.5 minutes)::

    LMT_TORTURE_LONG=1 .venv/bin/pytest -p no:cacheprovider tests/torture/test_crash_matrix.py

``LMT_TORTURE_KILLS`` sets the number of kills per point and backend.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import wait_until
from tests.support.databases import DbHandle
from tests.support.torture import (
    FAST_ENV,
    CommitCutProxy,
    Rig,
    TortureDaemon,
    World,
    settle,
)

pytestmark = pytest.mark.slow

LONG = os.environ.get("LMT_TORTURE_LONG", "") == "1"
KILLS = int(os.environ.get("LMT_TORTURE_KILLS", "25" if LONG else "2"))
#: The N of ``NAME:N`` is drawn from 1..this (how often a run passes the point).
MAX_N = {"read": 12, "lookup": 3, "insert": 10, "commit": 10, "drain": 1}
POINTS = tuple(MAX_N)
#: A faulty run that has not died after this long is stopped (the point was not reached).
RUN_LIMIT = 8.0

TOTALS: dict[str, int] = {}


def _disturb(w: World, rng: random.Random) -> str:
    """What happens to the directory between two runs (or while one runs)."""
    what = rng.choice(["append", "append", "partial", "rename", "copytruncate", "crlf"])
    if what == "partial":
        w.append(rng.randint(0, 30))
        w.start_partial(rng.randint(1, 120))
    elif what == "rename":
        w.rotate_create(before_reopen=rng.randint(0, 20), header=rng.choice([0, 1]))
    elif what == "copytruncate":
        w.copytruncate(between=0, hole=rng.random() < 0.3)
    else:
        w.append(rng.randint(50, 400))
        what = "append"
    return what


def _tidy(w: World, rng: random.Random) -> None:
    """After a settle everything is committed: old rotations may be compressed or deleted
    (what logrotate does), which keeps the directory small."""
    while len(w.rotated()) > 3:
        if rng.random() < 0.5:
            w.compress_oldest()
        else:
            w.delete_oldest()


def _faulty_run(d: TortureDaemon, w: World, rng: random.Random, point: str) -> bool:
    """Run until the fault kills the daemon; True if it did (False: never reached)."""
    n = rng.randint(1, MAX_N[point])
    d.with_fault(f"{point}:{n}").start()
    started = time.monotonic()
    termed = False
    while d.alive() and time.monotonic() - started < RUN_LIMIT:
        w.append(rng.randint(20, 300))
        if rng.random() < 0.25:
            _disturb(w, rng)
        if point == "drain" and not termed and d.status() is not None:
            time.sleep(rng.uniform(0.0, 0.5))
            w.append(2000)  # a full queue to drain
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)
            termed = True
        time.sleep(rng.uniform(0.02, 0.2))
    if d.alive():
        d.stop(timeout=30)
        return False
    assert d.proc is not None
    code = d.proc.returncode
    assert code == -signal.SIGKILL, f"the daemon died by itself (exit {code}):\n{d.tail()}"
    return True


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_every_point(rig: Rig, point: str) -> None:
    rng = random.Random(f"{point}/{rig.db.kind}")
    w = World(rig.log_dir, header=1, first_id=1)
    w.append(500)
    d = rig.daemon()
    kills = runs = 0
    history: list[str] = []
    while kills < KILLS and runs < 2 * KILLS + 4:
        runs += 1
        history.append(_disturb(w, rng))
        killed = _faulty_run(d, w, rng, point)
        kills += killed
        history.append(f"run {runs}: {'killed' if killed else 'not reached'}")
        w.forget_held()
        d.with_fault(None).start()
        settle(w, rig.db, d, timeout=30,
               context=lambda: "history: " + ", ".join(history[-12:]) + "\n"
               + "\n".join(w.log[-10:]))
        _tidy(w, rng)
        code = d.stop(timeout=30)
        assert code in (0, -15), d.tail()
        w.forget_held()
    key = f"{rig.db.kind}/{point}"
    TOTALS[key] = kills
    print(f"\n{key}: {kills} kills in {runs} runs, {len(w.written)} lines")
    assert kills >= KILLS, f"only {kills} of {runs} runs reached {point}"


@pytest.mark.parametrize("mode", CommitCutProxy.MODES)
def test_uncertain_commit(mysql_db: DbHandle, mysql_server: dict[str, Any], tmp_path: Path,
                          mode: str) -> None:
    """The connection breaks around COMMIT: ``sent`` (COMMIT reaches the server, the answer
    never comes back), ``withheld`` (dropped before COMMIT: the server rolls back),
    ``zombie`` (dropped on the client's side only: the server's session lives on inside its
    transaction, holding the locks on the batch's keys and checkpoint row, as after a
    partition the server has not noticed). The retried batch is stored once, within the
    settle timeout, nothing is lost and no row becomes a reject."""
    cuts = 12 if LONG else 3
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    with CommitCutProxy(mysql_server["host"], mysql_server["port"]) as proxy:
        env = {**mysql_db.env, **FAST_ENV, "DB_HOST": "127.0.0.1", "DB_PORT": str(proxy.port)}
        w = World(log_dir, header=1, malformed_every=0)
        w.append(50)
        d = TortureDaemon(env, log_dir, tmp_path / "daemon.log").start()
        try:
            settle(w, mysql_db, d)
            for i in range(cuts):
                proxy.arm(1, mode=mode)
                w.append(300 + 100 * i)
                wait_until(lambda: proxy.armed == 0, 15, "a COMMIT to break",
                           on_timeout=d.tail)
                settle(w, mysql_db, d, timeout=15)
            assert proxy.cuts == cuts
            assert "commit failed, will retry" in d.log_text()
            rejects = mysql_db.rows("SELECT reason FROM rejected_line")
            assert not rejects, f"rows turned into rejects by the retry: {rejects[:5]}"
            doc = d.status()
            print(f"\nuncertain commit ({mode}): {proxy.cuts} cuts,"
                  f" {len(w.written)} lines; daemon totals: {doc and doc['totals']}")
            assert d.stop() == 0
        finally:
            d.ensure_stopped()
            w.close()


# -- the first start -----------------------------------------------------------------------

OUR_TABLES_SQL = ("SELECT table_name FROM information_schema.tables"
                  " WHERE table_schema = DATABASE()")


@pytest.mark.parametrize("made", [1, 5, 9])
def test_start_after_a_kill_while_creating_the_schema(mysql_db: DbHandle,
                                                      mysql_server: dict[str, Any],
                                                      tmp_path: Path, made: int) -> None:
    """MariaDB commits each CREATE TABLE on its own, so a daemon killed during its first
    start leaves some of its tables and no version row. Here that state is made directly
    (the first ``made`` statements of the schema): the next start must finish the schema
    and read the files, not refuse the database as another program's."""
    from lmod_tracker.store.base import schema_statements

    for statement in schema_statements("mysql")[:made]:
        mysql_db.execute(statement)
    rig = Rig(mysql_db, tmp_path, mysql_server)
    try:
        w = World(rig.log_dir, header=1)
        w.append(100)
        d = rig.daemon().start()
        settle(w, mysql_db, d)
    finally:
        rig.close()


def test_sigkill_during_the_first_start(mysql_db: DbHandle, mysql_server: dict[str, Any],
                                        tmp_path: Path) -> None:
    """The same with a real SIGKILL: the daemon is killed as soon as the first of its tables
    exists on a fresh database; started again, it must read everything."""
    rig = Rig(mysql_db, tmp_path, mysql_server)
    try:
        w = World(rig.log_dir, header=1)
        w.append(100)
        d = rig.daemon().start()
        deadline = time.monotonic() + 30
        tables: set[str] = set()
        while time.monotonic() < deadline and not tables:
            tables = {str(r[0]) for r in mysql_db.rows(OUR_TABLES_SQL)}
        d.kill()
        tables = {str(r[0]) for r in mysql_db.rows(OUR_TABLES_SQL)}
        versioned = "lmod_tracker_schema" in tables and mysql_db.scalar(
            "SELECT COUNT(*) FROM lmod_tracker_schema")
        print(f"\nkilled with {len(tables)} tables, version row: {bool(versioned)}")
        d.start()
        settle(w, mysql_db, d)
    finally:
        rig.close()

"""db prune: old loads go, in small transactions; the rollup, the checkpoints and younger
rejects stay. Exact counts on both backends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lmod_tracker.config import load_settings
from lmod_tracker.events import FileKey, LoadEvent, Rejected
from lmod_tracker.retention import apply_retention, prune
from lmod_tracker.store.base import Batch
from tests.support.daemon import cli
from tests.support.databases import DbHandle
from tests.support.facts import rollup, store_for

KEY = FileKey(3, 4, "0123456789abcdef")
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _events(day: dt.date, n: int, salt: int) -> list[LoadEvent]:
    return [LoadEvent(f"{day:%Y-%m-%d} 12:{i // 60 % 60:02d}:{i % 60:02d}.{salt:06d}",
                      f"u{i % 11}", f"p{i % 4}", "1", f"n{i % 3}", None,
                      None if i % 2 else str(i), ("c1", None)[i % 2], (1, 0)[i % 2])
            for i in range(n)]


async def _fill(db: DbHandle) -> dict[str, int]:
    """Loads 800, 420, 380, 30 and 1 days ago; three rejects seen 400 days ago, two today."""
    store = store_for(db)
    await store.open()
    await store.init_schema()
    counts = {}
    for age, n in ((800, 350), (420, 1234), (380, 99), (30, 500), (1, 10)):
        day = (NOW - dt.timedelta(days=age)).date()
        batch = Batch(events=_events(day, n, age),
                      rejects=[(KEY, "lmod.log", Rejected(age, "missing user=", b"x"))],
                      checkpoints={KEY: ("lmod.log", 1000 + age, "")})
        assert (await store.commit("prune", batch)).inserted == n
        counts[str(age)] = n
    await store.close()
    old = (NOW - dt.timedelta(days=400)).strftime("%Y-%m-%d %H:%M:%S")
    db.execute("UPDATE rejected_line SET seen_at = %s WHERE byte_offset >= 380", (old,))
    return counts


def test_prune_cli_deletes_exactly_the_old_loads(db: DbHandle, tmp_path: Path) -> None:
    import asyncio

    env = {**db.env, "HOME": str(tmp_path)}
    asyncio.run(_fill(db))
    before_rollup = rollup(db)
    checkpoints = db.rows("SELECT instance, byte_offset FROM file_checkpoint")

    proc = cli(env, "db", "prune", "--older-than", "13mo", "--batch-rows", "100")
    # 13 months is 395-397 days: the loads of 800 and 420 days ago go, 380 stays.
    assert "deleted 1584 loads and 3 rejected lines" in proc.stdout, proc.stdout
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 99 + 500 + 10
    assert rollup(db) == before_rollup  # the rollup keeps every load ever counted
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 350 + 1234 + 99 + 500 + 10
    assert db.rows("SELECT instance, byte_offset FROM file_checkpoint") == checkpoints
    assert db.scalar("SELECT COUNT(*) FROM rejected_line") == 2  # those seen today
    # Nothing left to do: a second run deletes nothing.
    assert "deleted 0 loads and 0 rejected lines" in cli(
        env, "db", "prune", "--older-than", "13mo").stdout
    # A date works too; the views count what is left.
    day = (NOW - dt.timedelta(days=29)).strftime("%Y-%m-%d")
    assert "deleted 599 loads" in cli(env, "db", "prune", "--older-than", day).stdout
    assert db.scalar("SELECT SUM(count) FROM package_count") == 10

    bad = cli(env, "db", "prune", "--older-than", "13 months", check=False)
    assert bad.returncode == 2 and "--older-than" in bad.stderr


async def test_prune_walks_in_small_transactions_with_progress(
        db: DbHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    await _fill(db)
    store = store_for(db)
    await store.open()
    calls: list[tuple[int, int]] = []
    deletes: list[tuple[str, int, int]] = []
    real = store.prune_range

    async def counted(table: str, before: str, low: int, high: int) -> int:
        deletes.append((table, low, high))
        return await real(table, before, low, high)
    monkeypatch.setattr(store, "prune_range", counted)
    before = (NOW - dt.timedelta(days=410)).strftime("%Y-%m-%d %H:%M:%S.%f")
    result = await prune(store, before, step=250,
                         progress=lambda n, total: calls.append((n, total)))
    await store.close()
    assert result.deleted == {"module_usage": 350 + 1234, "rejected_line": 0}  # seen 400 d ago
    assert all(high - low <= 250 for _, low, high in deletes)
    assert len(calls) == len(deletes) and sum(n for n, _ in calls) == calls[0][1]
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 609


async def test_retention_setting(db: DbHandle, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    await _fill(db)
    store = store_for(db)
    await store.open()
    env = {k.removeprefix("LMOD_TRACKER_").lower() if k.startswith("LMOD_TRACKER_") else k: v
           for k, v in db.env.items()}
    assert await apply_retention(store, load_settings(**env)) is None  # unset: keep all
    result = await apply_retention(store, load_settings(**env, retention="400d"))
    await store.close()
    assert result is not None and result.deleted["module_usage"] == 350 + 1234
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 350 + 1234 + 99 + 500 + 10


def test_daemon_applies_retention_at_start(db: DbHandle, tmp_path: Path) -> None:
    """The daemon's ``retention`` setting prunes at start (then daily): loads of 2023 go, the
    rollup that summarises them stays."""
    from tests.support.daemon import Daemon, wait_until

    log_dir = tmp_path / "log"
    log_dir.mkdir()
    line = ("Apr 27 03:22:57 node1 ModuleUsageTracking: user=u{n} module=gcc/12"
            " host=node1 time=1682580{n:03d}.5\n")
    (log_dir / "lmod.log").write_text("".join(line.format(n=n) for n in range(30)))
    env = {**db.env, "HOME": str(tmp_path)}
    cli(env, "run", "--once", "--log-dir", str(log_dir))
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 30
    with Daemon({**env, "LMOD_TRACKER_RETENTION": "30d"}, log_dir,
                tmp_path / "daemon.log") as daemon:
        # The log line comes after the last delete (rejected lines are pruned after the
        # loads): wait for it, not only for the rows, or SIGTERM may cancel the prune.
        wait_until(lambda: "retention: old rows deleted" in daemon.log_text(), 30,
                   "retention to prune the old loads", on_timeout=daemon.log_text)
        assert daemon.stop() == 0
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 0
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 30

"""usage_daily is written in the transaction of the facts it counts, so it always equals a
GROUP BY over module_usage: after crashes at every point of a commit, re-reads, overlapping
files, and poison rows isolated by the writer (whose sub-batches commit separately)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmod_tracker.events import LoadEvent
from lmod_tracker.store.base import Batch
from tests.support.daemon import cli
from tests.support.databases import DbHandle
from tests.support.facts import (
    assert_rollup_agrees,
    distinct_loads,
    mixed_lines,
    store_for,
    write_two_chunks,
)


def test_crashes_and_rereads_keep_rollup_equal_to_facts(db: DbHandle, tmp_path: Path) -> None:
    lines = mixed_lines(3000)
    log = tmp_path / "lmod.log"
    log.write_text("".join(lines))
    env = {**db.env, "HOME": str(tmp_path), "LMOD_TRACKER_BATCH_SIZE": "300",
           "LMOD_TRACKER_READ_BLOCK_BYTES": "16384",
           "LMOD_TRACKER_INSTANCE": "rollup"}
    cli(env, "db", "init")
    # SIGKILL after a batch's rows and rollup were sent but before COMMIT, and just after
    # a COMMIT; each restart resumes from the committed checkpoint.
    for fault in ("insert:2", "commit:3", "insert:1", "commit:1"):
        proc = cli({**env, "LMOD_TRACKER_FAULT": fault}, "ingest", str(log), check=False)
        assert proc.returncode == -9, (fault, proc.returncode, proc.stderr[-500:])
        assert_rollup_agrees(db)
    cli(env, "ingest", str(log))
    want = distinct_loads(lines)
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == want
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == want
    assert_rollup_agrees(db)

    # Re-reading everything, and a copy whose first half overlaps, adds nothing.
    proc = cli(env, "ingest", "--from-start", str(log))
    assert f"(0 events committed, {want}" in proc.stdout or " 0 events" in proc.stdout \
        or proc.stdout.startswith("0 events"), proc.stdout
    copy = tmp_path / "lmod.log-copy"
    more = mixed_lines(4000, seed=1)[len(lines) - 200:]  # not line-aligned: new content
    copy.write_text("".join(lines[1500:]) + "".join(more))
    cli(env, "ingest", str(copy))
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == distinct_loads(lines + more)
    assert_rollup_agrees(db)
    # The facts the lines carry are the ones stored.
    assert db.scalar("SELECT COUNT(*) FROM usage_daily WHERE cluster_id <> 0") > 0
    assert db.scalar("SELECT SUM(user_loads) FROM usage_daily") == db.scalar(
        "SELECT COUNT(*) FROM module_usage WHERE userload = 1") > 0
    assert db.scalar("SELECT COUNT(DISTINCT day) FROM usage_daily") >= 3


def _valid(i: int) -> LoadEvent:
    return LoadEvent(f"2024-01-0{1 + i % 3} 00:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}."
                     f"{i % 1000:06d}", f"u{i % 97}", f"pkg{i % 13}", f"{i % 5}.0",
                     f"node{i % 7}", f"/m/pkg{i % 13}/{i % 5}.0.lua",
                     None if i % 3 else str(i), ("c1", "c2", None)[i % 3], (1, 0, None)[i % 2])


@pytest.mark.parametrize("seed", [1, 2])
async def test_poison_rows_isolated_rollup_counts_only_committed(
        db: DbHandle, tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    rng = random.Random(seed)
    n_valid = 3000
    events = [_valid(i) for i in range(n_valid)]
    n_poison = rng.randrange(3, 9)
    for _ in range(n_poison):  # not encodable: refused by both databases
        events.insert(rng.randrange(len(events)), LoadEvent(
            "2024-01-02 00:00:00.000001", "u\udcff", "gcc", "1", "n", None, None, "c1", 1))
    store = store_for(db)
    await store.open()
    await store.init_schema()
    # A part of the same rows is already stored: the rollup must not count it twice.
    stored = [e for e in events[:700] if "\udcff" not in e.user]
    assert (await store.commit("poison", Batch(events=stored))).inserted == len(stored)
    await write_two_chunks(store, "poison", events)
    await store.close()
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == n_valid
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == n_valid
    assert_rollup_agrees(db)


async def test_rollup_after_a_failed_transaction_is_untouched(
        db: DbHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that fails after the rollup statement rolls both back."""
    monkeypatch.setenv("HOME", str(tmp_path))
    from lmod_tracker import faults

    store = store_for(db)
    await store.open()
    await store.init_schema()
    events = [_valid(i) for i in range(500)]
    await store.commit("x", Batch(events=events[:200]))

    def boom(name: str) -> None:
        if name == "insert":
            raise ConnectionError("lost")
    monkeypatch.setattr(faults, "point", boom)
    with pytest.raises(Exception):  # noqa: B017 - whatever the backend makes of it
        await store.commit("x", Batch(events=events))
    monkeypatch.undo()
    monkeypatch.setenv("HOME", str(tmp_path))
    await store.reset()
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 200
    result = await store.commit("x", Batch(events=events))
    assert (result.inserted, result.duplicates) == (300, 200)
    await store.close()
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == 500
    assert_rollup_agrees(db)

"""Rows the database refuses never block the others (the *data* failure class).

The parser never produces a value the schema refuses (test_schema_limits.py), so these tests
hand the real writer and the real stores events built by hand: values too long for their
column, and text that cannot be encoded (a file name's undecodable bytes in a user name).
Every valid row must commit, every poison row must become exactly one reject, and the
checkpoints must commit with them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmod_tracker.events import LoadEvent
from tests.support.databases import DbHandle
from tests.support.facts import store_for, write_two_chunks


def _valid(i: int) -> LoadEvent:
    return LoadEvent(f"2024-01-01 00:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:06d}",
                     f"u{i % 97}", f"pkg{i % 13}", f"{i % 5}.0", f"node{i % 7}",
                     f"/m/pkg{i % 13}/{i % 5}.0.lua", None if i % 3 else str(i))


def _poison(rng: random.Random, kind: str) -> LoadEvent:
    t = f"2024-02-01 00:00:00.{rng.randrange(10**6):06d}"
    if kind == "long-user":
        return LoadEvent(t, "u" * 300, "gcc", "1", "n", None, None)
    if kind == "long-version":
        return LoadEvent(t, "u", "gcc", "9" * 200, "n", None, None)
    if kind == "long-jobid":
        return LoadEvent(t, "u", "gcc", "1", "n", None, "7" * 100)
    return LoadEvent(t, "u\udcff", "gcc", "1", "n", None, None)  # not encodable as UTF-8


@pytest.mark.parametrize("seed", [1, 2])
async def test_poison_rows_among_valid_ones(db: DbHandle, tmp_path: Path, seed: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    rng = random.Random(seed)
    kinds = ["long-user", "long-version", "long-jobid", "unencodable"]
    if db.kind == "sqlite":
        kinds = ["unencodable"]  # SQLite stores text of any length
    n_valid, n_poison = 3000, rng.randrange(3, 12)
    events = [_valid(i) for i in range(n_valid)]
    poison_at = sorted(rng.sample(range(n_valid + n_poison), n_poison))
    for at in poison_at:
        events.insert(at, _poison(rng, rng.choice(kinds)))

    store = store_for(db)
    await store.open()
    await store.init_schema()
    stats = await write_two_chunks(store, "poison", events)
    await store.close()

    assert db.scalar("SELECT COUNT(*) FROM module_usage") == n_valid
    assert db.scalar("SELECT COUNT(*) FROM rejected_line") == n_poison
    assert stats.events == n_valid and stats.poisoned == n_poison
    reasons = [r[0] for r in db.rows("SELECT reason FROM rejected_line")]
    assert all(r.startswith("refused by the database: ") and len(r) <= 255 for r in reasons)
    assert db.scalar("SELECT byte_offset FROM file_checkpoint WHERE instance = 'poison'") == 2000
    # The valid rows are the ones written, value for value.
    stored = sorted((str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in db.rows(
        "SELECT u.name, p.name, p.version, m.load_time FROM module_usage m"
        " JOIN `user` u ON u.id = m.user_id JOIN package p ON p.id = m.package_id"))
    wanted = sorted((e.user, e.package, e.version, e.load_time)
                    for e in (_valid(i) for i in range(n_valid)))
    assert [s[:3] for s in stored] == [w[:3] for w in wanted]


async def test_rows_a_site_trigger_refuses(db: DbHandle, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A site's own trigger that refuses some rows (MariaDB SIGNAL, error 1644; SQLite
    RAISE(ABORT)) refuses values, not the database: before, MariaDB's refusal was retried
    for ever and nothing else was stored."""
    monkeypatch.setenv("HOME", str(tmp_path))
    store = store_for(db)
    await store.open()
    await store.init_schema()
    if db.kind == "mysql":
        db.execute("CREATE TRIGGER site_policy BEFORE INSERT ON module_usage FOR EACH ROW"
                   " BEGIN IF NEW.jobid = 'blocked' THEN SIGNAL SQLSTATE '45000'"
                   " SET MESSAGE_TEXT = 'refused by site policy'; END IF; END")
    else:
        db.execute("CREATE TRIGGER site_policy BEFORE INSERT ON module_usage"
                   " WHEN NEW.jobid = 'blocked' BEGIN"
                   " SELECT RAISE(ABORT, 'refused by site policy'); END")
    events = [_valid(i) for i in range(500)]
    for at in (3, 250, 499):
        events.insert(at, _valid(1000 + at)._replace(jobid="blocked"))
    stats = await write_two_chunks(store, "trigger", events)
    await store.close()
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 500
    assert stats.poisoned == 3
    reasons = [r[0] for r in db.rows("SELECT reason FROM rejected_line")]
    assert len(reasons) == 3 and all("refused by site policy" in r for r in reasons)

"""The natural key, decided on evidence, and the new facts, on both backends.

A load is identified by (load_time, host, user, package, jobid, modulefile): two loads that
differ only in jobid or modulefile are two loads, even in one microsecond, while the same line
read again (in one batch or later, from any copy) is one. NULL jobids and modulefiles compare
equal in the key, in the database itself (a second writer racing on the same rows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmod_tracker.events import LoadEvent
from lmod_tracker.store.base import Batch
from tests.support.databases import DbHandle
from tests.support.facts import assert_rollup_agrees, store_for

T = "2024-05-01 10:00:00.000000"  # a hook that logs whole seconds


def _e(jobid: str | None = None, path: str | None = "/m/gcc/12.lua", *, user: str = "alice",
       cluster: str | None = None, userload: int | None = None, t: str = T) -> LoadEvent:
    return LoadEvent(t, user, "gcc", "12", "node1", path, jobid, cluster, userload)


CASES = {
    # name: (events, rows stored)
    "two jobs of one user, one node, one second": ([_e("123"), _e("124")], 2),
    "array tasks of one job": ([_e("123_1"), _e("123_2"), _e("123_3")], 3),
    "het job components": ([_e("77+0"), _e("77+1")], 2),
    "in a job and outside one": ([_e("123"), _e(None)], 2),
    "two modulefile trees": ([_e(None, "/m/gcc/12.lua"), _e(None, "/home/a/m/gcc/12.lua")], 2),
    "with and without a path": ([_e(None, "/m/gcc/12.lua"), _e(None, None)], 2),
    "the same line twice": ([_e("123"), _e("123")], 1),
    "the same line twice, no jobid, no path": ([_e(None, None), _e(None, None)], 1),
    "other users": ([_e(None, user="a"), _e(None, user="b")], 2),
}


@pytest.fixture
async def store(db: DbHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))
    s = store_for(db)
    await s.open()
    await s.init_schema()
    yield s
    await s.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_natural_key(db: DbHandle, store, case: str) -> None:  # type: ignore[no-untyped-def]
    events, stored = CASES[case]
    first = await store.commit("k", Batch(events=list(events)))
    assert first.inserted == stored
    # Read again, in one batch with a new load, and in reverse order: nothing is added twice.
    new = _e("999", t="2024-05-01 10:00:01.000000")
    again = await store.commit("k", Batch(events=[*reversed(events), new]))
    assert (again.inserted, again.duplicates) == (1, len(events))
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == stored + 1
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == stored + 1
    assert_rollup_agrees(db)


async def test_the_database_itself_treats_null_jobid_and_path_as_equal(
        db: DbHandle, store) -> None:  # type: ignore[no-untyped-def]
    await store.commit("k", Batch(events=[_e(None, None), _e("5", None), _e(None, "/p")]))
    for jobid, path in ((None, None), ("5", None), (None, "/p")):
        row = db.rows("SELECT user_id, package_id, host_id, modulefile_id FROM module_usage"
                      " WHERE " + ("jobid IS NULL" if jobid is None else "jobid = '5'")
                      + (" AND modulefile_id IS NULL" if path is None else
                         " AND modulefile_id IS NOT NULL"))[0]
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            db.execute("INSERT INTO module_usage (user_id, package_id, host_id, modulefile_id,"
                       " jobid, load_time) VALUES (%s, %s, %s, %s, %s, %s)", (*row, jobid, T))
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 3


async def test_cluster_and_userload_are_stored(db: DbHandle, store) -> None:  # type: ignore[no-untyped-def]
    t2 = "2024-05-02 00:00:00.000001"
    events = [_e("1", cluster="frontera", userload=1), _e("2", cluster="frontera", userload=0),
              _e("3", cluster="ls6", userload=None), _e("4", cluster=None, userload=1),
              _e("5", cluster="frontera", userload=1, t=t2)]
    assert (await store.commit("k", Batch(events=events))).inserted == 5
    assert sorted(r[0] for r in db.rows("SELECT name FROM cluster")) == ["frontera", "ls6"]
    got = sorted((str(j), c, u) for j, c, u in db.rows(
        "SELECT m.jobid, c.name, m.userload FROM module_usage m"
        " LEFT JOIN cluster c ON c.id = m.cluster_id"))
    assert got == [("1", "frontera", 1), ("2", "frontera", 0), ("3", "ls6", None),
                   ("4", None, 1), ("5", "frontera", 1)]
    daily = sorted([(str(d)[:10], c, int(n), int(u)) for d, c, n, u in db.rows(
        "SELECT d.day, c.name, d.loads, d.user_loads FROM usage_daily d"
        " LEFT JOIN cluster c ON c.id = d.cluster_id")], key=str)
    assert daily == sorted([("2024-05-01", "frontera", 2, 1), ("2024-05-01", "ls6", 1, 0),
                            ("2024-05-01", None, 1, 1), ("2024-05-02", "frontera", 1, 1)],
                           key=str)
    assert db.scalar("SELECT COUNT(*) FROM usage_daily WHERE cluster_id = 0") == 1
    # The lmod_tracking views answer as before.
    assert db.scalar("SELECT count FROM package_version_count WHERE package = 'gcc'") == 5
    assert db.scalar("SELECT COUNT(*) FROM overview WHERE user = 'alice'") == 5
    assert db.scalar("SELECT SUM(count) FROM package_count") == 5

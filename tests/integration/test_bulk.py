"""Every batch shape takes MariaDB's binary bulk path: no silent fallback to text INSERTs.

The server counts the statements of the store's connection (``SHOW SESSION STATUS``): every
statement the store sends is one binary execute (``Com_stmt_execute``), a batch of rows one bulk
execute; a batch asyncmy falls back on goes as text INSERTs, which that counter does not see.
"""

from __future__ import annotations

import pytest

from lmod_tracker.events import FileKey, LoadEvent, Rejected
from lmod_tracker.store.base import Batch
from lmod_tracker.store.mysql import MySQLStore
from tests.support.databases import DbHandle

KEY = FileKey(7, 8, "0123456789abcdef")


def _event(i: int, *, path: bool, jobid: bool, empty_version: bool = False) -> LoadEvent:
    return LoadEvent(f"2024-03-01 00:00:{i // 10**6 % 60:02d}.{i % 10**6:06d}", f"u{i % 50}",
                     f"p{i % 20}", "" if empty_version else f"{i % 3}", f"n{i % 9}",
                     f"/m/p{i % 20}/{i % 3}.lua" if path else None,
                     str(1000 + i) if jobid else None)


SHAPES = {
    "no path, no jobid": lambda i: _event(i, path=False, jobid=False),
    "path, no jobid": lambda i: _event(i, path=True, jobid=False),
    "jobid, no path": lambda i: _event(i, path=False, jobid=True),
    "everything": lambda i: _event(i, path=True, jobid=True),
    "jobid in some rows": lambda i: _event(i, path=True, jobid=i % 10 == 0),
    "empty versions": lambda i: _event(i, path=False, jobid=False, empty_version=True),
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_every_batch_shape_is_one_bulk_execute(mysql_db: DbHandle, shape: str) -> None:
    env = mysql_db.env
    store = MySQLStore(host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"],
                       password=env["DB_PASS"], database=env["DB_NAME"])
    await store.open()
    await store.init_schema()
    make = SHAPES[shape]
    try:
        for n, start in ((3000, 0), (12000, 3000)):  # the second is split into statements
            batch = Batch(events=[make(i) for i in range(start, start + n)],
                          rejects=[(KEY, "lmod.log", Rejected(start, "missing user=", b"x"))],
                          checkpoints={KEY: ("lmod.log", start + n, "")})
            before = await store.session_counters()
            result = await store.commit("bulk", batch)
            after = await store.session_counters()
            assert result.inserted == n
            sent = after["statements"] - before["statements"]
            binary = after["Com_stmt_execute"] - before["Com_stmt_execute"]
            assert after["Com_insert"] > before["Com_insert"]
            assert binary == sent, f"{sent - binary} of {sent} statements went as text"
    finally:
        await store.close()
    assert mysql_db.scalar("SELECT COUNT(*) FROM module_usage") == 15000
    want_path = shape in ("path, no jobid", "everything", "jobid in some rows")
    assert (mysql_db.scalar("SELECT COUNT(modulefile_id) FROM module_usage") > 0) == want_path

"""The embedded SQLite store: one file, WAL journal, all calls on one worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from lmod_tracker import faults
from lmod_tracker.errors import PermanentError, StoreError, TransientError, classify_sqlite
from lmod_tracker.events import FileKey
from lmod_tracker.files import Checkpoint
from lmod_tracker.store.base import (
    OUR_TABLES,
    SCHEMA_VERSION,
    Batch,
    CommitResult,
    IdCache,
    cut,
    db_path,
    dimension_values,
    fact_rows,
    foreign_schema_error,
    month_bounds,
    months_of,
    months_to_build,
    natural_key,
    rollup_rows,
    schema_statements,
    utc_from_db,
    utc_now_text,
)

T = TypeVar("T")

_CHUNK = 500  # bound parameters per lookup statement (SQLite's limit is 32766)

#: Statements that move the schema from version N-1 to N (each checked first: re-runnable).
_UPGRADES: dict[int, list[tuple[str, str]]] = {
    # version: [(query returning a row when the step is still needed, statement)]
    2: [("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pragma_table_info('file_checkpoint')"
         " WHERE name = 'tail')",
         "ALTER TABLE file_checkpoint ADD COLUMN tail TEXT NOT NULL DEFAULT ''")],
    # module_usage is rebuilt: its natural key was a table constraint, which SQLite cannot drop
    3: [("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pragma_table_info('module_usage')"
         " WHERE name = 'cluster_id')", stmt) for stmt in (
        "DROP VIEW IF EXISTS overview",
        "DROP VIEW IF EXISTS package_count",
        "DROP VIEW IF EXISTS package_version_count",
        "CREATE TABLE module_usage_v3 (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
        " package_id INTEGER NOT NULL, host_id INTEGER NOT NULL, modulefile_id INTEGER,"
        " jobid TEXT, load_time TEXT NOT NULL, cluster_id INTEGER, userload INTEGER)",
        "INSERT INTO module_usage_v3 (id, user_id, package_id, host_id, modulefile_id, jobid,"
        " load_time) SELECT id, user_id, package_id, host_id, modulefile_id, jobid, load_time"
        " FROM module_usage",
        "DROP TABLE module_usage",
    )] + [
        ("SELECT 1 WHERE EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'module_usage_v3')",
         "ALTER TABLE module_usage_v3 RENAME TO module_usage"),
        # every table and index of the current schema (cluster, usage_daily, the new key)
        *(("SELECT 1", stmt) for stmt in schema_statements("sqlite")
          if stmt.startswith(("CREATE TABLE", "CREATE INDEX", "CREATE UNIQUE INDEX"))),
        # the rollup of everything stored, in the same transaction as the version row
        ("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM usage_daily)",
         "INSERT INTO usage_daily (day, cluster_id, package_id, user_id, loads, user_loads,"
         " first_load, last_load) SELECT substr(load_time, 1, 10), IFNULL(cluster_id, 0),"
         " package_id, user_id, COUNT(*), COUNT(CASE WHEN userload = 1 THEN 1 END),"
         " MIN(load_time), MAX(load_time) FROM module_usage"
         " GROUP BY substr(load_time, 1, 10), IFNULL(cluster_id, 0), package_id, user_id")],
    # the monthly rollup: empty, built by the daemon or `db months` (no month is marked built)
    4: [("SELECT 1", stmt) for stmt in schema_statements("sqlite")
        if stmt.startswith(("CREATE TABLE", "CREATE INDEX"))
        and ("usage_month" in stmt or "package_monthly" in stmt)],
}
#: What db prune deletes from: table -> time column.
_PRUNABLE = {"module_usage": "load_time", "rejected_line": "seen_at"}
_SELECT_EXISTING = (
    "SELECT load_time, host_id, user_id, package_id, jobid, modulefile_id FROM module_usage"
    " WHERE load_time IN ")

_DIMENSIONS: dict[str, tuple[str, str, str]] = {
    # table: (insert, select-by-keys prefix, key columns)
    "user": ("INSERT INTO user (name) VALUES (?) ON CONFLICT DO NOTHING",
             "SELECT id, name FROM user WHERE name IN ", "name"),
    "host": ("INSERT INTO host (name) VALUES (?) ON CONFLICT DO NOTHING",
             "SELECT id, name FROM host WHERE name IN ", "name"),
    "modulefile": ("INSERT INTO modulefile (path) VALUES (?) ON CONFLICT DO NOTHING",
                   "SELECT id, path FROM modulefile WHERE path IN ", "path"),
    "cluster": ("INSERT INTO cluster (name) VALUES (?) ON CONFLICT DO NOTHING",
                "SELECT id, name FROM cluster WHERE name IN ", "name"),
}


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (BEGIN IMMEDIATE: the file's write lock from the start), committed
    at the end of the block, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


#: Failures to create the file's directory that may pass by themselves (the rest are settings
#: or permissions to fix: a read-only file system, access denied, a file in the way).
_OS_TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EINTR, errno.EAGAIN,
                           errno.ENOMEM})


class SQLiteStore:
    """Store on a local SQLite file. Several processes may share the file (WAL, busy timeout)."""

    backend = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._ids = IdCache()
        self.call_started: float | None = None

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        self.call_started = time.monotonic()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except (sqlite3.Error, UnicodeError, OverflowError) as exc:
            raise classify_sqlite(exc, self.describe()) from None
        except OSError as exc:  # the directory of the file cannot be created
            text = f"{self.describe()}: cannot create {self.path.parent}: {exc.strerror}"
            if exc.errno in _OS_TRANSIENT:
                raise TransientError(text) from None
            raise PermanentError(f"{text} (check sqlite_path and the permissions of its"
                                 " directory)") from None
        finally:
            self.call_started = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        await self._run(self._connect)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        await self._run(close)
        self._executor.shutdown(wait=True)

    async def reset(self) -> None:
        def reset() -> None:
            if self._conn is not None:
                if self._conn.in_transaction:
                    self._conn.rollback()
                self._conn.close()
                self._conn = None
        try:
            await self._run(reset)
        except StoreError:
            self._conn = None

    async def init_schema(self) -> None:
        def init() -> None:
            with _immediate(self._connect()) as conn:
                for stmt in schema_statements("sqlite"):
                    conn.execute(stmt)
        await self._run(init)

    async def schema_version(self) -> int | None:
        def version() -> int | None:
            conn = self._connect()
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
            if "lmod_tracker_schema" not in tables:
                found = sorted(tables.intersection(OUR_TABLES))
                if found:
                    raise foreign_schema_error(self.describe(), found)
                return None
            row = conn.execute("SELECT MAX(version) FROM lmod_tracker_schema").fetchone()
            return None if row is None or row[0] is None else int(row[0])
        return await self._run(version)

    async def checkpoint(self, instance: str, key: FileKey) -> list[Checkpoint]:
        def lookup() -> list[Checkpoint]:
            rows = self._connect().execute(
                "SELECT byte_offset, tail, dev = ? AND ino = ? AS exact FROM file_checkpoint"
                " WHERE instance = ? AND fingerprint = ?"
                " ORDER BY exact DESC, byte_offset DESC LIMIT 16",
                (key.dev, key.ino, instance, key.fingerprint)).fetchall()
            return [Checkpoint(int(o), str(t), bool(e)) for o, t, e in rows]
        return await self._run(lookup)

    async def upgrade(self) -> list[int]:
        def upgrade() -> list[int]:
            conn = self._connect()
            row = conn.execute("SELECT MAX(version) FROM lmod_tracker_schema").fetchone()
            found = int(row[0]) if row and row[0] is not None else SCHEMA_VERSION
            applied = []
            for version in range(found + 1, SCHEMA_VERSION + 1):
                with _immediate(conn):
                    for needed, statement in _UPGRADES[version]:
                        if conn.execute(needed).fetchone():
                            conn.execute(statement)
                    conn.execute("INSERT INTO lmod_tracker_schema (version, applied_at)"
                                 " VALUES (?, ?)", (version, utc_now_text()))
                applied.append(version)
            return applied
        applied = await self._run(upgrade)
        if applied:
            await self.init_schema()
        return applied

    async def probe(self) -> None:
        def probe() -> None:
            conn = self._connect()
            conn.execute("SELECT MAX(version) FROM lmod_tracker_schema").fetchone()
            conn.execute("BEGIN IMMEDIATE")  # not locked for long
            try:
                # A write that changes nothing: a read-only file (or one opened read-only,
                # as SQLite does when it may not write it) refuses it; BEGIN alone does not.
                conn.execute("DELETE FROM file_checkpoint WHERE 0")
            finally:
                conn.execute("ROLLBACK")
        await self._run(probe)

    async def committed(self, instance: str) -> dict[FileKey, int]:
        def lookup() -> dict[FileKey, int]:
            rows = self._connect().execute(
                "SELECT dev, ino, fingerprint, byte_offset FROM file_checkpoint"
                " WHERE instance = ?", (instance,)).fetchall()
            return {FileKey(int(d), int(i), str(f)): int(o) for d, i, f, o in rows}
        return await self._run(lookup)

    async def last_commit(self, instance: str) -> dt.datetime | None:
        def lookup() -> dt.datetime | None:
            (when,) = self._connect().execute(
                "SELECT MAX(updated_at) FROM file_checkpoint WHERE instance = ?",
                (instance,)).fetchone()
            return utc_from_db(when)
        return await self._run(lookup)

    def prepare(self, batch: Batch) -> None:
        return None  # the whole commit runs on the store's thread

    async def commit(self, instance: str, batch: Batch,
                     prepared: object | None = None) -> CommitResult:
        return await self._run(lambda: self._commit(instance, batch))

    def _commit(self, instance: str, batch: Batch) -> CommitResult:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            try:  # the usual case: every dimension value has a committed id in the cache
                rows, times = fact_rows(batch, self._ids.tables)
                pending: dict[str, dict[object, int]] = {}
            except KeyError:
                pending = self._resolve(conn, batch)
                rows, times = fact_rows(
                    batch, {t: {**self._ids.tables[t], **pending[t]} for t in pending})
            if rows:
                # The write lock is ours (BEGIN IMMEDIATE), so what is stored now is exact: the
                # rows left after this are the rows inserted, and the rollup counts them.
                newest = conn.execute("SELECT MAX(load_time) FROM module_usage").fetchone()[0]
                if newest is not None and newest >= min(times):
                    existing = self._existing(conn, list(times))
                    rows = [r for r in rows if natural_key(r) not in existing]
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO module_usage (user_id, package_id, host_id, modulefile_id, jobid,"
                " load_time, cluster_id, userload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            inserted = conn.total_changes - before
            daily = rollup_rows(rows)
            conn.executemany(
                "INSERT INTO usage_daily (day, cluster_id, package_id, user_id, loads, user_loads,"
                " first_load, last_load) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (day, cluster_id, package_id, user_id) DO UPDATE SET"
                " loads = loads + excluded.loads, user_loads = user_loads + excluded.user_loads,"
                " first_load = min(first_load, excluded.first_load),"
                " last_load = max(last_load, excluded.last_load)", daily)
            if daily:  # these months' usage_monthly rows are stale until built again
                months = months_of(daily)
                marks = ",".join("?" * len(months))
                conn.execute(f"DELETE FROM usage_month WHERE month IN ({marks})", months)
            now = utc_now_text()
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO rejected_line (instance, path, fingerprint, byte_offset, reason, raw,"
                " seen_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(instance, db_path(path), key.fingerprint, r.offset, cut(r.reason, "reason"),
                  r.raw[:4096], now) for key, path, r in batch.rejects])
            rejected = conn.total_changes - before
            faults.point("insert")
            conn.executemany(
                "INSERT INTO file_checkpoint (instance, dev, ino, fingerprint, path, byte_offset,"
                " tail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (instance, dev, ino, fingerprint) DO UPDATE SET"
                " byte_offset = excluded.byte_offset, tail = excluded.tail,"
                " path = excluded.path, updated_at = excluded.updated_at",
                [(instance, k.dev, k.ino, k.fingerprint, db_path(path), off, tail, now)
                 for k, (path, off, tail) in batch.checkpoints.items()])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._ids.merge(pending)
        return CommitResult(inserted, len(batch.events) - inserted, rejected)

    async def unbuilt_months(self, today: dt.date) -> list[str]:
        def lookup() -> list[str]:
            conn = self._connect()
            first = conn.execute("SELECT MIN(day) FROM usage_daily").fetchone()[0]
            built = {str(m) for (m,) in conn.execute("SELECT month FROM usage_month")}
            return months_to_build(first, built, today)
        return await self._run(lookup)

    async def build_month(self, month: str) -> int:
        """One month of usage_monthly and its mark, in one write transaction (the only one:
        no writer can change the month meanwhile)."""
        first, after = month_bounds(month)

        def build() -> int:
            with _immediate(self._connect()) as conn:
                conn.execute("DELETE FROM usage_monthly WHERE month = ?", (first,))
                conn.execute("DELETE FROM package_monthly WHERE month = ?", (first,))
                n = conn.execute(
                    "INSERT INTO usage_monthly (month, cluster_id, package_id, user_id, loads,"
                    " user_loads, first_load, last_load) SELECT ?, cluster_id, package_id,"
                    " user_id, SUM(loads), SUM(user_loads), MIN(first_load), MAX(last_load)"
                    " FROM usage_daily WHERE day >= ? AND day < ?"
                    " GROUP BY cluster_id, package_id, user_id", (first, first, after)).rowcount
                conn.execute(
                    "INSERT INTO package_monthly (month, cluster_id, package_id, loads,"
                    " user_loads) SELECT month, cluster_id, package_id, SUM(loads),"
                    " SUM(user_loads) FROM usage_monthly WHERE month = ?"
                    " GROUP BY cluster_id, package_id", (first,))
                conn.execute("INSERT INTO usage_month (month, built_at) VALUES (?, ?)"
                             " ON CONFLICT (month) DO UPDATE SET built_at = excluded.built_at",
                             (first, utc_now_text()))
            return int(n)
        return await self._run(build)

    def _existing(self, conn: sqlite3.Connection, times: list[str]) -> set[tuple[object, ...]]:
        """Natural keys (base.natural_key) already stored among rows with these load times."""
        found: set[tuple[object, ...]] = set()
        for i in range(0, len(times), _CHUNK):
            part = times[i:i + _CHUNK]
            marks = ",".join("?" * len(part))
            found.update(tuple(r) for r in conn.execute(f"{_SELECT_EXISTING}({marks})", part))
        return found

    async def prune_span(self, table: str, before: str) -> tuple[int, int] | None:
        """The id range holding every row of ``table`` (module_usage or rejected_line) older
        than ``before`` (UTC text), or None when there is none."""
        column = _PRUNABLE[table]

        def span() -> tuple[int, int] | None:
            row = self._connect().execute(
                f"SELECT MIN(id), MAX(id) FROM {table} WHERE {column} < ?", (before,)).fetchone()
            return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
        return await self._run(span)

    async def prune_range(self, table: str, before: str, low: int, high: int) -> int:
        """Delete the rows of ``table`` with ``low <= id < high`` older than ``before``, in
        one short transaction; how many were deleted."""
        column = _PRUNABLE[table]

        def delete() -> int:
            with _immediate(self._connect()) as conn:
                return int(conn.execute(
                    f"DELETE FROM {table} WHERE id >= ? AND id < ? AND {column} < ?",
                    (low, high, before)).rowcount)
        return await self._run(delete)

    def _resolve(self, conn: sqlite3.Connection, batch: Batch) -> dict[str, dict[object, int]]:
        """Ids for every dimension value in the batch that the cache does not know yet."""
        pending: dict[str, dict[object, int]] = {}
        for table, values in dimension_values(batch.events).items():
            known = self._ids.tables[table]
            missing = [v for v in values if v not in known]
            found: dict[object, int] = {}
            if missing:
                if table == "package":
                    conn.executemany(
                        "INSERT INTO package (name, version) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        missing)
                    for i in range(0, len(missing), _CHUNK):
                        part = missing[i:i + _CHUNK]
                        names = sorted({n for n, _ in part})  # type: ignore[misc]
                        marks = ",".join("?" * len(names))
                        for pid, name, version in conn.execute(
                                f"SELECT id, name, version FROM package WHERE name IN ({marks})",
                                names):
                            found[(name, version)] = pid
                else:
                    insert, select, _ = _DIMENSIONS[table]
                    conn.executemany(insert, [(v,) for v in missing])
                    for i in range(0, len(missing), _CHUNK):
                        part = missing[i:i + _CHUNK]
                        marks = ",".join("?" * len(part))
                        for vid, value in conn.execute(f"{select}({marks})", part):
                            found[value] = vid
            pending[table] = found
        return pending

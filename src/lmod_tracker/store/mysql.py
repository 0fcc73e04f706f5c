"""The MariaDB/MySQL store, through asyncmy (one connection, one transaction per batch).

Duplicates are found before inserting, by a lookup on the natural key's leading column, so a
re-read never burns auto-increment ids and no error is hidden behind ``INSERT IGNORE``. Two
writers racing on the same rows make one of them fail with a duplicate key; that transaction is
rolled back and retried like any transient error, and the retry finds the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

import asyncmy  # type: ignore[import-untyped]

from lmod_tracker import faults
from lmod_tracker.errors import TransientError, classify_mysql
from lmod_tracker.events import FileKey
from lmod_tracker.files import Checkpoint
from lmod_tracker.store.base import (
    OUR_TABLES,
    SCHEMA_VERSION,
    USAGE_COLUMNS,
    Batch,
    CommitResult,
    IdCache,
    cut,
    db_path,
    dimension_values,
    driver_password,
    fact_rows,
    foreign_schema_error,
    month_bounds,
    months_of,
    months_to_build,
    natural_key,
    rollup_rows,
    schema_statement,
    schema_statements,
    utc_from_db,
    utc_now_text,
)

T = TypeVar("T")

_LOOKUP_CHUNK = 2000
#: Rows per INSERT: at most ~6 MB even with the longest values the parser accepts.
_ROWS_PER_STATEMENT = 5000
_SESSION = (
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_DATE',"
    " time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
)
_DIMENSIONS: dict[str, tuple[str, str]] = {
    # table: (insert, select by value)
    "user": ("INSERT INTO `user` (name) VALUES (%s)", "SELECT id, name FROM `user` WHERE name IN"),
    "host": ("INSERT INTO host (name) VALUES (%s)", "SELECT id, name FROM host WHERE name IN"),
    "modulefile": ("INSERT INTO modulefile (path) VALUES (%s)",
                   "SELECT id, path FROM modulefile WHERE path IN"),
    "cluster": ("INSERT INTO cluster (name) VALUES (%s)",
                "SELECT id, name FROM cluster WHERE name IN"),
}
#: Every table the writer inserts into.
_WRITTEN = ("`user`", "package", "host", "modulefile", "cluster", "module_usage",
            "usage_daily", "usage_monthly", "package_monthly", "usage_month", "rejected_line",
            "file_checkpoint")
_USAGE_COLUMNS = USAGE_COLUMNS
#: Columns of module_usage that may be NULL (the rest never are).
_USAGE_NULLABLE = (3, 4, 6, 7)
_SELECT_EXISTING = (
    "SELECT DATE_FORMAT(load_time, '%%Y-%%m-%%d %%H:%%i:%%s.%%f'), host_id, user_id, package_id,"
    " jobid, modulefile_id FROM module_usage WHERE load_time IN ")
#: The daily rollup, for fact rows just inserted (rows: base.rollup_rows).
_UPSERT_DAILY = (
    "INSERT INTO usage_daily (day, cluster_id, package_id, user_id, loads, user_loads,"
    " first_load, last_load) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
    " loads = loads + VALUES(loads), user_loads = user_loads + VALUES(user_loads),"
    " first_load = LEAST(first_load, VALUES(first_load)),"
    " last_load = GREATEST(last_load, VALUES(last_load))")
#: A change to the daily rollup of these months makes their usage_monthly rows stale.
_UNBUILD_MONTHS = "DELETE FROM usage_month WHERE month IN "
#: One month of usage_monthly from usage_daily (build_month).
_BUILD_MONTH = (
    "INSERT INTO usage_monthly (month, cluster_id, package_id, user_id, loads, user_loads,"
    " first_load, last_load) SELECT %s, cluster_id, package_id, user_id, SUM(loads),"
    " SUM(user_loads), MIN(first_load), MAX(last_load) FROM usage_daily"
    " WHERE day >= %s AND day < %s GROUP BY cluster_id, package_id, user_id")
_BUILD_PACKAGE_MONTH = (
    "INSERT INTO package_monthly (month, cluster_id, package_id, loads, user_loads)"
    " SELECT month, cluster_id, package_id, SUM(loads), SUM(user_loads) FROM usage_monthly"
    " WHERE month = %s GROUP BY cluster_id, package_id")
#: The whole rollup from the facts (schema upgrade to version 3).
_BUILD_DAILY = (
    "INSERT INTO usage_daily (day, cluster_id, package_id, user_id, loads, user_loads,"
    " first_load, last_load) SELECT DATE(load_time), IFNULL(cluster_id, 0), package_id, user_id,"
    " COUNT(*), COUNT(CASE WHEN userload = 1 THEN 1 END), MIN(load_time), MAX(load_time)"
    " FROM module_usage GROUP BY DATE(load_time), IFNULL(cluster_id, 0), package_id, user_id")
#: What db prune deletes from: table -> (time column).
_PRUNABLE = {"module_usage": "load_time", "rejected_line": "seen_at"}
_SELECT_NEWEST = (
    "SELECT DATE_FORMAT(MAX(load_time), '%%Y-%%m-%%d %%H:%%i:%%s.%%f') FROM module_usage")
# The offset is replaced, not maximised: after a truncation the same file's checkpoint moves
# back to what was read of the new content (commits of one instance come in order).
_UPSERT_CHECKPOINT = (
    "INSERT INTO file_checkpoint (instance, dev, ino, fingerprint, path, byte_offset, tail,"
    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
    " byte_offset = VALUES(byte_offset), tail = VALUES(tail),"
    " path = VALUES(path), updated_at = VALUES(updated_at)")
#: Statements that move the schema from version N-1 to N (each checked first: re-runnable).
_UPGRADES: dict[int, list[tuple[str, str]]] = {
    # version: [(condition query returning a row when the step is still needed, statement)]
    2: [("SELECT 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns"
         " WHERE table_schema = DATABASE() AND table_name = 'file_checkpoint'"
         " AND column_name = 'tail')",
         "ALTER TABLE file_checkpoint ADD COLUMN tail CHAR(16) CHARACTER SET ascii"
         " COLLATE ascii_bin NOT NULL DEFAULT '' AFTER byte_offset")],
    3: [("SELECT 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns"
         " WHERE table_schema = DATABASE() AND table_name = 'module_usage'"
         " AND column_name = 'cluster_id')",
         # one rebuild of the table: the new columns and the wider natural key
         "ALTER TABLE module_usage"
         " ADD COLUMN cluster_id BIGINT UNSIGNED NULL,"
         " ADD COLUMN userload TINYINT NULL,"
         " ADD COLUMN jobid_key VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
         " AS (IFNULL(jobid, '')) VIRTUAL INVISIBLE,"
         " ADD COLUMN modulefile_key BIGINT UNSIGNED AS (IFNULL(modulefile_id, 0))"
         " VIRTUAL INVISIBLE,"
         " DROP INDEX uq_module_usage_natural,"
         " ADD UNIQUE KEY uq_module_usage_natural (load_time, host_id, user_id, package_id,"
         " jobid_key, modulefile_key)"),
        ("SELECT 1 FROM DUAL", schema_statement("mysql", "cluster")),
        ("SELECT 1 FROM DUAL", schema_statement("mysql", "usage_daily")),
        # the rollup of everything stored, committed with the version row
        ("SELECT 1 FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM usage_daily)", _BUILD_DAILY)],
    # the monthly rollup: empty, built by the daemon or `db months` (no month is marked built)
    4: [("SELECT 1 FROM DUAL", schema_statement("mysql", "usage_monthly")),
        ("SELECT 1 FROM DUAL", schema_statement("mysql", "package_monthly")),
        ("SELECT 1 FROM DUAL", schema_statement("mysql", "usage_month"))],
}


def _marks(n: int) -> str:
    return "(" + ",".join(["%s"] * n) + ")"


def _usage_statement(rows: list[tuple[Any, ...]]) -> tuple[str, list[tuple[Any, ...]]]:
    """The INSERT for these module_usage rows, without the columns that are NULL in all.

    asyncmy sends a batch as one binary bulk execute on MariaDB only when every column has a
    value in some row; otherwise it falls back, silently, to text INSERTs at about half the
    rows/s. Logs without ``path=`` or ``jobid=`` (most of them) would always fall back.
    """
    absent = [i for i in _USAGE_NULLABLE
              if list(map(operator.itemgetter(i), rows)).count(None) == len(rows)]
    if absent:
        keep = [i for i in range(len(_USAGE_COLUMNS)) if i not in absent]
        rows = list(map(operator.itemgetter(*keep), rows))
    else:
        keep = list(range(len(_USAGE_COLUMNS)))
    return _insert_usage(tuple(keep)), rows


@functools.cache
def _insert_usage(columns: tuple[int, ...]) -> str:
    names = ", ".join(_USAGE_COLUMNS[i] for i in columns)
    return f"INSERT INTO module_usage ({names}) VALUES {_marks(len(columns))}"


class MySQLStore:
    """Store in a MariaDB or MySQL database."""

    backend = "mysql"

    def __init__(self, *, host: str, port: int, user: str, password: str, database: str,
                 unix_socket: str | None = None, timeout: float = 30.0) -> None:
        self._params: dict[str, Any] = {
            "host": host, "port": port, "user": user, "password": password,
            "database": database, "unix_socket": unix_socket,
        }
        self.timeout = timeout
        self.call_started: float | None = None
        self._conn: Any = None
        # One connection serves one coroutine at a time: the writer's transaction and the
        # readers' checkpoint lookups take turns.
        self._lock = asyncio.Lock()
        self._ids = IdCache()
        self._conn_id: int | None = None
        #: the server-side id of a connection dropped after an error, ended at the next connect
        self._abandoned: int | None = None
        #: statements sent, each as one binary (prepared) execute, bulk for many rows
        self.statements = 0

    def describe(self) -> str:
        p = self._params
        where = f"unix:{p['unix_socket']}" if p["unix_socket"] else f"{p['host']}:{p['port']}"
        return f"mysql://{p['user']}@{where}/{p['database']}"

    async def _call(self, aw: Awaitable[T]) -> T:
        """Every database call: bounded in time, errors classified (errors.py), no secrets."""
        self.call_started = time.monotonic()
        try:
            return await asyncio.wait_for(aw, self.timeout)
        except TimeoutError:
            self._drop()
            raise TransientError(
                f"{self.describe()}: no answer within {self.timeout:g} s") from None
        except (asyncmy.errors.MySQLError, OSError, ConnectionError, RuntimeError,
                AttributeError, UnicodeError) as exc:
            # asyncmy raises AttributeError/RuntimeError on calls over a dead connection.
            error = classify_mysql(exc, self.describe(), self._params["password"])
            if error.kind != "data":  # a refused value leaves the connection usable
                self._drop()
            raise error from None
        finally:
            self.call_started = None

    async def _connection(self) -> Any:
        if self._conn is None:
            p = self._params
            conn = await self._call(asyncmy.connect(
                host=p["host"], port=p["port"], user=p["user"],
                password=driver_password(p["password"]),
                database=p["database"], unix_socket=p["unix_socket"], autocommit=False,
                connect_timeout=min(self.timeout, 10),
                # A statement cache makes executemany one binary bulk execute on MariaDB: about
                # twice the rows/s of multi-row text INSERTs. InnoDB allocates ids for such
                # inserts in blocks, so ids have gaps; duplicates never take ids (they are
                # filtered out before the INSERT).
                stmt_cache_size=64))
            async with conn.cursor() as cur:
                for stmt in _SESSION:
                    await self._call(cur.execute(stmt))
                await self._call(cur.execute("SELECT CONNECTION_ID()"))
                (conn_id,) = await self._call(cur.fetchone())
                if self._abandoned is not None:
                    await self._end_abandoned(cur)
            self._conn, self._conn_id = conn, int(conn_id)
        return self._conn

    async def _end_abandoned(self, cur: Any) -> None:
        """End the server session of the connection this store dropped after an error.

        When a connection breaks on the client's side only (a partition, a proxy), the server
        keeps the session, inside its transaction and holding the locks on the batch's rows
        and checkpoint, until its wait_timeout (hours): the retried batch would wait on those
        locks. A session can always end its own user's sessions. If the old session's COMMIT
        did reach the server, ending it changes nothing; if not, it rolls back and the retry
        commits the batch: exactly once either way.
        """
        abandoned, self._abandoned = self._abandoned, None
        # Unknown thread (1094: gone already) or not ours to end: nothing to do.
        with contextlib.suppress(asyncmy.errors.MySQLError, TimeoutError):
            await asyncio.wait_for(cur.execute(f"KILL CONNECTION {int(abandoned)}"),
                                   self.timeout)

    async def open(self) -> None:
        async with self._lock:
            await self._connection()

    async def close(self) -> None:
        await self.reset()

    async def reset(self) -> None:
        async with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._abandoned = self._conn_id
            with contextlib.suppress(Exception):
                conn.close()

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        self.statements += 1
        async with conn.cursor() as cur:
            await self._call(cur.execute(sql, params))
            return list(await self._call(cur.fetchall()) or ())

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """One statement per ``_ROWS_PER_STATEMENT`` rows, far below max_allowed_packet
        whatever the batch size (a bulk execute is sent as one packet)."""
        if not rows:
            return 0
        conn = await self._connection()
        total = 0
        async with conn.cursor() as cur:
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                self.statements += 1
                n = await self._call(cur.executemany(sql, rows[i:i + _ROWS_PER_STATEMENT]))
                total += int(n or 0)
        return total

    async def init_schema(self) -> None:
        async with self._lock:
            await self._init_schema()

    async def _init_schema(self) -> None:
        conn = await self._connection()
        # "Table already exists" notes of an idempotent re-run are not worth a warning.
        await self._execute("SET SESSION sql_notes = 0")
        try:
            for stmt in schema_statements("mysql"):
                await self._execute(stmt)
            await self._call(conn.commit())
        finally:
            if self._conn is not None:
                await self._execute("SET SESSION sql_notes = 1")

    async def schema_version(self) -> int | None:
        async with self._lock:
            return await self._schema_version()

    async def _schema_version(self) -> int | None:
        tables = {str(r[0]) for r in await self._execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")}
        if "lmod_tracker_schema" not in tables:
            await self._rollback()
            found = sorted(tables.intersection(OUR_TABLES))
            if found:
                raise foreign_schema_error(self.describe(), found)
            return None
        rows = await self._execute("SELECT MAX(version) FROM lmod_tracker_schema")
        await self._rollback()
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def _rollback(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.rollback())

    async def checkpoint(self, instance: str, key: FileKey) -> list[Checkpoint]:
        async with self._lock:
            rows = await self._execute(
                "SELECT byte_offset, tail, dev = %s AND ino = %s FROM file_checkpoint"
                " WHERE instance = %s AND fingerprint = %s"
                " ORDER BY dev = %s AND ino = %s DESC, byte_offset DESC LIMIT 16",
                (key.dev, key.ino, instance, key.fingerprint, key.dev, key.ino))
            await self._rollback()
        return [Checkpoint(int(o), str(t), bool(e)) for o, t, e in rows]

    async def upgrade(self) -> list[int]:
        async with self._lock:
            found = await self._schema_version()
            applied = []
            for version in range((found or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                for needed, statement in _UPGRADES[version]:
                    if await self._execute(needed):
                        await self._execute(statement)
                await self._execute(
                    "INSERT INTO lmod_tracker_schema (version, applied_at)"
                    " VALUES (%s, UTC_TIMESTAMP(6))", (version,))
                await self._call(self._conn.commit())
                applied.append(version)
            if applied:
                await self._init_schema()  # views and anything new, as db init makes them
            return applied

    async def probe(self) -> None:
        async with self._lock:
            await self._execute("SELECT MAX(version) FROM lmod_tracker_schema")
            # Privileges are checked before a statement runs, so these prove the grants the
            # writer needs without touching a row.
            for table in _WRITTEN:
                await self._execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE 1 = 0")
            await self._execute(
                "UPDATE file_checkpoint SET updated_at = updated_at WHERE 1 = 0")
            # the writer unlists changed months; month builds replace a month's rows
            for table in ("usage_month", "usage_monthly", "package_monthly"):
                await self._execute(f"DELETE FROM {table} WHERE 1 = 0")
            await self._rollback()

    async def prune_span(self, table: str, before: str) -> tuple[int, int] | None:
        """The id range holding every row of ``table`` (module_usage or rejected_line) older
        than ``before`` (UTC text), or None when there is none."""
        column = _PRUNABLE[table]
        async with self._lock:
            rows = await self._execute(
                f"SELECT MIN(id), MAX(id) FROM {table} WHERE {column} < %s", (before,))
            await self._rollback()
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), int(rows[0][1])

    async def prune_range(self, table: str, before: str, low: int, high: int) -> int:
        """Delete the rows of ``table`` with ``low <= id < high`` older than ``before``, in
        one short transaction (row locks on that id range only); how many were deleted."""
        column = _PRUNABLE[table]
        async with self._transaction():
            return await self._rowcount(
                f"DELETE FROM {table} WHERE id >= %s AND id < %s AND {column} < %s",
                (low, high, before))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """A short transaction of its own (prune, month builds): committed at the end of the
        block, rolled back on any error; the writer waits for it (the lock)."""
        async with self._lock:
            try:
                await self._rollback()
                yield
                await self._call(self._conn.commit())
            except BaseException:
                if self._conn is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(self._conn.rollback(), 5)
                raise

    async def _rowcount(self, sql: str, params: Sequence[Any]) -> int:
        """One statement; the rows it changed."""
        conn = await self._connection()
        async with conn.cursor() as cur:
            self.statements += 1
            return int(await self._call(cur.execute(sql, params)) or 0)

    async def unbuilt_months(self, today: dt.date) -> list[str]:
        async with self._lock:
            [(first,)] = await self._execute("SELECT MIN(day) FROM usage_daily")
            built = {str(m)[:10] for (m,) in await self._execute("SELECT month FROM usage_month")}
            await self._rollback()
        return months_to_build(None if first is None else str(first), built, today)

    async def build_month(self, month: str) -> int:
        """One month of usage_monthly, in a REPEATABLE READ transaction: INSERT .. SELECT then
        reads usage_daily with shared next-key locks, so it waits for a writer's uncommitted
        rows of the month and no writer adds to the month until it commits. A writer that
        changes the month after that deletes the mark (its last statement)."""
        first, after = month_bounds(month)
        async with self._transaction():
            await self._execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await self._execute("DELETE FROM usage_monthly WHERE month = %s", (first,))
            await self._execute("DELETE FROM package_monthly WHERE month = %s", (first,))
            n = await self._rowcount(_BUILD_MONTH, (first, first, after))
            await self._execute(_BUILD_PACKAGE_MONTH, (first,))
            await self._execute(
                "INSERT INTO usage_month (month, built_at) VALUES (%s, %s)"
                " ON DUPLICATE KEY UPDATE built_at = VALUES(built_at)",
                (first, utc_now_text()))
        return n

    async def session_counters(self) -> dict[str, int]:
        """The server's statement counters of this connection, with ``statements``, our own
        count of what we sent. Every statement is one binary execute (a batch one bulk
        execute), so ``Com_stmt_execute`` moves exactly as ``statements`` does unless asyncmy
        fell back to the text protocol for a batch."""
        async with self._lock:
            sent = self.statements
            rows = await self._execute(
                "SHOW SESSION STATUS WHERE Variable_name IN ('Com_insert', 'Com_stmt_execute')")
        return {"statements": sent, **{str(k): int(v) for k, v in rows}}

    async def committed(self, instance: str) -> dict[FileKey, int]:
        async with self._lock:
            rows = await self._execute(
                "SELECT dev, ino, fingerprint, byte_offset FROM file_checkpoint"
                " WHERE instance = %s", (instance,))
            await self._rollback()
        return {FileKey(int(d), int(i), str(f)): int(o) for d, i, f, o in rows}

    async def last_commit(self, instance: str) -> dt.datetime | None:
        async with self._lock:
            [(when,)] = await self._execute(
                "SELECT MAX(updated_at) FROM file_checkpoint WHERE instance = %s", (instance,))
            await self._rollback()
        return utc_from_db(when)

    def prepare(self, batch: Batch) -> tuple[list[tuple[Any, ...]], set[str],
                                             list[tuple[Any, ...]]] | None:
        """The fact rows and their rollup, when every dimension value has a committed id in
        the cache. The rollup is used only if every row turns out to be new (the usual case
        while catching up or following), so it is worked out while the previous batch
        commits."""
        try:
            rows, times = fact_rows(batch, self._ids.tables)
        except KeyError:
            return None
        return rows, times, rollup_rows(rows)

    async def commit(self, instance: str, batch: Batch,
                     prepared: object | None = None) -> CommitResult:
        async with self._lock:
            return await self._commit_or_rollback(instance, batch, prepared)

    async def _commit_or_rollback(self, instance: str, batch: Batch,
                                  prepared: object | None) -> CommitResult:
        try:
            result = await self._commit(instance, batch, prepared)
        except BaseException:
            if self._conn is not None:
                try:
                    await asyncio.wait_for(self._conn.rollback(), 5)
                except BaseException:  # the connection is dropped instead
                    self._drop()
            raise
        return result

    async def _commit(self, instance: str, batch: Batch, prepared: object | None
                      ) -> CommitResult:
        pending: dict[str, dict[object, int]] = {}
        daily: list[tuple[Any, ...]] | None = None
        if prepared is None:
            prepared = self.prepare(batch)
        if prepared is not None:  # every user, package, host, modulefile and cluster known
            rows, times, daily = prepared  # type: ignore[misc]
        else:
            pending = await self._resolve(batch)
            rows, times = fact_rows(
                batch, {t: {**self._ids.tables[t], **pending[t]} for t in pending})
        if rows:
            # New data (every load later than anything stored) cannot be a duplicate: one
            # index probe instead of a lookup per row. A writer racing on the same keys fails
            # on the unique key and the retry takes the full path.
            newest = (await self._execute(_SELECT_NEWEST))[0][0]
            if newest is not None and newest >= min(times):
                existing = set(await self._existing(list(times)))
                new = [r for r in rows if natural_key(r) not in existing]
                if len(new) < len(rows):
                    rows, daily = new, None
        inserted = await self._executemany(*_usage_statement(rows))
        # Every row sent was inserted (strict mode: a duplicate key fails the transaction), so
        # the rollup counts exactly these, in the same transaction.
        if daily is None:
            daily = rollup_rows(rows)
        await self._executemany(_UPSERT_DAILY, daily)
        if daily:
            # Last, so a month build running meanwhile either waited for this transaction's
            # rows (and saw them) or is ordered before it: its mark is deleted here.
            months = months_of(daily)
            await self._execute(_UNBUILD_MONTHS + _marks(len(months)), months)
        faults.point("insert")

        now = utc_now_text()
        rejected = await self._insert_rejects(instance, batch, now)
        await self._executemany(_UPSERT_CHECKPOINT, [
            (instance, k.dev, k.ino, k.fingerprint, db_path(path), off, tail, now)
            for k, (path, off, tail) in batch.checkpoints.items()])
        await self._call(self._conn.commit())
        self._ids.merge(pending)
        return CommitResult(inserted, len(batch.events) - inserted, rejected)

    async def _existing(self, times: list[str]) -> list[tuple[Any, ...]]:
        """Natural keys (base.natural_key) already stored among rows with these load times."""
        found: list[tuple[Any, ...]] = []
        for i in range(0, len(times), _LOOKUP_CHUNK):
            part = times[i:i + _LOOKUP_CHUNK]
            sql = _SELECT_EXISTING + _marks(len(part))
            for t, h, u, p, j, m in await self._execute(sql, part):
                found.append((t, int(h), int(u), int(p), j, None if m is None else int(m)))
        return found

    async def _insert_rejects(self, instance: str, batch: Batch, now: str) -> int:
        if not batch.rejects:
            return 0
        wanted = {(key.fingerprint, r.offset): (instance, db_path(path), key.fingerprint,
                                                r.offset, cut(r.reason, "reason"),
                                                r.raw[:4096], now)
                  for key, path, r in batch.rejects}
        fps = sorted({fp for fp, _ in wanted})
        for fp, off in await self._execute(
                "SELECT fingerprint, byte_offset FROM rejected_line WHERE fingerprint IN "
                + _marks(len(fps)), fps):
            wanted.pop((fp, int(off)), None)
        return await self._executemany(
            "INSERT INTO rejected_line (instance, path, fingerprint, byte_offset, reason, raw,"
            " seen_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", list(wanted.values()))

    async def _resolve(self, batch: Batch) -> dict[str, dict[object, int]]:
        """Ids for the batch's dimension values the cache does not know, inserting new ones."""
        pending: dict[str, dict[object, int]] = {}
        for table, values in dimension_values(batch.events).items():
            known = self._ids.tables[table]
            missing = [v for v in values if v not in known]
            found: dict[object, int] = {}
            if missing:
                found = await self._lookup(table, missing)
                new = [v for v in missing if v not in found]
                if new:
                    if table == "package":
                        await self._executemany(
                            "INSERT INTO package (name, version) VALUES (%s, %s)", new)  # type: ignore[arg-type]
                    else:
                        await self._executemany(_DIMENSIONS[table][0], [(v,) for v in new])
                    found.update(await self._lookup(table, new))
            pending[table] = found
        return pending

    async def _lookup(self, table: str, values: list[object]) -> dict[object, int]:
        found: dict[object, int] = {}
        for i in range(0, len(values), _LOOKUP_CHUNK):
            part = values[i:i + _LOOKUP_CHUNK]
            if table == "package":
                wanted = set(part)
                names = sorted({n for n, _ in part})  # type: ignore[misc]
                for pid, name, version in await self._execute(
                        "SELECT id, name, version FROM package WHERE name IN "
                        + _marks(len(names)), names):
                    if (name, version) in wanted:
                        found[(name, version)] = int(pid)
            else:
                for vid, value in await self._execute(
                        f"{_DIMENSIONS[table][1]} {_marks(len(part))}", part):
                    found[value] = int(vid)
        return found


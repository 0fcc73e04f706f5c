"""A read-only connection for reports: SQLite opened ``mode=ro``, MariaDB in a read-only
transaction mode. A report runs in one snapshot (:meth:`Reader.snapshot`): its statements (top's
loads, then distinct users, then first and last loads; trend's statements per period) all see
the database as it was at the report's first read, whatever the daemon commits meanwhile.
Errors are classified like the writer's (errors.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from lmod_tracker.config import Settings
from lmod_tracker.errors import StoreError, classify_mysql, classify_sqlite
from lmod_tracker.store.base import driver_password

_MYSQL_SESSION = (
    "SET SESSION time_zone = '+00:00'",
    # GROUP BY over a year of rollup rows builds temporary tables of a few hundred thousand
    # groups: in memory up to 256 MiB (the 16 MiB default sends them to disk: 2x slower).
    "SET SESSION tmp_table_size = 268435456, max_heap_table_size = 268435456",
    "SET SESSION TRANSACTION READ ONLY",
    # a report's statements read one consistent snapshot (Reader.snapshot)
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
)
_MYSQL_BEGIN = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"


class Reader:
    """Runs SELECTs. ``backend`` is ``sqlite`` or ``mysql``; SQL uses ``%s`` placeholders on
    MySQL and ``?`` on SQLite (each query module holds the text for its backend)."""

    backend: str

    def describe(self) -> str:
        raise NotImplementedError

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def table_exists(self, name: str) -> bool:
        raise NotImplementedError

    async def _begin(self) -> None:
        raise NotImplementedError

    async def _end(self) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """The statements run inside see one snapshot of the database: a read-only transaction
        (MariaDB: REPEATABLE READ, started WITH CONSISTENT SNAPSHOT; SQLite: a deferred
        transaction, whose first read fixes the snapshot of the WAL), ended on leaving."""
        await self._begin()
        try:
            yield
        finally:
            await self._end()


class SQLiteReader(Reader):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise StoreError(f"{self.describe()}: no such database file")
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=30)
                conn.execute("PRAGMA query_only = 1")
                conn.execute("PRAGMA cache_size = -65536")
            except sqlite3.Error as exc:
                raise classify_sqlite(exc, self.describe()) from None
            self._conn = conn
        return self._conn

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise classify_sqlite(exc, self.describe()) from None

    async def table_exists(self, name: str) -> bool:
        found = await self.rows(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(found)

    async def _begin(self) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise classify_sqlite(exc, self.describe()) from None

    async def _end(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.rollback()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class MySQLReader(Reader):
    backend = "mysql"

    def __init__(self, *, host: str, port: int, user: str, password: str, database: str,
                 unix_socket: str | None = None, timeout: float = 30.0) -> None:
        self._params: dict[str, Any] = {
            "host": host, "port": port, "user": user, "password": password,
            "database": database, "unix_socket": unix_socket}
        self.timeout = timeout
        self._conn: Any = None

    def describe(self) -> str:
        p = self._params
        where = f"unix:{p['unix_socket']}" if p["unix_socket"] else f"{p['host']}:{p['port']}"
        return f"mysql://{p['user']}@{where}/{p['database']}"

    async def _connect(self) -> Any:
        if self._conn is None:
            import asyncmy  # type: ignore[import-untyped]

            p = self._params
            kwargs: dict[str, Any] = {
                "user": p["user"], "password": driver_password(p["password"]),
                "database": p["database"],
                "autocommit": True, "charset": "utf8mb4", "connect_timeout": self.timeout}
            if p["unix_socket"]:
                kwargs["unix_socket"] = p["unix_socket"]
            else:
                kwargs.update(host=p["host"], port=p["port"])
            try:
                conn = await asyncmy.connect(**kwargs)
                async with conn.cursor() as cur:
                    for statement in _MYSQL_SESSION:
                        await cur.execute(statement)
            except Exception as exc:
                raise classify_mysql(exc, self.describe(), self._params["password"]) from None
            self._conn = conn
        return self._conn

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = await self._connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, tuple(params) if params else None)
                return [tuple(r) for r in await cur.fetchall()]
        except Exception as exc:
            raise classify_mysql(exc, self.describe(), self._params["password"]) from None

    async def table_exists(self, name: str) -> bool:
        found = await self.rows(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE()"
            " AND table_name = %s", (name,))
        return bool(found)

    async def _begin(self) -> None:
        await self.rows(_MYSQL_BEGIN)

    async def _end(self) -> None:
        # nothing was written: a failed ROLLBACK (a dropped connection) loses nothing
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with self._conn.cursor() as cur:
                    await cur.execute("ROLLBACK")

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.ensure_closed()
            self._conn = None


def open_reader(settings: Settings) -> Reader:
    if settings.backend == "mysql":
        return MySQLReader(**settings.mysql_params())
    return SQLiteReader(Path(settings.sqlite_path))

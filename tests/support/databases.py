"""Real databases for tests: a SQLite file per test, or a fresh MariaDB/MySQL database.

Tests always write ``%s`` placeholders; they are translated to ``?`` for SQLite.
Every query opens its own connection (autocommit), so the handles can be used while the
lmod-tracker process under test writes concurrently, and from inside async tests whose
event loop is running (MySQL queries run ``asyncio.run`` on a worker thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncmy
from asyncmy.errors import Error as MysqlError
from asyncmy.errors import OperationalError

__all__ = [
    "DbHandle",
    "MysqlServer",
    "MysqlUnavailable",
    "create_mysql_database",
    "discover_mysql",
    "drop_mysql_database",
    "mysql_handle",
    "run_sync",
    "sqlite_handle",
]

T = TypeVar("T")

QUERY_TIMEOUT = 60.0
DEFAULT_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")
TEST_USER = "lmt_test"
CR_CONN_HOST_ERROR = 2003

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lmt-db")
_PLACEHOLDER = re.compile(r"%([%s])")
_used_names: set[str] = set()
_used_names_lock = threading.Lock()


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = QUERY_TIMEOUT) -> T:
    """Run the coroutine made by ``factory`` with ``asyncio.run`` on a worker thread.

    Safe to call from synchronous code and from inside a running event loop (which is
    blocked until the result is available)."""
    future = _executor.submit(lambda: asyncio.run(asyncio.wait_for(factory(), timeout)))
    return future.result(timeout=timeout + 5)


# ---------------------------------------------------------------------------- MySQL


class MysqlUnavailable(RuntimeError):
    """No usable MariaDB/MySQL server (the message says what was tried)."""


@dataclass(frozen=True)
class MysqlServer:
    host: str
    port: int
    user: str
    password: str

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}

    def env(self, database: str) -> dict[str, str]:
        """Environment for the lmod-tracker process pointing at ``database``."""
        return {
            "LMOD_TRACKER_BACKEND": "mysql",
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_USER": self.user,
            "DB_PASS": self.password,
            "DB_NAME": database,
        }


async def _connect(
    server: MysqlServer | None = None,
    *,
    database: str | None = None,
    unix_socket: str | None = None,
    user: str = "root",
    password: str = "",
    connect_timeout: float = 5,
) -> Any:
    if server is not None:
        return await asyncmy.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            database=database,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=connect_timeout,
        )
    return await asyncmy.connect(
        unix_socket=unix_socket,
        user=user,
        password=password,
        database=database,
        autocommit=True,
        charset="utf8mb4",
        connect_timeout=connect_timeout,
    )


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.ensure_closed()
    with contextlib.suppress(Exception):
        conn.close()


async def _query(
    server: MysqlServer, database: str | None, sql: str, params: Sequence[Any]
) -> tuple[list[tuple[Any, ...]], int]:
    conn = await _connect(server, database=database)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params) if params else None)
            rows = await cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows], cur.rowcount
    finally:
        await _close(conn)


def mysql_query(
    server: MysqlServer, sql: str, params: Sequence[Any] = (), *, database: str | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh autocommit connection and return its rows."""
    return run_sync(lambda: _query(server, database, sql, params))[0]


async def _probe_tcp(server: MysqlServer) -> None:
    conn = await _connect(server)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.fetchall()
    finally:
        await _close(conn)


async def _provision_test_user(unix_socket: str, host: str, port: int) -> MysqlServer:
    password = secrets.token_urlsafe(18)
    conn = await _connect(unix_socket=unix_socket, user="root")
    try:
        async with conn.cursor() as cur:
            for user_host in ("127.0.0.1", "localhost", "::1"):
                account = f"'{TEST_USER}'@'{user_host}'"
                await cur.execute(
                    f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY %s", (password,)
                )
                await cur.execute(f"ALTER USER {account} IDENTIFIED BY %s", (password,))
                await cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION")
    finally:
        await _close(conn)
    server = MysqlServer(host=host, port=port, user=TEST_USER, password=password)
    await _probe_tcp(server)
    return server


def discover_mysql() -> MysqlServer:
    """Find credentials that work over TCP, creating a test user if needed.

    Order: ``LMT_TEST_DB_HOST/PORT/USER/PASS`` from the environment if ``LMT_TEST_DB_USER``
    is set; root with an empty password over TCP; root over the unix socket, which then
    creates ``lmt_test``@``127.0.0.1``/``localhost`` with a random password.
    """
    host = os.environ.get("LMT_TEST_DB_HOST", "127.0.0.1")
    port = int(os.environ.get("LMT_TEST_DB_PORT", "3306"))
    errors: list[str] = []
    if os.environ.get("LMT_TEST_DB_USER"):
        server = MysqlServer(
            host, port, os.environ["LMT_TEST_DB_USER"], os.environ.get("LMT_TEST_DB_PASS", "")
        )
        try:
            run_sync(lambda: _probe_tcp(server), timeout=15)
        except Exception as exc:
            raise MysqlUnavailable(
                f"{server.user}@{host}:{port} from LMT_TEST_DB_* failed: {exc!r}"
            ) from exc
        return server
    root = MysqlServer(host, port, "root", "")
    try:
        run_sync(lambda: _probe_tcp(root), timeout=15)
        return root
    except Exception as exc:
        errors.append(f"root@{host}:{port} (empty password, TCP): {exc!r}")
        if isinstance(exc, MysqlError) and exc.args and exc.args[0] == CR_CONN_HOST_ERROR:
            raise MysqlUnavailable(_tried(errors)) from exc
    candidates = [os.environ.get("MYSQL_UNIX_PORT", ""), *DEFAULT_SOCKETS]
    sockets = list(dict.fromkeys(os.path.realpath(p) for p in candidates if p))
    for path in sockets:
        if not os.path.exists(path):
            errors.append(f"unix socket {path}: does not exist")
            continue
        try:
            return run_sync(lambda p=path: _provision_test_user(p, host, port), timeout=30)
        except Exception as exc:
            errors.append(f"root via unix socket {path} + {TEST_USER} over TCP: {exc!r}")
    raise MysqlUnavailable(_tried(errors))


def _tried(errors: list[str]) -> str:
    return "no usable MariaDB/MySQL server; tried:\n  " + "\n  ".join(errors)


def new_database_name() -> str:
    """``lmt_<pid>_<8 hex>``, never returned twice by this process."""
    with _used_names_lock:
        while True:
            name = f"lmt_{os.getpid()}_{secrets.token_hex(4)}"
            if name not in _used_names:
                _used_names.add(name)
                return name


def create_mysql_database(server: MysqlServer) -> str:
    """Create a fresh, empty utf8mb4 database and return its name."""
    for _ in range(5):
        name = new_database_name()
        try:
            mysql_query(
                server,
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            )
            return name
        except MysqlError as exc:
            if exc.args and exc.args[0] == 1007:  # database exists: never reuse it
                continue
            raise
    raise RuntimeError("could not find an unused database name")


async def _drop(server: MysqlServer, name: str) -> None:
    conn = await _connect(server)
    try:
        async with conn.cursor() as cur:
            for attempt in range(3):
                await cur.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = %s AND ID <> CONNECTION_ID()",
                    (name,),
                )
                for (thread_id,) in await cur.fetchall():
                    with contextlib.suppress(Exception):
                        await cur.execute(f"KILL {int(thread_id)}")
                await cur.execute(f"SET SESSION lock_wait_timeout = {5 * (attempt + 1)}")
                try:
                    await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                    return
                except OperationalError:
                    if attempt == 2:
                        raise
    finally:
        await _close(conn)


def drop_mysql_database(server: MysqlServer, name: str) -> None:
    """Drop ``name``, killing sessions still using it so the drop cannot hang."""
    run_sync(lambda: _drop(server, name), timeout=60)


def drop_leftover_databases(server: MysqlServer, pid: int | None = None) -> list[str]:
    """Drop every ``lmt_<pid>_*`` database (default: this process) and return the names."""
    prefix = f"lmt\\_{pid if pid is not None else os.getpid()}\\_%"
    names = [r[0] for r in mysql_query(server, "SHOW DATABASES LIKE %s", (prefix,))]
    for name in names:
        drop_mysql_database(server, name)
    return names


# ---------------------------------------------------------------------------- handles


def _sqlite_sql(sql: str, params: Sequence[Any]) -> str:
    if not params:
        return sql
    return _PLACEHOLDER.sub(lambda m: "%" if m.group(1) == "%" else "?", sql)


@dataclass
class DbHandle:
    """A database the lmod-tracker process under test can be pointed at (``env``).

    ``scalar``/``rows``/``execute`` always use ``%s`` placeholders, open a fresh
    autocommit connection per call, and may be called from async tests too.
    """

    kind: str
    env: dict[str, str]
    name: str = ""
    sqlite_path: Path | None = field(default=None, repr=False)
    server: MysqlServer | None = field(default=None, repr=False)

    # -- synchronous API

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._run(sql, params)[0]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """First column of the first row, or None if there is no row."""
        result = self.rows(sql, params)
        return result[0][0] if result else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement (DDL/DML) and return its rowcount."""
        return self._run(sql, params, create=True)[1]

    def wait_scalar(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        expected: Any,
        timeout: float = 30.0,
        interval: float = 0.05,
    ) -> Any:
        """Poll ``scalar`` until it equals ``expected`` (errors such as a missing table are
        retried); raise AssertionError with the last value after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.scalar(sql, params)
                if last == expected:
                    return last
            except (sqlite3.Error, MysqlError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.kind}: {sql!r} was {last!r}, expected {expected!r} "
                    f"within {timeout}s"
                )
            time.sleep(interval)

    # -- async API (does not block the running loop); to poll from async code use
    #    ``await asyncio.to_thread(db.wait_scalar, sql, expected=...)``

    async def arows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return (await self._arun(sql, params))[0]

    async def ascalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        result = await self.arows(sql, params)
        return result[0][0] if result else None

    async def aexecute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._arun(sql, params, create=True))[1]

    # -- plumbing

    def _run(
        self, sql: str, params: Sequence[Any], create: bool = False
    ) -> tuple[list[tuple[Any, ...]], int]:
        if self.kind == "sqlite":
            return self._sqlite(sql, params, create)
        server = self._mysql_server()
        return run_sync(lambda: _query(server, self.name, sql, params))

    async def _arun(
        self, sql: str, params: Sequence[Any], create: bool = False
    ) -> tuple[list[tuple[Any, ...]], int]:
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite, sql, params, create)
        server = self._mysql_server()
        awaitable: Awaitable[tuple[list[tuple[Any, ...]], int]] = _query(
            server, self.name, sql, params
        )
        return await asyncio.wait_for(awaitable, QUERY_TIMEOUT)

    def _mysql_server(self) -> MysqlServer:
        if self.server is None:
            raise RuntimeError(f"DbHandle of kind {self.kind!r} has no MySQL server")
        return self.server

    def _sqlite(
        self, sql: str, params: Sequence[Any], create: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        if self.sqlite_path is None:
            raise RuntimeError("sqlite DbHandle without a path")
        mode = "rwc" if create else "rw"
        uri = f"{self.sqlite_path.resolve().as_uri()}?mode={mode}"
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            cur = conn.execute(_sqlite_sql(sql, params), tuple(params))
            rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
            return rows, cur.rowcount
        finally:
            conn.close()


def sqlite_handle(path: Path) -> DbHandle:
    """Handle for a SQLite database file at ``path`` (not created until something writes)."""
    return DbHandle(
        kind="sqlite",
        env={"LMOD_TRACKER_BACKEND": "sqlite", "LMOD_TRACKER_SQLITE_PATH": str(path)},
        name=str(path),
        sqlite_path=path,
    )


def mysql_handle(server: MysqlServer, database: str) -> DbHandle:
    """Handle for an existing MySQL ``database`` on ``server``."""
    return DbHandle(kind="mysql", env=server.env(database), name=database, server=server)

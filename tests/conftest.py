"""Shared fixtures: real SQLite and MariaDB/MySQL databases for every test that asks.

* ``sqlite_db``    -- a SQLite file under the test's tmp_path.
* ``mysql_db``     -- a fresh, empty MySQL database, dropped after the test.
* ``db``           -- parametrized over both (ids ``sqlite`` / ``mysql``).
* ``mysql_server`` -- session-wide credentials (host, port, user, password).

Tests that need the MySQL server (directly or through another fixture) get the ``mysql``
marker automatically, so ``pytest -m mysql`` selects them and ``-m "not mysql"`` skips them.
Without a reachable server they are skipped, except under ``CI=true`` where they fail.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.databases import (  # noqa: E402
    DbHandle,
    MysqlServer,
    MysqlUnavailable,
    create_mysql_database,
    discover_mysql,
    drop_leftover_databases,
    drop_mysql_database,
    mysql_handle,
    sqlite_handle,
)

_MYSQL_FIXTURES = frozenset({"mysql_db", "mysql_server", "_mysql_credentials"})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if _MYSQL_FIXTURES.intersection(names) and item.get_closest_marker("mysql") is None:
            item.add_marker(pytest.mark.mysql)


@pytest.fixture(scope="session")
def _mysql_credentials() -> Iterator[MysqlServer]:
    try:
        server = discover_mysql()
    except MysqlUnavailable as exc:
        message = f"MariaDB/MySQL server unreachable: {exc}"
        if _in_ci():
            pytest.fail(f"{message}\n(CI=true: MySQL tests must run, not skip)", pytrace=False)
        pytest.skip(message)
    yield server
    drop_leftover_databases(server)


@pytest.fixture(scope="session")
def mysql_server(_mysql_credentials: MysqlServer) -> dict[str, Any]:
    """Working credentials: {"host", "port", "user", "password"} (e.g. for a FaultProxy)."""
    return _mysql_credentials.as_dict()


@pytest.fixture
def mysql_db(_mysql_credentials: MysqlServer) -> Iterator[DbHandle]:
    """A fresh ``lmt_<pid>_<hex>`` utf8mb4 database, dropped after the test."""
    name = create_mysql_database(_mysql_credentials)
    try:
        yield mysql_handle(_mysql_credentials, name)
    finally:
        drop_mysql_database(_mysql_credentials, name)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> DbHandle:
    """A SQLite database path under tmp_path (the file is created by whoever writes first)."""
    return sqlite_handle(tmp_path / "lmod.db")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ]
)
def db(request: pytest.FixtureRequest) -> DbHandle:
    """The same test against SQLite and against MySQL."""
    if request.param == "sqlite":
        handle: DbHandle = request.getfixturevalue("sqlite_db")
    else:
        handle = request.getfixturevalue("mysql_db")
    return handle

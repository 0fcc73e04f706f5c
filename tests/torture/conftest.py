"""Fixtures of the torture suite: a :class:`~tests.support.torture.Rig` (log directory,
database, daemons, a way to take the database down) on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import DbHandle
from tests.support.torture import Rig


@pytest.fixture
def rig(db: DbHandle, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A rig on SQLite and on MariaDB (through a FaultProxy)."""
    server = request.getfixturevalue("mysql_server") if db.kind == "mysql" else None
    r = Rig(db, tmp_path, server)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def sqlite_rig(sqlite_db: DbHandle, tmp_path: Path) -> Iterator[Rig]:
    """A rig on SQLite only (for what does not depend on the backend)."""
    r = Rig(sqlite_db, tmp_path, None)
    try:
        yield r
    finally:
        r.close()

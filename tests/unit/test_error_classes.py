"""Failure classes: every driver error maps to one class, decided in errors.py alone."""

from __future__ import annotations

import sqlite3

import pytest
from asyncmy.errors import IntegrityError, InternalError, OperationalError, ProgrammingError

from lmod_tracker.errors import (
    DataError,
    PermanentError,
    TransientError,
    classify_mysql,
    classify_sqlite,
    redact,
)


@pytest.mark.parametrize(("exc", "cls"), [
    (OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"), TransientError),
    (OperationalError(2013, "Lost connection to MySQL server during query"), TransientError),
    (OperationalError(1205, "Lock wait timeout exceeded"), TransientError),
    (OperationalError(1213, "Deadlock found when trying to get lock"), TransientError),
    (OperationalError(1053, "Server shutdown in progress"), TransientError),
    (OperationalError(1290, "The MariaDB server is running with the --read-only option"),
     TransientError),
    (OperationalError(1040, "Too many connections"), TransientError),
    (ConnectionResetError(104, "Connection reset by peer"), TransientError),
    (TimeoutError(), TransientError),
    (OperationalError(1045, "Access denied for user 'x'@'localhost' (using password: YES)"),
     PermanentError),
    (OperationalError(1049, "Unknown database 'nope'"), PermanentError),
    (OperationalError(1044, "Access denied for user 'x'@'%' to database 'lmod'"),
     PermanentError),
    (ProgrammingError(1142, "INSERT command denied to user 'x'@'localhost' for table"),
     PermanentError),
    (ProgrammingError(1146, "Table 'lmod.module_usage' doesn't exist"), PermanentError),
    (InternalError(1406, "Data too long for column 'reason' at row 1"), DataError),
    (InternalError(1366, "Incorrect string value: '\\xFF' for column 'path'"), DataError),
    (InternalError(1264, "Out of range value for column 'byte_offset'"), DataError),
    (IntegrityError(1062, "Duplicate entry 'a' for key 'uq_user_name'"), DataError),
    (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), DataError),
])
def test_mysql_classes(exc: BaseException, cls: type) -> None:
    error = classify_mysql(exc, "mysql://u@h/db", "")
    assert type(error) is cls
    assert error.kind == {TransientError: "transient", DataError: "data",
                          PermanentError: "permanent"}[cls]
    assert str(error).startswith("mysql://u@h/db: ")
    assert "\n" not in str(error)


def _sqlite_error(cls: type[sqlite3.Error], name: str, text: str) -> sqlite3.Error:
    exc = cls(text)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("exc", "cls"), [
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_BUSY", "database is locked"),
     TransientError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_IOERR_WRITE", "disk I/O error"),
     TransientError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_FULL", "database or disk is full"),
     TransientError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_READONLY", "attempt to write a readonly"
                   " database"), PermanentError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_CANTOPEN", "unable to open database"),
     PermanentError),
    (_sqlite_error(sqlite3.DatabaseError, "SQLITE_NOTADB", "file is not a database"),
     PermanentError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_ERROR", "no such table: module_usage"),
     PermanentError),
    (_sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_NOTNULL", "NOT NULL failed"),
     DataError),
    (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), DataError),
])
def test_sqlite_classes(exc: BaseException, cls: type) -> None:
    assert type(classify_sqlite(exc, "sqlite:/x.db")) is cls


def test_real_sqlite_errors(tmp_path: object) -> None:
    """The attributes the classifier reads are there on errors of the real library."""
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as info:
        conn.execute("SELECT * FROM module_usage")
    assert type(classify_sqlite(info.value, "sqlite")) is PermanentError


@pytest.mark.parametrize(("text", "secret", "expected"), [
    ("Access denied for user 'u' (using password: YES)", "e",
     "Access denied for user 'u' (using password: YES)"),
    ("bad value e in x", "e", "bad value *** in x"),
    ("connect failed: pw=s3cr3t-Passw0rd!", "s3cr3t-Passw0rd", "connect failed: pw=***!"),
    ("xs3cr3t-Passw0rdx", "s3cr3t-Passw0rd", "x***x"),
    ("nothing", "", "nothing"),
])
def test_redact(text: str, secret: str, expected: str) -> None:
    assert redact(text, secret) == expected

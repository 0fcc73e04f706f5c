"""The three classes of failure, decided in one place.

Every database problem reaches the rest of the program as one of these exceptions, and each
class is handled in one place:

* :class:`TransientError` (connection lost or refused, timeout, lock wait, deadlock, server
  shutting down, read-only during a failover, a racing writer's duplicate key): the writer
  retries the same batch with backoff and jitter, forever in the daemon.
* :class:`DataError` (the server refuses a value: too long, not valid in the character set, out
  of range): the writer isolates the offending rows by bisecting the batch, keeps each as a
  reject with the server's message, and commits everything else (``pipeline.Writer``).
* :class:`PermanentError` (authentication, unknown database, missing privilege, a schema that
  is not ours or not this version, a SQLite file that cannot be opened or written): one line
  that says what to fix. At start every command exits with :data:`EXIT_PERMANENT`; a running
  daemon stays up, degraded, retries slowly and resumes when it is fixed.

Messages never contain the password: :func:`redact` is applied where driver text is turned
into one of these exceptions.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Literal

Kind = Literal["transient", "data", "permanent"]

#: Exit codes of every command (the README's table).
EXIT_OK = 0
EXIT_FAILURE = 1       # a file could not be read, the database failed, interrupted
EXIT_CONFIG = 2        # a setting or an argument is wrong
EXIT_PERMANENT = 3     # the database refuses us for good (credentials, grants, schema)


class StoreError(Exception):
    """A database problem, described for an operator (never contains the password)."""

    kind: Kind = "transient"


class TransientError(StoreError):
    """Worth retrying as it is: the server is down, busy or failing over."""

    kind: Kind = "transient"


class DataError(StoreError):
    """The server refused a value; the same rows will always be refused."""

    kind: Kind = "data"


class PermanentError(StoreError):
    """Retrying cannot help until an operator changes something."""

    kind: Kind = "permanent"


class SchemaError(PermanentError):
    """The database has no lmod-tracker schema, another version, or another program's tables."""


# -- MariaDB / MySQL -----------------------------------------------------------------------

#: Server error codes of each class (everything else from the server counts as transient).
_MYSQL_PERMANENT = {
    1044: "access denied to the database: GRANT the user rights on it",
    1045: "access denied: check DB_USER and DB_PASS",
    1049: "unknown database: create it or fix DB_NAME",
    1142: "a table privilege is missing: GRANT SELECT, INSERT, UPDATE on the database",
    1143: "a column privilege is missing: GRANT SELECT, INSERT, UPDATE on the database",
    1227: "a privilege is missing for this statement",
    1370: "a routine privilege is missing",
    1130: "this host may not connect: create the user for this client host",
    1129: "this host is blocked after connection errors: run `mysqladmin flush-hosts`",
    1251: "the server's authentication method is not supported by the client",
    1698: "access denied (the account uses another authentication method)",
    1146: "a table is missing: run `lmod-tracker db init`",
    1054: "a column is missing: the schema is not the one this version expects",
    1064: "the server does not understand a statement (unsupported server version?)",
}
#: Read-only server (--read-only, a replica, a Galera node leaving): wait for a failover.
_MYSQL_READ_ONLY = {1290, 1792, 1836}
_MYSQL_DATA = {
    1048,  # column cannot be null
    1263,  # column set to default (NULL supplied to NOT NULL)
    1264,  # out of range value
    1265,  # data truncated
    1292,  # incorrect datetime/value
    1300,  # invalid character string
    1366,  # incorrect string value
    1367,  # illegal value
    1406,  # data too long for column
    3819,  # check constraint violated (MySQL)
    4025,  # check constraint violated (MariaDB)
    1644,  # a SIGNAL: a site's trigger refusing the row
    1216, 1452,  # a foreign key a site added refuses the row
    # A duplicate key: usually a writer racing on the same rows (the retry finds them), but it
    # must never block a batch for ever, so the writer isolates the row like a refused value.
    1062,
}


def classify_mysql(exc: BaseException, where: str, password: str) -> StoreError:
    """The class of an asyncmy/socket exception, as a StoreError with a one-line message."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, TimeoutError):
        return TransientError(f"{where}: no answer in time")
    if isinstance(exc, UnicodeError):
        # A value the client could not encode (e.g. undecodable bytes in a str).
        return DataError(f"{where}: value not encodable: {redact(str(exc), password)}")
    code = _mysql_code(exc)
    text = redact(_mysql_text(exc), password)
    if code in _MYSQL_READ_ONLY:
        return TransientError(f"{where}: {text} (read-only; waiting for a writable server)")
    if code in _MYSQL_PERMANENT:
        return PermanentError(f"{where}: {text} ({_MYSQL_PERMANENT[code]})")
    if code in _MYSQL_DATA:
        return DataError(f"{where}: {text}")
    return TransientError(f"{where}: {text}")


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _mysql_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return str(exc) or type(exc).__name__


# -- SQLite --------------------------------------------------------------------------------

_SQLITE_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                     "SQLITE_PROTOCOL", "SQLITE_NOMEM", "SQLITE_INTERRUPT"}
_SQLITE_DATA = {"SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE"}
_SQLITE_PERMANENT = {
    "SQLITE_READONLY": "the file or its directory is not writable by this user",
    "SQLITE_CANTOPEN": "the file cannot be opened: check sqlite_path and its directory",
    "SQLITE_NOTADB": "the file is not a SQLite database: point sqlite_path elsewhere",
    "SQLITE_CORRUPT": "the database file is corrupt: restore it from a backup",
    "SQLITE_PERM": "access denied",
    "SQLITE_AUTH": "access denied",
}


def classify_sqlite(exc: BaseException, where: str) -> StoreError:
    """The class of a sqlite3 (or encoding) exception."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, UnicodeError | OverflowError):
        return DataError(f"{where}: value not storable: {exc}")
    name = getattr(exc, "sqlite_errorname", "") or ""
    base = name.split("_", 2)
    base_name = "_".join(base[:2]) if len(base) >= 2 else name
    text = str(exc) or type(exc).__name__
    if base_name in _SQLITE_TRANSIENT:
        return TransientError(f"{where}: {text}")
    if base_name in _SQLITE_DATA or isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError):
        return DataError(f"{where}: {text}")
    if base_name in _SQLITE_PERMANENT:
        return PermanentError(f"{where}: {text} ({_SQLITE_PERMANENT[base_name]})")
    if "no such table" in text or "no such column" in text:
        return PermanentError(f"{where}: {text} (the schema is not the one this version"
                              " expects)")
    if isinstance(exc, sqlite3.OperationalError):
        return TransientError(f"{where}: {text}")
    return PermanentError(f"{where}: {text}")


# -- secrets -------------------------------------------------------------------------------

def redact(text: str, secret: str) -> str:
    """``text`` with ``secret`` replaced by ``***``.

    A long secret is replaced wherever it appears. A short one (a test password such as ``e``)
    only where it stands alone, so that words around it stay readable.
    """
    if not secret:
        return text
    if len(secret) >= 8:
        return text.replace(secret, "***")
    return re.sub(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", "***", text)

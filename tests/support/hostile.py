"""Hostile input and blunt instruments for black-box tests of the ``lmod-tracker`` command.

* :class:`Line`, :class:`LogBuilder` and :func:`hostile_lines` -- log content whose fate is
  known line by line: stored (with the exact row), rejected (at a known byte offset), foreign,
  or ``either`` (stored verbatim or rejected, but exactly one of the two).
* :func:`check_ingested` -- compares what the database holds with what a builder wrote.
* :class:`Tracker` / :func:`run_tracker` -- the real command as a child process with a hard
  deadline (killed, never left behind), output captured to files so that several can run at
  once without blocking on a pipe.
* :class:`MysqlAccount` -- a throw-away MariaDB account with a random name, a password and
  only the grants a test gives it; dropped afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from lmod_tracker.statusclient import get
from tests.support.daemon import child_env
from tests.support.databases import DbHandle, MysqlServer, mysql_query
from tests.support.loggen import LineFactory, natural_key

__all__ = [
    "CONFIG_ERROR",
    "DB_ERROR",
    "Line",
    "LogBuilder",
    "MysqlAccount",
    "Outcome",
    "Tracker",
    "check_ingested",
    "epoch_text",
    "healthz",
    "hostile_lines",
    "one_error_line",
    "rejected_rows",
    "run_tracker",
    "status_doc",
    "stored_rows",
]

TAG = "ModuleUsageTracking"
DB_ERROR = "lmod-tracker: database error:"
CONFIG_ERROR = "lmod-tracker: configuration error:"
MIB = 1 << 20

Kind = Literal["valid", "rejected", "foreign", "either"]
#: A stored load as the tests compare it: user, package, version, host, load time (UTC text).
Row = tuple[str, str, str, str, str]


def epoch_text(stamp: str) -> str:
    """``'1700000000.5'`` -> ``'2023-11-14 22:13:20.500000'`` (UTC, microseconds)."""
    whole, _, frac = stamp.partition(".")
    return (datetime.fromtimestamp(int(whole), UTC).strftime("%Y-%m-%d %H:%M:%S.")
            + frac[:6].ljust(6, "0"))


def split_module(module: str) -> tuple[str, str]:
    """The default ``module_split = "last"``: ``bio/samtools/1.9`` -> ``bio/samtools``, ``1.9``."""
    package, _, version = module.rpartition("/")
    return (package, version) if package else (version, "")


# ---------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    """One line of a log (with its newline) and what must become of it."""

    data: bytes
    kind: Kind
    row: Row | None = None
    label: str = ""


def factory_line(factory: LineFactory, kind: Literal["valid", "foreign", "malformed"]) -> Line:
    """A line of the shared test generator, with its expected fate."""
    data = factory.line(kind)
    if kind == "foreign":
        return Line(data, "foreign", label="foreign")
    if kind == "malformed":
        return Line(data, "rejected", label="malformed")
    key = natural_key(data)
    assert key is not None, data
    stamp, host, user, module = key
    package, version = split_module(module)
    return Line(data, "valid", (user, package, version, host, epoch_text(stamp)), "valid")


_HEADER = f"Apr 27 03:22:57 node1 {TAG}: ".encode()


def _tagged(message: bytes) -> bytes:
    return _HEADER + message + b"\n"


def _event(user: str, module: str, host: str, stamp: str, *, path: str | None = None,
           label: str) -> Line:
    """A valid event whose values are hostile text (quotes, SQL, placeholders...)."""
    message = f"user={user} module={module} host={host} time={stamp}"
    if path is not None:
        message += f" path={path}"
    package, version = split_module(module)
    return Line(_tagged(message.encode()), "valid",
                (user, package, version, host, epoch_text(stamp)), label)


def hostile_lines(seq: int = 0) -> list[Line]:
    """One line of each hostile kind. ``seq`` keeps the times (natural keys) of different
    calls apart: lines of calls with different ``seq`` never collide."""
    base = 1_750_000_000 + seq * 100

    def stamp(i: int) -> str:
        return f"{base + i}.{seq % 1_000_000:06d}"

    return [
        # A time far beyond year 9999 with 250 decimals: a reason quoting it would be huge.
        Line(_tagged(b"user=x module=y time=999999999999." + b"0" * 250), "rejected",
             label="huge reason"),
        Line(_tagged(f"user={'u' * 300} module=gcc/12.2.0 host=h1 time={stamp(1)}".encode()),
             "rejected", label="300-char user"),
        Line(_tagged(b"user=\xff\xfebad module=gcc/12.2.0 host=h1 time=" + stamp(2).encode()),
             "rejected", label="invalid UTF-8"),
        Line(_tagged(b"user=big module=big/1.0 host=h1 time=" + stamp(3).encode()
                     + b" path=/" + b"p" * MIB), "rejected", label="1 MiB tagged"),
        Line(b"Apr 27 03:22:57 node1 kernel: " + b"x" * MIB + b"\n", "foreign",
             label="1 MiB untagged"),
        Line(b"\x00" * 1000 + b"\n", "foreign", label="NUL run"),
        Line(_tagged(b"user=nul\x00byte module=nul/1.0 host=h1 time=" + stamp(4).encode()),
             "either", ("nul\x00byte", "nul", "1.0", "h1", epoch_text(stamp(4))), "NUL in value"),
        _event("a';DROP/**/TABLE/**/user;--", "sql/1.0", "h1", stamp(5), label="SQL injection"),
        # With spaces, as an operator would type it: words without '=' are not key=value pairs,
        # so the user is "a';DROP" (or the line is rejected; never anything else).
        Line(_tagged(f"user=a';DROP TABLE user;-- module=sql/2.0 host=h1 time={stamp(10)}"
                     .encode()), "either", ("a';DROP", "sql", "2.0", "h1", epoch_text(stamp(10))),
             "SQL injection with spaces"),
        _event('o"brien\\', "q'uote\"s/1\\'0", "h\\x27;--;DELETE", stamp(6),
               path="/m/'\";--\\.lua", label="quotes and backslashes"),
        _event("%s%%", "%d/%s", "%(host)s", stamp(7), path="/m/%s%%d.lua",
               label="placeholders"),
        _event("josé", "ünï/1.0-β", "höst", stamp(8), label="non-ASCII UTF-8"),
        Line(_tagged(b"user=tabs\tmodule=tab/1.0\thost=h1\ttime=" + stamp(9).encode()), "either",
             ("tabs", "tab", "1.0", "h1", epoch_text(stamp(9))), "tabs between fields"),
    ]


@dataclass
class LogBuilder:
    """Lines in file order with their byte offsets (one file, written from offset 0)."""

    lines: list[tuple[int, Line]] = field(default_factory=list)
    size: int = 0

    def add(self, line: Line) -> bytes:
        self.lines.append((self.size, line))
        self.size += len(line.data)
        return line.data

    def extend(self, lines: Iterable[Line]) -> bytes:
        return b"".join(self.add(line) for line in lines)

    def data(self) -> bytes:
        return b"".join(line.data for _, line in self.lines)

    def of_kind(self, kind: Kind) -> list[tuple[int, Line]]:
        return [(off, line) for off, line in self.lines if line.kind == kind]

    def rows(self) -> Counter[Row]:
        """The rows every valid line must give (each once)."""
        return Counter(line.row for _, line in self.of_kind("valid") if line.row is not None)

    def reject_offsets(self) -> set[int]:
        return {off for off, _ in self.of_kind("rejected")}


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def stored_rows(db: DbHandle) -> Counter[Row]:
    """Every module_usage row as (user, package, version, host, load time text)."""
    load_time = ("DATE_FORMAT(m.load_time, '%Y-%m-%d %H:%i:%s.%f')" if db.kind == "mysql"
                 else "m.load_time")
    rows = db.rows(
        f"SELECT u.name, p.name, p.version, h.name, {load_time} FROM module_usage m"
        " JOIN `user` u ON u.id = m.user_id JOIN package p ON p.id = m.package_id"
        " JOIN host h ON h.id = m.host_id")
    return Counter(tuple(_text(v) for v in r) for r in rows)  # type: ignore[misc]


def rejected_rows(db: DbHandle) -> list[tuple[int, str]]:
    """(byte_offset, reason) of every rejected_line row."""
    return [(int(off), _text(reason))
            for off, reason in db.rows("SELECT byte_offset, reason FROM rejected_line")]


def check_ingested(db: DbHandle, log: LogBuilder) -> None:
    """Every valid line stored once with its exact values, every tagged-but-invalid line
    rejected once (with a short, non-empty reason), and nothing else. Reports every
    difference at once."""
    rows = stored_rows(db)
    rejects = rejected_rows(db)
    reject_at = Counter(off for off, _ in rejects)
    expected_rows = log.rows()
    expected_rejects = log.reject_offsets()
    by_offset = {off: line.label for off, line in log.lines}
    labels = {line.row: line.label for _, line in log.lines if line.row is not None}
    problems: list[str] = []
    for off, line in log.of_kind("either"):
        assert line.row is not None
        stored, rejected = rows[line.row] > 0, reject_at[off] > 0
        if stored == rejected:
            problems.append(f"{line.label} line at byte {off} must be stored or rejected, exactly"
                            f" one of the two: stored={stored} rejected={rejected}")
        if stored:
            expected_rows[line.row] += 1
        else:
            expected_rejects.add(off)
    missing = expected_rows - rows
    extra = rows - expected_rows
    if missing or extra:
        problems.append(
            f"module_usage differs from the log: {sum(missing.values())} rows missing"
            f" (e.g. {[(labels.get(r), r) for r in list(missing)[:5]]}),"
            f" {sum(extra.values())} unexpected (e.g. {list(extra)[:5]})")
    if set(reject_at) != expected_rejects:
        problems.append(
            "rejected_line offsets differ: missing"
            f" {sorted((o, by_offset.get(o)) for o in expected_rejects - set(reject_at))},"
            f" unexpected"
            f" {sorted((o, by_offset.get(o)) for o in set(reject_at) - expected_rejects)}")
    doubled = {off: n for off, n in reject_at.items() if n > 1}
    if doubled:
        problems.append(f"lines rejected more than once: {doubled}")
    for off, reason in rejects:
        if not reason.strip():
            problems.append(f"empty reason for the line at byte {off} ({by_offset.get(off)})")
        if len(reason) > 255:
            problems.append(f"reason of {len(reason)} characters for the line at byte {off}"
                            f" ({by_offset.get(off)}): {reason[:80]!r}...")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- processes


@dataclass
class Outcome:
    """How a finished (or killed) lmod-tracker process ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        how = (f"killed after {self.elapsed:.1f} s (did not exit in time)" if self.timed_out
               else f"exit {self.returncode} after {self.elapsed:.1f} s")
        return (f"lmod-tracker {' '.join(self.args)}: {how}\n--- stdout\n{self.stdout[-3000:]}"
                f"\n--- stderr\n{self.stderr[-4000:]}")


class Tracker:
    """``lmod-tracker ARGS`` started now; output goes to temporary files (never a full pipe)."""

    def __init__(self, env: Mapping[str, str], *args: str | bytes, unset: Sequence[str] = (),
                 cwd: Path | None = None) -> None:
        self.env = child_env(env)
        for name in unset:
            self.env.pop(name, None)
        self.args = tuple(os.fsdecode(a) for a in args)
        # closed by _read() once the process has ended
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "lmod_tracker", *args],
                                     env=self.env, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, cwd=cwd)
        self._outcome: Outcome | None = None

    @property
    def status_socket(self) -> Path:
        return Path(self.env["LMOD_TRACKER_STATUS_SOCKET"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> Outcome:
        """Wait at most ``timeout`` seconds more; kill the process if it is still running."""
        if self._outcome is not None:
            return self._outcome
        timed_out = False
        try:
            self.proc.wait(max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.proc.kill()
            self.proc.wait(10)
        elapsed = time.monotonic() - self.started
        self._outcome = Outcome(self.args, self.proc.returncode, self._read(self._out),
                                self._read(self._err), elapsed, timed_out)
        return self._outcome

    def wait_from_start(self, limit: float) -> Outcome:
        """Wait until ``limit`` seconds after the start (kill it then)."""
        return self.wait(limit - (time.monotonic() - self.started))

    @staticmethod
    def _read(f: IO[bytes]) -> str:
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
        f.close()
        return text

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.alive():
            self.proc.kill()
        self.wait(10)


def run_tracker(env: Mapping[str, str], *args: str | bytes, timeout: float = 60,
                unset: Sequence[str] = (), cwd: Path | None = None) -> Outcome:
    """Run ``lmod-tracker ARGS`` to its end, or kill it after ``timeout`` seconds."""
    return Tracker(env, *args, unset=unset, cwd=cwd).wait(timeout)


def one_error_line(out: Outcome, code: int, prefix: str) -> str:
    """Assert the process ended by itself with ``code``, no traceback, and exactly one stderr
    line starting with ``prefix``; return that line."""
    assert not out.timed_out, out.explain()
    assert out.returncode == code, f"expected exit {code}\n{out.explain()}"
    assert "Traceback" not in out.output, out.explain()
    hits = [ln for ln in out.stderr.splitlines() if ln.startswith(prefix)]
    assert len(hits) == 1, f"expected one stderr line starting {prefix!r}\n{out.explain()}"
    return hits[0]


# ---------------------------------------------------------------------------- status


def _socket(env: Mapping[str, str]) -> Path:
    return Path(env["LMOD_TRACKER_STATUS_SOCKET"])


def healthz(env: Mapping[str, str]) -> int | None:
    """HTTP status of ``/healthz``, or None when the socket does not answer."""
    try:
        return get(_socket(env), "/healthz", timeout=5)[0]
    except (OSError, http.client.HTTPException):
        return None


def status_doc(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``/status`` document, or None when the socket does not answer."""
    try:
        code, body = get(_socket(env), "/status", timeout=5)
    except (OSError, http.client.HTTPException):
        return None
    if code != 200:
        return None
    doc: dict[str, Any] = json.loads(body)
    return doc


# ---------------------------------------------------------------------------- MariaDB


class MysqlAccount:
    """A MariaDB account ``lmt_u_<hex>`` with a password and only the grants given to it."""

    HOSTS = ("127.0.0.1", "localhost", "::1")

    def __init__(self, server: MysqlServer, *, password: str | None = None) -> None:
        self.server = server
        self.user = f"lmt_u_{secrets.token_hex(5)}"
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self._created: list[str] = []

    def _accounts(self) -> list[str]:
        return [f"'{self.user}'@'{host}'" for host in self.HOSTS]

    def create(self) -> MysqlAccount:
        for account in self._accounts():
            mysql_query(self.server, f"CREATE USER {account} IDENTIFIED BY %s", (self.password,))
            self._created.append(account)
        return self

    def grant(self, privileges: str, database: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", database):
            raise ValueError(f"unexpected database name {database!r}")
        for account in self._accounts():
            mysql_query(self.server, f"GRANT {privileges} ON `{database}`.* TO {account}")

    def drop(self) -> None:
        for account in self._created:
            with contextlib.suppress(Exception):
                mysql_query(self.server, f"DROP USER IF EXISTS {account}")
        self._created.clear()

    def env(self, database: str, *, password: str | None = None) -> dict[str, str]:
        return {**self.server.env(database), "DB_USER": self.user,
                "DB_PASS": self.password if password is None else password}

    def __enter__(self) -> MysqlAccount:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.drop()

"""Support for the torture suite (tests/torture): a model of what the log files contain, a
writer that behaves like rsyslog, logrotate's rotations, database outages, and the verdict that
compares what the database holds with what the model says it must hold.

The model
---------
Every valid line carries a unique id ``n``: ``user=t<n>`` and its own ``time=``, so the row it
must become is known exactly (:func:`expected_row`) and any other row is a *phantom*. The
:class:`World` writes lines and remembers, per physical file (inode), which ids it holds and
whether the running daemon had it open at the last settle. From that it derives:

* *required* ids: committed before (verified at an earlier settle: rows are never deleted), or
  in a file the daemon can still read: under a followed name (``lmod.log*`` but not ``*.gz``),
  or held open by the running daemon;
* *allowed* ids: every line ever completed (a line destroyed before the daemon could have read
  it -- a copytruncate window, a truncation, a file compressed while no daemon held it -- may be
  stored or not: the environment lost it, not the daemon);
* *forbidden* ids: lines that were never completed (a writer that went away mid-line, a half
  line still being written): their fragment must never become a row.

:func:`judge` turns the rows of the database into a :class:`Verdict`: ``lost`` (required, not
stored), ``doubles`` (one id stored as more than one row: a fragment and the whole line),
``phantoms`` (a row that is not exactly the line it came from, or a line never completed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import gzip
import os
import re
import resource
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmod_tracker.statusclient import fetch_status
from tests.support.daemon import Daemon, wait_until
from tests.support.databases import DbHandle

__all__ = [
    "BASE_EPOCH",
    "FAST_ENV",
    "HEADERS",
    "CommitCutProxy",
    "FileRec",
    "Rig",
    "SqliteLock",
    "TortureDaemon",
    "Verdict",
    "World",
    "expected_row",
    "followed",
    "foreign_line",
    "gzip_file",
    "judge",
    "malformed_line",
    "settle",
    "stored_rows",
    "valid_line",
    "wait_exact",
]

#: ``time=`` of line ``n`` is ``BASE_EPOCH + n`` seconds and a fraction derived from ``n``.
BASE_EPOCH = 1_750_000_000
#: Foreign first lines shared by many files: files that start with the same one have the same
#: fingerprint (first line), the case that identity alone cannot tell apart.
HEADERS = (
    b"",
    b'Jun 15 00:00:00 logsrv rsyslogd: [origin software="rsyslogd" swVersion="8.2302.0"]'
    b" start\n",
    b"Jun 15 00:00:00 logsrv lmod-log: ---- log file opened ----\n",
)
_USER = re.compile(r"t([0-9]+)\Z")

#: Settings that make the daemon react within a fraction of a second (tests wait for it).
FAST_ENV: dict[str, str] = {
    "LMOD_TRACKER_POLL_INTERVAL": "0.2",
    "LMOD_TRACKER_ROTATE_WAIT": "0.5",
    "LMOD_TRACKER_BATCH_TIMEOUT": "0.05",
    "LMOD_TRACKER_BATCH_SIZE": "200",
    "LMOD_TRACKER_RETRY_INITIAL": "0.05",
    "LMOD_TRACKER_RETRY_MAX": "0.5",
    "LMOD_TRACKER_DB_TIMEOUT": "2",
    "LMOD_TRACKER_SHUTDOWN_GRACE": "3",
    "LMOD_TRACKER_INSTANCE": "torture",
    "LMOD_TRACKER_READ_BLOCK_BYTES": "16384",
    "LMOD_TRACKER_SUMMARY_INTERVAL": "3600",
}


# ---------------------------------------------------------------------------- lines


def _frac(n: int) -> int:
    return (n * 7919) % 1_000_000


def valid_line(n: int) -> bytes:
    """The valid load line with id ``n`` (never the same bytes for two ids)."""
    return (f"Jun 15 12:00:00 node{n % 4} ModuleUsageTracking: user=t{n}"
            f" module=pkg{n % 5}/{n % 3}.0 host=node{n % 4}.example"
            f" time={BASE_EPOCH + n}.{_frac(n):06d}\n").encode()


def malformed_line(n: int) -> bytes:
    """A line with our tag that must become a reject (no ``time=``); ``user=`` is not t<n>."""
    return f"Jun 15 12:00:00 node1 ModuleUsageTracking: user=bad{n} module=pkg/1.0\n".encode()


def foreign_line(n: int) -> bytes:
    return f"Jun 15 12:00:00 node2 sshd[{n}]: session closed for user t{n}\n".encode()


def expected_row(n: int) -> tuple[str, str, str, str, str]:
    """(user, package, version, host, load_time) of line ``n`` as the database must hold it."""
    stamp = dt.datetime.fromtimestamp(BASE_EPOCH + n, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (f"t{n}", f"pkg{n % 5}", f"{n % 3}.0", f"node{n % 4}.example",
            f"{stamp}.{_frac(n):06d}")


_ROWS = ("SELECT u.name, p.name, p.version, h.name, m.load_time FROM module_usage m"
         " JOIN `user` u ON u.id = m.user_id JOIN package p ON p.id = m.package_id"
         " JOIN host h ON h.id = m.host_id")


def stored_rows(db: DbHandle) -> list[tuple[str, str, str, str, str]]:
    """Every module_usage row as (user, package, version, host, load_time text)."""
    if db.sqlite_path is not None and not db.sqlite_path.exists():
        return []  # the daemon has not created it yet
    try:
        rows = db.rows(_ROWS)
    except Exception as exc:  # no schema yet
        if any(s in str(exc) for s in ("no such table", "doesn't exist", "unable to open")):
            return []
        raise
    out = []
    for user, package, version, host, when in rows:
        if isinstance(when, dt.datetime):
            when = when.strftime("%Y-%m-%d %H:%M:%S.%f")
        out.append((str(user), str(package), str(version), str(host), str(when)))
    return out


# ---------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    """What the database holds, measured against the model."""

    rows: int
    lost: list[int]
    doubles: dict[int, list[tuple[str, ...]]]
    phantoms: list[tuple[str, ...]]
    required: int
    allowed: int

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubles or self.phantoms)

    def summary(self) -> str:
        def few(items: Iterable[Any]) -> str:
            items = list(items)
            return f"{items[:12]}{' ...' if len(items) > 12 else ''}"
        parts = [f"{self.rows} rows, {self.required} required, {self.allowed} allowed"]
        if self.lost:
            parts.append(f"LOST {len(self.lost)}: ids {few(self.lost)}")
        if self.doubles:
            parts.append(f"DOUBLES {len(self.doubles)}: {few(self.doubles.items())}")
        if self.phantoms:
            parts.append(f"PHANTOMS {len(self.phantoms)}: {few(self.phantoms)}")
        return "; ".join(parts)


def judge(rows: list[tuple[str, str, str, str, str]], required: set[int], allowed: set[int],
          forbidden: Iterable[int] = ()) -> Verdict:
    """Compare the stored rows with the model (see the module docstring)."""
    forbidden = set(forbidden)
    by_id: dict[int, list[tuple[str, ...]]] = defaultdict(list)
    phantoms: list[tuple[str, ...]] = []
    for row in rows:
        m = _USER.match(row[0])
        if m is None:
            phantoms.append(row)
            continue
        by_id[int(m.group(1))].append(row)
    doubles = {n: rs for n, rs in by_id.items() if len(rs) > 1}
    for n, rs in by_id.items():
        if n in forbidden or n not in allowed:
            phantoms.extend(rs)  # a line never completed was stored (its fragment)
        elif len(rs) == 1 and rs[0] != expected_row(n):
            phantoms.extend(rs)  # stored with other values than the line has
    lost = sorted(required - by_id.keys())
    return Verdict(len(rows), lost, doubles, phantoms, len(required), len(allowed))


# ---------------------------------------------------------------------------- files


def followed(name: str | None) -> bool:
    """Whether the daemon follows a file of this name (its default glob and exclusions)."""
    return (name is not None and fnmatch.fnmatchcase(name, "lmod.log*")
            and not any(fnmatch.fnmatchcase(name, x) for x in ("*.gz", "*.xz", "*.bz2",
                                                               "*.zst")))


def gzip_file(src: Path, dst: Path) -> None:
    """``gzip``: write ``dst`` and unlink ``src`` (as logrotate's compress does)."""
    with src.open("rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout)
    src.unlink()


@dataclass(eq=False)
class FileRec:
    """One physical file (inode) and the complete lines in it, as (end offset, id or None)."""

    label: str
    name: str | None
    dev: int
    ino: int
    lines: list[tuple[int, int | None]] = field(default_factory=list)
    header: bytes = b""
    #: the running daemon had it open at the last settle (it can read it to its end even
    #: after it leaves the directory)
    held: bool = False

    def ids(self) -> set[int]:
        return {i for _, i in self.lines if i is not None}

    @property
    def present(self) -> bool:
        return followed(self.name)


class World:
    """A log directory, the writer (an O_APPEND descriptor, like rsyslog) and the model.

    Every method acts on the real files and updates the model in the same step.
    """

    def __init__(self, log_dir: Path, *, header: int = 0, first_id: int = 1,
                 foreign_every: int = 13, malformed_every: int = 17) -> None:
        self.dir = log_dir
        self.next_id = first_id
        self.files: list[FileRec] = []
        self.secured: set[int] = set()      # seen stored at a settle: required for ever
        self.written: set[int] = set()      # every completed line
        self.abandoned: set[int] = set()    # fragments never completed
        self.split: set[int] = set()        # lines cut in two by a copytruncate
        self.partial: tuple[int, bytes] | None = None
        self.rotation = 0
        self.foreign_every = foreign_every
        self.malformed_every = malformed_every
        self.malformed = 0
        self.log: list[str] = []             # what was done, for failure messages
        self.fd = -1
        self.cur = self._create(HEADERS[header])

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def live(self) -> Path:
        return self.dir / "lmod.log"

    def note(self, text: str) -> None:
        self.log.append(text)

    def _create(self, header: bytes) -> FileRec:
        self.fd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        st = os.fstat(self.fd)
        rec = FileRec(f"file{len(self.files)}", "lmod.log", st.st_dev, st.st_ino, header=header)
        self.files.append(rec)
        self.cur = rec
        if header:
            self._write(header, None)
        return rec

    def _write(self, data: bytes, ident: int | None) -> None:
        os.write(self.fd, data)
        if data.endswith(b"\n"):
            self.cur.lines.append((os.fstat(self.fd).st_size, ident))

    def _rec(self, name: str) -> FileRec | None:
        for f in self.files:
            if f.name == name:
                return f
        return None

    def required(self) -> set[int]:
        req = set(self.secured)
        for f in self.files:
            if f.present or f.held:
                req |= f.ids()
        return req - self.split

    def allowed(self) -> set[int]:
        return set(self.written)

    def forbidden(self) -> set[int]:
        pending = {self.partial[0]} if self.partial else set()
        return self.abandoned | pending

    def judge(self, db: DbHandle) -> Verdict:
        return judge(stored_rows(db), self.required(), self.allowed(), self.forbidden())

    def forget_held(self) -> None:
        """The daemon process went away: nothing is held open any more."""
        for f in self.files:
            f.held = False

    def mark_held(self, idents: set[tuple[int, int]]) -> None:
        """The files the running daemon follows now (from its status), by (dev, ino)."""
        for f in self.files:
            if f.present:
                f.held = (f.dev, f.ino) in idents
            # a file gone from the directory keeps its flag: its inode may belong to another
            # file by now

    def secure(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        for row in rows:
            m = _USER.match(row[0])
            if m and row == expected_row(int(m.group(1))):
                self.secured.add(int(m.group(1)))

    # -- writing -------------------------------------------------------------------------

    def append(self, k: int) -> list[int]:
        """``k`` complete valid lines in one write (a pending half line is finished first);
        every ``foreign_every``-th id also brings a foreign line, every
        ``malformed_every``-th a malformed one."""
        self.finish_partial()
        ids = []
        parts: list[tuple[bytes, int | None]] = []
        for _ in range(k):
            n = self.next_id
            self.next_id += 1
            parts.append((valid_line(n), n))
            ids.append(n)
            if self.foreign_every and n % self.foreign_every == 0:
                parts.append((foreign_line(n), None))
            if self.malformed_every and n % self.malformed_every == 0:
                self.malformed += 1
                parts.append((malformed_line(n), None))
        if parts:
            end = os.fstat(self.fd).st_size
            os.write(self.fd, b"".join(p for p, _ in parts))
            for data, n in parts:
                end += len(data)
                self.cur.lines.append((end, n))
            self.written.update(ids)
        return ids

    def start_partial(self, cut: int) -> int:
        """Write the first ``cut`` bytes of a new line (clamped inside the line)."""
        self.finish_partial()
        n = self.next_id
        self.next_id += 1
        line = valid_line(n)
        cut = max(1, min(cut, len(line) - 1))
        self._write(line[:cut], None)
        self.partial = (n, line[cut:])
        self.note(f"partial t{n} cut at {cut}: {line[:cut][-24:]!r}")
        return n

    def finish_partial(self) -> None:
        if self.partial is None:
            return
        n, rest = self.partial
        self.partial = None
        self._write(rest, n)
        self.written.add(n)

    def abandon_partial(self) -> None:
        """The writer goes away mid-line: the fragment never becomes a line."""
        if self.partial is not None:
            self.abandoned.add(self.partial[0])
            self.note(f"abandoned t{self.partial[0]}")
            self.partial = None

    def nul_run(self, length: int) -> None:
        """A run of NULs (a crash after the size reached the disk, not the data); a half line
        before it is never completed."""
        self.abandon_partial()
        os.write(self.fd, b"\0" * length)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- rotations -----------------------------------------------------------------------

    def _reopen(self, header: bytes, *, abandon: bool) -> None:
        if abandon:
            self.abandon_partial()
        else:
            self.finish_partial()
        os.close(self.fd)
        self._create(header)

    def rotate_create(self, *, before_reopen: int = 0, abandon: bool = False,
                      compress: str = "none", header: int = 0) -> None:
        """logrotate ``create``: rename lmod.log to lmod.log-<n>; the writer keeps writing to
        the old file until it reopens; ``compress`` is ``none``, ``now`` (gzip the file just
        rotated) or ``delay`` (delaycompress: gzip the one rotated before)."""
        self.rotation += 1
        old = self.rename_current(f"lmod.log-{self.rotation}")
        if before_reopen:
            self.append(before_reopen)
        self._reopen(HEADERS[header], abandon=abandon)
        if compress == "now":
            self._compress(old)
        elif compress == "delay":
            prev = self._rec(f"lmod.log-{self.rotation - 1}")
            if prev is not None:
                self._compress(prev)

    def _compress(self, rec: FileRec) -> None:
        assert rec.name is not None
        gzip_file(self.dir / rec.name, self.dir / f"{rec.name}.gz")
        rec.name = f"{rec.name}.gz"

    def rotated(self) -> list[FileRec]:
        """Rotated plain files, oldest first."""
        return [f for f in self.files if f.present and f is not self.cur]

    def compress_oldest(self) -> None:
        old = self.rotated()
        if old:
            self._compress(old[0])

    def delete_oldest(self) -> None:
        old = self.rotated()
        if old:
            assert old[0].name is not None
            (self.dir / old[0].name).unlink()
            old[0].name = None

    def copytruncate(self, *, between: int = 0, hole: bool = False) -> None:
        """logrotate ``copytruncate``: copy lmod.log to lmod.log-<n>, then truncate it.
        ``between`` lines are written after the copy and before the truncation (logrotate's
        window: lost by logrotate, whether the daemon saw them or not). With ``hole`` the
        writer does not append (its next write lands at its old offset, leaving NULs)."""
        self.rotation += 1
        name = f"lmod.log-{self.rotation}"
        shutil.copyfile(self.live, self.dir / name)
        st = os.stat(self.dir / name)
        copy = FileRec(f"file{len(self.files)}", name, st.st_dev, st.st_ino,
                       lines=[(e, i) for e, i in self.cur.lines if e <= st.st_size],
                       header=self.cur.header)
        self.files.append(copy)
        if between:  # (a half line is finished first: into the window, lost with it)
            self.append(between)
        old_size = os.fstat(self.fd).st_size
        os.truncate(self.live, 0)
        self.cur.lines = []
        if self.partial is not None:  # its head stays in the copy, its tail starts the file
            n, rest = self.partial
            self.partial = None
            self.split.add(n)
            self.written.add(n)
            self._write(rest, None)
        if hole:
            # A writer that does not append writes at its own offset: the bytes between the
            # new end and that offset read as NULs.
            n = self.next_id
            self.next_id += 1
            line = valid_line(n)
            at = max(old_size, os.fstat(self.fd).st_size)
            fd2 = os.open(self.live, os.O_WRONLY)
            try:
                os.pwrite(fd2, line, at)
            finally:
                os.close(fd2)
            self.cur.lines.append((at + len(line), n))
            self.written.add(n)
        self.note(f"copytruncate -> {name} (between={between}, hole={hole},"
                  f" old size {old_size})")

    def rename_current(self, name: str) -> FileRec:
        """Rename the file being written (lmod.log); the writer keeps writing into it."""
        old = self.cur
        os.rename(self.live, self.dir / name)
        old.name = name
        return old

    def reopen(self, header: int = 0, *, abandon: bool = False) -> None:
        """The writer reopens lmod.log (``abandon``: leaving a half line unfinished)."""
        self._reopen(HEADERS[header], abandon=abandon)

    def rename_away(self, name: str, *, abandon: bool, header: int = 0) -> FileRec:
        """Rename lmod.log (out of the followed names, say); the writer then reopens it."""
        old = self.rename_current(name)
        self.reopen(header, abandon=abandon)
        return old

    def recreate(self, header: int, *, abandon: bool = False) -> None:
        """Delete lmod.log and start a new one whose first line is a header used before
        (the same fingerprint as an earlier file)."""
        old = self.cur
        os.unlink(self.live)
        old.name = None
        self._reopen(HEADERS[header] or HEADERS[1], abandon=abandon)

    def raw(self, data: bytes) -> None:
        """Append bytes as they are (a foreign or damaged line, written whole)."""
        self.finish_partial()
        self._write(data, None)

    def rewrite(self, count: int) -> None:
        """Rewrite lmod.log in place (same inode, same first line): truncate it to 0, write
        its header again and ``count`` new lines, at once."""
        self.finish_partial()
        os.truncate(self.live, 0)
        self.cur.lines = []
        if self.cur.header:
            self._write(self.cur.header, None)
        self.append(count)
        self.note(f"rewrite({count}): now {os.fstat(self.fd).st_size} bytes")

    def _fill(self, rec: FileRec, fd: int, count: int) -> None:
        """Write ``rec``'s header and ``count`` new lines into ``fd`` (at once) and record
        them in ``rec``."""
        data = rec.header
        rec.lines = [(len(rec.header), None)] if rec.header else []
        for _ in range(count):
            n = self.next_id
            self.next_id += 1
            line = valid_line(n)
            data += line
            rec.lines.append((len(data), n))
            self.written.add(n)
        os.write(fd, data)

    def rewrite_rotated(self, rec: FileRec, count: int) -> None:
        """Rewrite a rotated file in place (same inode, same first line) with ``count`` new
        lines."""
        assert rec.name is not None and rec is not self.cur
        fd = os.open(self.dir / rec.name, os.O_WRONLY | os.O_TRUNC)
        try:
            self._fill(rec, fd, count)
        finally:
            os.close(fd)
        self.note(f"rewrite_rotated({rec.name}, {count})")

    def replace_rotated(self, rec: FileRec, count: int) -> FileRec:
        """Delete a rotated file and create another under its name with ``count`` new lines
        (on ext4 it usually gets the same inode)."""
        assert rec.name is not None and rec is not self.cur
        name = rec.name
        (self.dir / name).unlink()
        rec.name = None
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            st = os.fstat(fd)
            new = FileRec(f"file{len(self.files)}", name, st.st_dev, st.st_ino,
                          header=rec.header)
            self.files.append(new)
            self._fill(new, fd, count)
        finally:
            os.close(fd)
        self.note(f"replace_rotated({name}, {count}): inode {rec.ino} -> {new.ino}")
        return new

    def truncate_regrow(self, keep: str, grow: int) -> None:
        """Truncate lmod.log below what was read and write it past its old size at once
        (before the daemon looks): ``keep`` is ``zero`` (the header is written again, so the
        first line is the same), ``first`` (the first line stays) or ``half``."""
        self.finish_partial()
        old_size = os.fstat(self.fd).st_size
        lines = self.cur.lines
        if keep == "zero" or not lines:
            cut = 0
        elif keep == "first":
            cut = lines[0][0]
        else:
            cut = lines[len(lines) // 2][0]
        os.truncate(self.live, cut)
        self.cur.lines = [(e, i) for e, i in lines if e <= cut]
        if cut == 0 and self.cur.header:
            self._write(self.cur.header, None)
        added = 0
        while added < grow or os.fstat(self.fd).st_size <= old_size:
            self.append(1)
            added += 1
        self.note(f"truncate_regrow keep={keep}: {old_size} -> {cut} -> "
                  f"{os.fstat(self.fd).st_size}")


# ---------------------------------------------------------------------------- outages


class SqliteLock:
    """A SQLite outage: another connection holds the write lock until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._release = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self.error: BaseException | None = None

    def _hold(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")
                self._started.set()
                self._release.wait(600)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except BaseException as exc:
            self.error = exc
            self._started.set()

    def acquire(self) -> SqliteLock:
        self._thread.start()
        if not self._started.wait(30):
            raise AssertionError("could not take the SQLite lock")
        if self.error is not None:
            raise AssertionError(f"could not take the SQLite lock: {self.error!r}")
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)


class CommitCutProxy:
    """A TCP proxy in front of MariaDB that breaks the connection around a COMMIT.

    It reads the client's MySQL packets (3-byte length, sequence id, payload). While
    ``arm()``-ed, the next ``COM_QUERY COMMIT`` is handled by ``mode``:

    * ``sent``: forwarded, and both connections dropped ``settle`` seconds later, before the
      server's answer reaches the client: the transaction is committed, the client cannot
      know (an *uncertain commit*);
    * ``withheld``: both connections dropped instead of forwarding it: the server rolls back;
    * ``zombie``: not forwarded, only the client's connection dropped: the server's session
      stays open, idle inside its transaction and holding its row locks, as after a network
      partition the server has not noticed (until ``release_zombies()``).

    ``cuts`` counts the connections broken so.
    """

    MODES = ("sent", "withheld", "zombie")

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self.port: int = self._listener.getsockname()[1]
        self._armed = 0
        self._mode = "sent"
        self.settle = 0.3
        self.cuts = 0
        self.commits_seen = 0
        self._lock = threading.Lock()
        self._closing = False
        self._socks: set[socket.socket] = set()
        self._zombies: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> CommitCutProxy:
        self._thread.start()
        return self

    def arm(self, times: int = 1, *, mode: str = "sent") -> None:
        if mode not in self.MODES:
            raise ValueError(mode)
        with self._lock:
            self._armed = times
            self._mode = mode

    @property
    def armed(self) -> int:
        with self._lock:
            return self._armed

    def release_zombies(self) -> None:
        with self._lock:
            zombies, self._zombies = self._zombies, []
        for z in zombies:
            _drop(z)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.release_zombies()
        for s in list(self._socks):
            _drop(s)
        self._thread.join(5)

    def __enter__(self) -> CommitCutProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _drop(client)
                continue
            upstream.settimeout(None)
            self._socks.update((client, upstream))
            mute = threading.Event()  # set: the server's answers are no longer passed on
            threading.Thread(target=self._down, args=(upstream, client, mute),
                             daemon=True).start()
            threading.Thread(target=self._up, args=(client, upstream, mute),
                             daemon=True).start()

    def _down(self, src: socket.socket, dst: socket.socket, mute: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not mute.is_set():
                    dst.sendall(data)
        _drop(dst)
        with self._lock:
            if src in self._zombies:
                return
        _drop(src)

    def _up(self, src: socket.socket, dst: socket.socket, mute: threading.Event) -> None:
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                out = b""
                while len(buf) >= 4:
                    length = int.from_bytes(buf[:3], "little")
                    if len(buf) < 4 + length:
                        break
                    packet, buf = buf[:4 + length], buf[4 + length:]
                    if packet[4:5] == b"\x03" and packet[5:].strip().upper() == b"COMMIT":
                        self.commits_seen += 1
                        with self._lock:
                            fire = self._armed > 0
                            if fire:
                                self._armed -= 1
                            mode = self._mode
                        if fire:
                            if out:
                                dst.sendall(out)
                                time.sleep(self.settle)  # their answers go back first
                            mute.set()
                            if mode == "sent":
                                dst.sendall(packet)
                                time.sleep(self.settle)  # the server commits meanwhile
                            self.cuts += 1
                            if mode == "zombie":
                                with self._lock:
                                    self._zombies.append(dst)
                            else:
                                _drop(dst)
                            _drop(src)
                            return
                    out += packet
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        with self._lock:
            if dst in self._zombies:
                _drop(src)
                return
        _drop(dst)
        _drop(src)


def _drop(sock: socket.socket) -> None:
    """Break a connection now: shutdown (which also wakes a thread blocked reading it), then
    close with a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# ---------------------------------------------------------------------------- daemon


class TortureDaemon(Daemon):
    """``lmod-tracker run`` with optional resource limits (``nofile``) for the child."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, stderr_path: Path, *args: str,
                 nofile: int | None = None) -> None:
        super().__init__(env, log_dir, stderr_path, *args)
        self.nofile = nofile

    def _limits(self) -> None:
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self) -> TortureDaemon:
        with self.stderr_path.open("ab") as err:
            err.write(f"==== start {time.strftime('%H:%M:%S')} ====\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmod_tracker", "run", "--log-dir", str(self.log_dir),
                 *self.args], env=self.env, stdout=err, stderr=err,
                preexec_fn=self._limits if self.nofile is not None else None)
        return self

    def with_fault(self, fault: str | None) -> TortureDaemon:
        """Set (or clear) ``LMOD_TRACKER_FAULT`` for the next start."""
        if fault:
            self.env["LMOD_TRACKER_FAULT"] = fault
        else:
            self.env.pop("LMOD_TRACKER_FAULT", None)
        return self

    @property
    def socket_path(self) -> Path:
        return Path(self.env["LMOD_TRACKER_STATUS_SOCKET"])

    def status(self) -> dict[str, Any] | None:
        """The status document, or None while it cannot be had (starting, gone)."""
        try:
            return fetch_status(self.socket_path)
        except (OSError, ValueError):
            return None

    def followed(self) -> set[tuple[int, int]] | None:
        """(dev, ino) of every file the daemon has open now."""
        doc = self.status()
        if doc is None:
            return None
        return {(f["identity"]["dev"], f["identity"]["ino"]) for f in doc["files"]}

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: self.status() is not None or not self.alive(), timeout,
                   "the daemon's status endpoint", on_timeout=lambda: self.tail())
        if not self.alive():
            raise AssertionError(f"daemon exited at start:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log_text().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def ensure_stopped(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


class Rig:
    """One test's log directory, database and daemon(s); for MariaDB a FaultProxy in front of
    the server, so that an outage can be made without touching the shared server."""

    def __init__(self, db: DbHandle, tmp: Path, server: Mapping[str, Any] | None) -> None:
        self.db = db
        self.tmp = tmp
        self.log_dir = tmp / "log"
        self.log_dir.mkdir(exist_ok=True)
        self.proxy: Any = None
        self.lock: SqliteLock | None = None
        self.env = {**db.env, **FAST_ENV}
        self.daemons: list[TortureDaemon] = []
        if server is not None:
            from tests.support.proxy import FaultProxy

            self.proxy = FaultProxy(server["host"], server["port"]).start()
            self.env.update(DB_HOST="127.0.0.1", DB_PORT=str(self.proxy.port))

    def daemon(self, *, nofile: int | None = None, **extra: str) -> TortureDaemon:
        d = TortureDaemon({**self.env, **extra}, self.log_dir, self.tmp / "daemon.log",
                          nofile=nofile)
        self.daemons.append(d)
        return d

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            assert self.db.sqlite_path is not None
            self.lock = SqliteLock(self.db.sqlite_path).acquire()

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self.lock is not None:
            self.lock.release()
            self.lock = None

    def close(self) -> None:
        for d in self.daemons:
            d.ensure_stopped()
        self.up()
        if self.proxy is not None:
            self.proxy.close()


def wait_exact(db: DbHandle, daemon: TortureDaemon, required: Callable[[], set[int]],
               allowed: Callable[[], set[int]], forbidden: Callable[[], set[int]] = set, *,
               timeout: float = 20.0, quiet: float = 0.6,
               context: Callable[[], str] | None = None) -> list[tuple[str, ...]]:
    """Wait until the rows agree with the model (bounded by ``timeout``), stay quiet for
    ``quiet`` seconds and check again (nothing late may arrive). Returns the rows."""
    def verdict() -> tuple[Verdict, list[tuple[str, str, str, str, str]]]:
        rows = stored_rows(db)
        return judge(rows, required(), allowed(), forbidden()), rows

    def fail(why: str, v: Verdict) -> AssertionError:
        return AssertionError(f"{why}: {v.summary()}\n" + (context() if context else "")
                              + f"\n--- daemon log ---\n{daemon.tail()}")

    deadline = time.monotonic() + timeout
    while True:
        v, rows = verdict()
        if v.ok:
            break
        if not daemon.alive():
            raise fail("the daemon died", v)
        if time.monotonic() >= deadline:
            raise fail(f"not exactly once after {timeout:g} s", v)
        time.sleep(0.1)
    time.sleep(quiet)
    v, rows = verdict()
    if not v.ok:
        raise fail("changed after settling", v)
    return list(rows)


def settle(world: World, db: DbHandle, daemon: TortureDaemon, *, timeout: float = 20.0,
           quiet: float = 0.6, context: Callable[[], str] | None = None) -> None:
    """Wait until the database agrees with the model (see :func:`wait_exact`); then record
    what the daemon holds open and what is committed."""
    rows = wait_exact(db, daemon, world.required, world.allowed, world.forbidden,
                      timeout=timeout, quiet=quiet, context=context)
    held = None
    for _ in range(20):
        held = daemon.followed()
        if held is not None:
            break
        time.sleep(0.1)
    if held is not None:
        world.mark_held(held)
    world.secure(rows)  # type: ignore[arg-type]

"""Benchmark suite of lmod-tracker: one markdown table of measurements, all from this run.

    .venv/bin/python bench/run.py [--quick] [--lines N] [--sections catchup,limits,...] [--keep]

Sections:

1. catchup  -- ``ingest FILE`` and ``run --once`` on a backlog, into MariaDB and SQLite
2. limits   -- reading, parsing and inserting the same file as fast as possible
3. steady   -- the daemon following a file written at 1k/5k/20k lines/s: write->commit latency
4. memory   -- peak RSS on a large backlog, and through a 30 s database outage
5. cost     -- the insert limit without the natural key, with it, with checkpoints, ...

Progress goes to stderr; stdout gets only the header and the table. The benchmark works in its
own database ``lmt_bench_<pid>`` (dropped at the end) and a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import itertools
import json
import marshal
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy  # type: ignore[import-untyped]
from gen import Counts, write_file

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SECTIONS = ("catchup", "limits", "steady", "memory", "cost")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCH_ROWS = 10_000
READ_BUFFER = 1 << 20
PARSE_BLOCK = 4 << 20
POLL_S = 0.02
_T0 = time.monotonic()
_DB_VARS = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASS", "DB_NAME", "DB_SOCKET")
_FACT_COLUMNS = "user_id, package_id, host_id, modulefile_id, jobid, load_time"


class BenchError(Exception):
    """A measurement could not be trusted (wrong count, failed process): the run fails."""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# -- results -------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    what: str
    db: str = "-"
    lines: int | None = None
    wall: float | None = None
    rate: float | None = None
    cpu: float | None = None
    db_cpu: float | None = None
    rss_mib: float | None = None
    latency_ms: tuple[float, float, float] | None = None
    notes: str = ""
    parts: dict[str, float] = field(default_factory=dict)  # seconds per kind of call

    @property
    def cpu_per_1k_ms(self) -> float | None:
        if self.cpu is None or not self.lines:
            return None
        return self.cpu / self.lines * 1000 * 1000


_COLUMNS = ("section", "measurement", "database", "lines", "wall s", "lines/s",
            "client CPU s", "client CPU ms per 1k lines", "mariadbd CPU s", "peak RSS MiB",
            "write->commit p50 / p99 / max ms", "notes")


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def render(rows: list[Row]) -> str:
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    last = None
    for r in rows:
        section = r.section if r.section != last else ""
        last = r.section
        lat = "-" if r.latency_ms is None else " / ".join(_num(x, 0) for x in r.latency_ms)
        wall_digits = 2 if (r.wall or 0) < 10 else 1
        cells = [section, r.what, r.db, _num(r.lines, 0), _num(r.wall, wall_digits),
                 _num(r.rate, 0), _num(r.cpu, 2), _num(r.cpu_per_1k_ms, 1), _num(r.db_cpu, 2),
                 _num(r.rss_mib, 0), lat, r.notes]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


# -- processes and /proc ---------------------------------------------------------------------


def proc_cpu(pid: int | None) -> float | None:
    """utime + stime of ``pid`` in seconds (all threads), None if it is gone."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``VmXxx`` value of /proc/<pid>/status in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def mariadbd_pid(pid_file: str | None = None) -> int | None:
    """The server's process: from its pid file (``@@pid_file``) when readable, else the only
    mariadbd/mysqld running (None when there are several: which one serves us is unknown)."""
    if pid_file:
        with contextlib.suppress(OSError, ValueError):
            return int(Path(pid_file).read_text().split()[0])
    for name in ("mariadbd", "mysqld"):
        try:
            out = subprocess.run(["pidof", name], capture_output=True, text=True, check=False)
        except OSError:
            return None
        pids = out.stdout.split()
        if pids:
            return int(pids[0]) if len(pids) == 1 else None
    return None


def _overlap(ticks: list[tuple[float, float, float | None]]) -> Overlap | None:
    ours, db, total, both = [], [], [], 0
    for (t0, o0, d0), (t1, o1, d1) in itertools.pairwise(ticks):
        if d0 is None or d1 is None or t1 <= t0:
            continue
        o, d = (o1 - o0) / (t1 - t0), (d1 - d0) / (t1 - t0)
        ours.append(o)
        db.append(d)
        total.append(o + d)
        both += o >= 0.5 and d >= 0.5
    if len(ours) < 3:
        return None
    return Overlap(len(ours), _median(ours), _median(db), _median(total), both / len(ours))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


@dataclass
class Measured:
    rc: int
    wall: float
    cpu: float
    maxrss_kib: int
    db_cpu: float | None
    overlap: Overlap | None = None
    maxrss_all_kib: int = 0  # with the parse process


@dataclass
class Overlap:
    """How our processes (lmod-tracker and its parse process) and mariadbd shared the run,
    from their CPU times sampled every :data:`OVERLAP_TICK` seconds."""

    samples: int
    ours_cores: float         # median cores busy in our processes
    db_cores: float           # median cores busy in mariadbd
    total_cores: float        # median of the sum
    both_busy: float          # share of samples where both used at least half a core

    def note(self) -> str:
        return (f"cores busy (median): ours {self.ours_cores:.2f}, mariadbd"
                f" {self.db_cores:.2f}, together {self.total_cores:.2f}; both busy"
                f" {self.both_busy:.0%} of the time")


OVERLAP_TICK = 0.1


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def descendants(pid: int) -> list[int]:
    """``pid`` and its children, grandchildren, ... (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


_OTHERS = (
    "SELECT user, COALESCE(db, ''), command FROM information_schema.processlist"
    " WHERE id <> CONNECTION_ID() AND user <> 'system user'"
    " AND command NOT IN ('Sleep', 'Daemon', 'Connect', 'Binlog Dump')"
    " AND COALESCE(db, '') <> %s AND COALESCE(info, '') NOT LIKE %s")


class ServerWatch(threading.Thread):
    """Samples the server's process list once a second: is any other client busy?

    Other clients compete for the same server and CPUs, so their samples are reported next to
    the numbers they may have disturbed.
    """

    def __init__(self, env: Env) -> None:
        super().__init__(name="server-watch", daemon=True)
        self.env = env
        self.busy = 0
        self.samples = 0
        self.who: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        conn: Any = None
        db = self.env.db
        while not self._halt.is_set():
            try:
                if conn is None:
                    conn = await self.env.connect()
                async with conn.cursor() as cur:
                    await cur.execute(_OTHERS, (db, f"%{db}%"))
                    rows = await cur.fetchall()
                self.samples += 1
                if rows:
                    self.busy += 1
                    self.who.update(f"{u}@{d or '-'}" for u, d, _ in rows)
            except Exception:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            await asyncio.sleep(1.0)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class Env:
    """Everything shared by the sections: settings, paths, the database, started processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="lmt-bench-"))
        self.db = f"lmt_bench_{os.getpid()}"
        self.db_host: str = args.db_host
        self.db_port: int = args.db_port
        self.db_user: str = args.db_user
        self.db_pass: str = args.db_pass
        self.mariadbd = mariadbd_pid(self._pid_file())
        self.children: list[subprocess.Popen[bytes]] = []
        self.catchup_file: Path | None = None
        self.catchup_counts: Counts | None = None
        self.rows_file: Path | None = None      # precomputed fact rows, marshal batches
        self.tsv_file: Path | None = None       # the same rows for LOAD DATA
        self.catchup_rates: dict[tuple[str, str], float] = {}
        self.db_created = False
        self.watch = ServerWatch(self)

    # -- database ----------------------------------------------------------------------------

    def _pid_file(self) -> str | None:
        async def ask() -> str | None:
            conn = await self.connect()
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT @@pid_file")
                    return (await cur.fetchone())[0]
            finally:
                conn.close()

        try:
            return asyncio.run(ask())
        except Exception:  # the run itself reports an unreachable server
            return None

    async def connect(self, database: str | None = None, *, port: int | None = None,
                      autocommit: bool = True, bulk: bool = False) -> Any:
        """A connection; ``bulk``: executemany sends one binary bulk execute (the store's
        way) instead of multi-row text INSERTs."""
        return await asyncmy.connect(host=self.db_host, port=port or self.db_port,
                                     user=self.db_user, password=self.db_pass,
                                     database=database, autocommit=autocommit,
                                     stmt_cache_size=64 if bulk else 0)

    def query(self, sql: str, params: tuple[Any, ...] = (), *, database: str | None = None
              ) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            conn = await self.connect(database)
            try:
                async with conn.cursor() as cur:
                    await cur.execute(sql, params or None)
                    return list(await cur.fetchall() or ())
            finally:
                conn.close()

        return asyncio.run(go())

    def fresh_db(self) -> None:
        if self.query("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s",
                      (self.db,))[0][0]:
            self.query(f"DROP DATABASE `{self.db}`")
        self.query(f"CREATE DATABASE `{self.db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self.db_created = True
        self.settle()

    def drop_db(self) -> None:
        if self.db_created:
            with contextlib.suppress(Exception):
                self.query(f"DROP DATABASE IF EXISTS `{self.db}`")
            self.db_created = False

    def count(self, table: str = "module_usage") -> int:
        return int(self.query(f"SELECT COUNT(*) FROM `{table}`", database=self.db)[0][0])

    def settle(self) -> None:
        """Wait until mariadbd is idle (flushing or purge left by the previous measurement):
        three quiet half-seconds in a row, each under 5 % of one CPU; at most 6 s (--quick)
        or 20 s, since other clients of the server may keep it busy anyway."""
        if self.mariadbd is None:
            return
        max_s = 6.0 if self.quick else 20.0
        deadline = time.monotonic() + max_s
        quiet = 0
        used = 0.0
        while time.monotonic() < deadline:
            a = proc_cpu(self.mariadbd)
            time.sleep(0.5)
            b = proc_cpu(self.mariadbd)
            if a is None or b is None:
                return
            used = b - a
            quiet = quiet + 1 if used < 0.025 else 0
            if quiet >= 3:
                return
        say(f"  mariadbd still busy ({used / 0.5 * 100:.0f} % CPU) after {max_s:g} s;"
            " measuring anyway")

    def mark(self) -> int:
        return self.watch.busy

    def disturbed(self, mark: int) -> str:
        """A note if other clients were busy on the server since ``mark``."""
        n = self.watch.busy - mark
        if n <= 0:
            return ""
        return (f"; WARNING: other clients were busy on the server in {n} one-second"
                " samples of this measurement")

    # -- lmod-tracker processes --------------------------------------------------------------

    def child_env(self, backend: str, *, sqlite_path: Path | None = None,
                  port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _DB_VARS and not k.startswith("LMOD_TRACKER_")}
        env.update(LMOD_TRACKER_STATUS_SOCKET="", LMOD_TRACKER_LOG_LEVEL="warning",
                   LMOD_TRACKER_LOG_FORMAT="logfmt")
        if backend == "mysql":
            env.update(LMOD_TRACKER_BACKEND="mysql", DB_HOST=self.db_host,
                       DB_PORT=str(port or self.db_port), DB_USER=self.db_user,
                       DB_PASS=self.db_pass, DB_NAME=self.db)
        else:
            assert sqlite_path is not None
            env.update(LMOD_TRACKER_BACKEND="sqlite", LMOD_TRACKER_SQLITE_PATH=str(sqlite_path))
        return env

    def spawn(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "lmod_tracker", *args], env=env,
                                    stdout=err, stderr=err, cwd=self.tmp)
        self.children.append(proc)
        return proc

    def run_measured(self, args: list[str], env: dict[str, str], log: Path) -> Measured:
        """Run ``lmod-tracker ARGS`` to completion: wall, CPU (wait4) and peak RSS (VmHWM)."""
        db0 = proc_cpu(self.mariadbd)
        t0 = time.perf_counter()
        proc = self.spawn(args, env, log)
        # wait4's ru_maxrss would count the pages the child shared with this (large) process
        # before exec: sample the child's own high-water mark instead.
        hwm = [0]
        done = threading.Event()
        ticks: list[tuple[float, float, float | None]] = []  # (time, our CPU, mariadbd CPU)
        hwm_all = [0]  # peak RSS of lmod-tracker and its parse process, added up
        last_ours: dict[int, float] = {}

        def sample() -> None:
            n = 0
            while not done.wait(0.05):
                hwm[0] = max(hwm[0], proc_status_kib(proc.pid, "VmHWM") or 0)
                n += 1
                if n % 2:
                    continue
                peaks = 0
                for pid in descendants(proc.pid):
                    cpu = proc_cpu(pid)
                    if cpu is not None:
                        last_ours[pid] = cpu
                    peaks += proc_status_kib(pid, "VmHWM") or 0
                hwm_all[0] = max(hwm_all[0], peaks)
                ticks.append((time.perf_counter(), sum(last_ours.values()),
                              proc_cpu(self.mariadbd)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        return Measured(proc.returncode, wall, ru.ru_utime + ru.ru_stime, hwm[0],
                        _diff(db0, proc_cpu(self.mariadbd)), _overlap(ticks), hwm_all[0])

    def stop(self, proc: subprocess.Popen[bytes], what: str, timeout: float = 40) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise BenchError(f"{what}: still running {timeout:g} s after SIGTERM") from None
        return rc

    def wait_schema(self, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
        """Until the daemon has created its schema (it then scans and starts following)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"lmod-tracker exited {proc.returncode} at start:\n"
                                 + tail(log))
            rows = self.query("SELECT COUNT(*) FROM information_schema.tables WHERE"
                              " table_schema = %s AND table_name = 'lmod_tracker_schema'",
                              (self.db,))
            if rows[0][0] and self.query("SELECT COUNT(*) FROM lmod_tracker_schema",
                                         database=self.db)[0][0]:
                time.sleep(1.0)  # first scan and directory watch
                return
            time.sleep(0.2)
        raise BenchError(f"lmod-tracker did not create its schema within {timeout:g} s")

    def checkpoint_offset(self) -> int:
        rows = self.query("SELECT COALESCE(MAX(byte_offset), 0) FROM file_checkpoint",
                          database=self.db)
        return int(rows[0][0])

    def cleanup(self) -> None:
        if self.watch.is_alive():
            self.watch.stop()
        for proc in self.children:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(10)
        self.drop_db()
        if self.args.keep:
            say(f"kept temporary files in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


# -- the backlog file ------------------------------------------------------------------------


def make_file(path: Path, lines: int, seed: int) -> Counts:
    say(f"generating {fmt_int(lines)} lines into {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts = write_file(path, lines, seed=seed)
    say(f"  {counts.valid:,} valid, {counts.foreign:,} foreign, {counts.malformed:,} malformed,"
        f" {path.stat().st_size / 2**20:,.0f} MiB in {time.perf_counter() - t0:.1f} s")
    return counts


def catchup_file(env: Env) -> tuple[Path, Counts]:
    if env.catchup_file is None:
        path = env.tmp / "catchup" / "lmod.log"
        env.catchup_counts = make_file(path, env.args.lines, seed=1)
        env.catchup_file = path
    assert env.catchup_counts is not None
    return env.catchup_file, env.catchup_counts


# -- 1. catch-up -------------------------------------------------------------------------------


def section_catchup(env: Env) -> list[Row]:
    path, counts = catchup_file(env)
    title = f"1. Catch-up ({fmt_int(counts.total)}-line backlog)"
    rows = []
    for backend, label in (("mysql", "MariaDB"), ("sqlite", "SQLite")):
        for cmd in ("ingest", "run"):
            sqlite_path = env.tmp / "x.db"
            if backend == "mysql":
                env.fresh_db()
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
                env.settle()
            args = (["ingest", str(path)] if cmd == "ingest"
                    else ["run", "--once", "--log-dir", str(path.parent)])
            what = ("lmod-tracker ingest FILE" if cmd == "ingest"
                    else "lmod-tracker run --once --log-dir DIR")
            say(f"catch-up: {what} into {label}")
            log = env.tmp / f"catchup-{cmd}-{backend}.log"
            mark = env.mark()
            m = env.run_measured(args, env.child_env(backend, sqlite_path=sqlite_path), log)
            if m.rc != 0:
                raise BenchError(f"{what} ({label}) exited {m.rc}:\n{tail(log)}")
            if backend == "mysql":
                stored = env.count()
            else:
                with contextlib.closing(sqlite3.connect(sqlite_path)) as conn:
                    stored = int(conn.execute("SELECT COUNT(*) FROM module_usage").fetchone()[0])
            if stored != counts.valid:
                raise BenchError(f"{what} ({label}): module_usage has {stored:,} rows,"
                                 f" the file has {counts.valid:,} valid lines")
            rate = counts.total / m.wall
            env.catchup_rates[(cmd, backend)] = rate
            say(f"  {m.wall:.1f} s, {fmt_int(rate)} lines/s, CPU {m.cpu:.1f} s")
            overlap = (f"; {m.overlap.note()}" if backend == "mysql" and m.overlap
                       else "")
            if m.maxrss_all_kib > m.maxrss_kib:
                overlap += (f"; peak RSS with the parse process"
                            f" {m.maxrss_all_kib / 1024:.0f} MiB")
            rows.append(Row(title, what, label, counts.total, m.wall, rate, m.cpu,
                            m.db_cpu if backend == "mysql" else None, m.maxrss_kib / 1024,
                            notes=f"{stored:,} rows verified{overlap}" + env.disturbed(mark)))
    return rows


# -- 2. limits ---------------------------------------------------------------------------------


def fact_ddl(table: str, *, unique: bool = True) -> str:
    """module_usage's CREATE TABLE from the package's schema, renamed (optionally no UNIQUE)."""
    from lmod_tracker.store.base import schema_statements

    for stmt in schema_statements("mysql"):
        if re.match(r"CREATE TABLE IF NOT EXISTS `?module_usage`?\s*\(", stmt):
            ddl = stmt.replace("module_usage", table)
            break
    else:
        raise BenchError("no CREATE TABLE module_usage in the schema")
    if not unique:  # the key's column list may span lines
        ddl2 = re.sub(r"\n\s*UNIQUE KEY \w+\s*\([^)]*\),", "", ddl)
        if ddl2 == ddl:
            ddl2 = re.sub(r",\s*UNIQUE KEY \w+\s*\([^)]*\)", "", ddl)
        ddl = ddl2
    return ddl


def checkpoint_ddl(table: str) -> str:
    return table_ddl("file_checkpoint").replace("file_checkpoint", table)


def table_ddl(table: str) -> str:
    """The package schema's CREATE TABLE of ``table`` (MariaDB)."""
    from lmod_tracker.store.base import schema_statements

    for stmt in schema_statements("mysql"):
        if re.match(rf"CREATE TABLE IF NOT EXISTS `?{table}`?\s*\(", stmt):
            return stmt
    raise BenchError(f"no CREATE TABLE {table} in the schema")


def blocks(path: Path, size: int) -> Iterator[tuple[bytes, int]]:
    """``(block, offset)``: blocks of about ``size`` bytes, each cut after a newline."""
    carry = b""
    offset = 0
    with path.open("rb", buffering=0) as fh:
        while True:
            data = fh.read(size)
            if not data:
                if carry:
                    yield carry, offset
                return
            data = carry + data
            end = data.rfind(b"\n") + 1
            if end == 0:
                carry = data
                continue
            yield data[:end], offset
            offset += end
            carry = data[end:]


def _tsv(value: object) -> str:
    if value is None:
        return "\\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def parse_pass(env: Env, path: Path, counts: Counts) -> tuple[float, float]:
    """Parse the file with lmod_tracker's parser, timing only ``parse_block``.

    Between blocks (untimed) turn the events into fact rows with precomputed integer ids, for
    the insert limits: marshal batches of BATCH_ROWS rows, and a TSV file for LOAD DATA.
    Returns (seconds in parse_block, CPU seconds in parse_block).
    """
    from lmod_tracker.parse import Parser

    parser = Parser()
    ids: dict[str, dict[object, int]] = {"u": {}, "p": {}, "h": {}, "m": {}}
    users, packages, hosts, files = ids["u"], ids["p"], ids["h"], ids["m"]
    rows_path = env.tmp / "rows.marshal"
    tsv_path = env.tmp / "rows.tsv"
    pending: list[tuple[Any, ...]] = []
    wall = cpu = 0.0
    events = rejects = foreign = 0
    with rows_path.open("wb") as rows_out, tsv_path.open("w") as tsv_out:
        for block, offset in blocks(path, PARSE_BLOCK):
            t0, c0 = time.perf_counter(), time.process_time()
            parsed = parser.parse_block(block, offset)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            events += len(parsed.events)
            rejects += len(parsed.rejects)
            foreign += parsed.foreign
            for e in parsed.events:
                u = users.setdefault(e.user, len(users) + 1)
                p = packages.setdefault((e.package, e.version), len(packages) + 1)
                h = hosts.setdefault(e.host, len(hosts) + 1)
                m = None if e.path is None else files.setdefault(e.path, len(files) + 1)
                pending.append((u, p, h, m, e.jobid, e.load_time))
            while len(pending) >= BATCH_ROWS:
                batch, pending = pending[:BATCH_ROWS], pending[BATCH_ROWS:]
                marshal.dump(batch, rows_out)
                tsv_out.write("".join("\t".join(map(_tsv, r)) + "\n" for r in batch))
        if pending:
            marshal.dump(pending, rows_out)
            tsv_out.write("".join("\t".join(map(_tsv, r)) + "\n" for r in pending))
    if (events, rejects, foreign) != (counts.valid, counts.malformed, counts.foreign):
        raise BenchError(f"parser found {events:,} events, {rejects:,} rejects, {foreign:,}"
                         f" foreign; the file has {counts.valid:,}, {counts.malformed:,},"
                         f" {counts.foreign:,}")
    env.rows_file, env.tsv_file = rows_path, tsv_path
    say(f"  {len(users)} users, {len(packages)} packages, {len(hosts)} hosts,"
        f" {len(files)} modulefiles")
    return wall, cpu


def row_batches(path: Path) -> Iterator[list[tuple[Any, ...]]]:
    with path.open("rb") as fh:
        while True:
            try:
                yield marshal.load(fh)
            except EOFError:
                return


@dataclass
class InsertVariant:
    unique: bool = True
    checkpoint: bool = False
    lookup: bool = False
    bulk: bool = False
    #: the daily rollup's upserts for each batch's rows, in its transaction (rows precomputed)
    rollup: bool = False
    #: batches of 10k rows per transaction (the rollup aggregates over all of them)
    batches_per_commit: int = 1


_SELECT_EXISTING = ("SELECT DATE_FORMAT(load_time, '%%Y-%%m-%%d %%H:%%i:%%s.%%f'), host_id,"
                    " user_id, package_id FROM bench_fact WHERE load_time IN ")
_UPSERT_CHECKPOINT = (
    "INSERT INTO bench_checkpoint (instance, dev, ino, fingerprint, path, byte_offset,"
    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
    " byte_offset = GREATEST(byte_offset, VALUES(byte_offset)),"
    " path = VALUES(path), updated_at = VALUES(updated_at)")


def _groups(batches: Iterable[list[tuple[Any, ...]]], size: int
            ) -> Iterator[list[list[tuple[Any, ...]]]]:
    """``size`` batches at a time (the last group may hold fewer)."""
    group: list[list[tuple[Any, ...]]] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


async def _insert_rows(env: Env, variant: InsertVariant) -> tuple[dict[str, float], float, int]:
    """Insert the precomputed rows, one transaction per batch.

    Returns (seconds in each kind of database call, client CPU seconds, rows inserted); only
    the database calls are timed, not reading the precomputed batches.
    """
    assert env.rows_file is not None
    from lmod_tracker.store.base import rollup_rows
    from lmod_tracker.store.mysql import _UPSERT_DAILY

    conn = await env.connect(env.db, autocommit=False, bulk=variant.bulk)
    parts = {"lookup": 0.0, "insert": 0.0, "rollup": 0.0, "checkpoint": 0.0, "commit": 0.0}
    cpu = 0.0
    n = 0
    offset = 0
    clock = time.perf_counter
    try:
        async with conn.cursor() as cur:
            await cur.execute(fact_ddl("bench_fact", unique=variant.unique))
            await cur.execute(checkpoint_ddl("bench_checkpoint"))
            if variant.rollup:
                await cur.execute(table_ddl("usage_daily"))
            if not variant.unique:
                await cur.execute("SELECT COUNT(*) FROM information_schema.statistics WHERE"
                                  " table_schema = DATABASE() AND table_name = 'bench_fact'"
                                  " AND non_unique = 0 AND index_name <> 'PRIMARY'")
                if (await cur.fetchone())[0]:
                    raise BenchError("could not drop the unique key from the fact table")
            await conn.commit()
            insert = f"INSERT INTO bench_fact ({_FACT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
            for group in _groups(row_batches(env.rows_file), variant.batches_per_commit):
                batch = [r for b in group for r in b]
                # (the rows have no cluster and no userload: both None)
                daily = rollup_rows([(*r, None, None) for r in batch]) if variant.rollup else []
                c0 = time.process_time()
                if variant.lookup:
                    t0 = clock()
                    times = list({r[5] for r in batch})
                    for i in range(0, len(times), 2000):
                        part = times[i:i + 2000]
                        await cur.execute(_SELECT_EXISTING + "(" + ",".join(["%s"] * len(part))
                                          + ")", part)
                        if await cur.fetchall():
                            raise BenchError("the fact table already holds these rows")
                    parts["lookup"] += clock() - t0
                t0 = clock()
                for part in group:
                    n += await cur.executemany(insert, part)
                parts["insert"] += clock() - t0
                if daily:
                    t0 = clock()
                    for i in range(0, len(daily), 5000):
                        await cur.executemany(_UPSERT_DAILY, daily[i:i + 5000])
                    parts["rollup"] += clock() - t0
                if variant.checkpoint:
                    offset += len(batch) * 190
                    t0 = clock()
                    await cur.execute(_UPSERT_CHECKPOINT, (
                        "bench", 2049, 123456, "0123456789abcdef", "/var/log/lmod/lmod.log",
                        offset, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")))
                    parts["checkpoint"] += clock() - t0
                t0 = clock()
                await conn.commit()
                parts["commit"] += clock() - t0
                cpu += time.process_time() - c0
    finally:
        conn.close()
    return parts, cpu, n


def insert_limit(env: Env, counts: Counts, variant: InsertVariant, section: str, what: str
                 ) -> Row:
    env.fresh_db()
    mark = env.mark()
    db0 = proc_cpu(env.mariadbd)
    parts, cpu, n = asyncio.run(_insert_rows(env, variant))
    db_cpu = _diff(db0, proc_cpu(env.mariadbd))
    wall = sum(parts.values())
    stored = env.count("bench_fact")
    if n != counts.valid or stored != counts.valid:
        raise BenchError(f"{what}: inserted {n:,}, table has {stored:,}, expected"
                         f" {counts.valid:,}")
    rate = counts.total / wall
    say(f"  {what}: {wall:.2f} s, {fmt_int(rate)} lines/s")
    split = ", ".join(f"{k} {v:.2f} s" for k, v in parts.items() if v)
    return Row(section, what, "MariaDB", counts.total, wall, rate, cpu, db_cpu,
               notes=f"{split}; {stored:,} rows verified" + env.disturbed(mark), parts=parts)


def load_data_limit(env: Env, counts: Counts, section: str) -> Row:
    """LOAD DATA LOCAL INFILE of the same rows: asyncmy first, else the mysql client."""
    assert env.tsv_file is not None
    what = "LOAD DATA LOCAL INFILE of the same rows (one transaction)"
    sql = (f"LOAD DATA LOCAL INFILE '{env.tsv_file}' INTO TABLE bench_fact"
           f" ({_FACT_COLUMNS})")

    async def create() -> None:
        conn = await env.connect(env.db)
        try:
            async with conn.cursor() as cur:
                await cur.execute(fact_ddl("bench_fact"))
        finally:
            conn.close()

    async def through_asyncmy() -> None:
        conn = await asyncmy.connect(host=env.db_host, port=env.db_port, user=env.db_user,
                                     password=env.db_pass, database=env.db, autocommit=False,
                                     local_infile=True)
        try:
            async with conn.cursor() as cur:
                await asyncio.wait_for(cur.execute(sql), 600)
            await conn.commit()
        finally:
            conn.close()

    def timed(fn: Callable[[], None]) -> tuple[float, float | None]:
        env.fresh_db()
        asyncio.run(create())
        db0 = proc_cpu(env.mariadbd)
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, _diff(db0, proc_cpu(env.mariadbd))

    how = "asyncmy"
    mark = env.mark()
    try:
        wall, db_cpu = timed(lambda: asyncio.run(through_asyncmy()))
    except Exception as exc:
        say(f"  LOAD DATA through asyncmy failed ({type(exc).__name__}: {exc});"
            " using the mysql client")
        client = shutil.which("mariadb") or shutil.which("mysql")
        if client is None:
            return Row(section, what, "MariaDB", notes="n/a: asyncmy fails, no mysql client")
        how = f"{Path(client).name} client"
        cmd = [client, "--local-infile=1", "-h", env.db_host, "-P", str(env.db_port), "-u",
               env.db_user, env.db, "-e", sql]
        cenv = dict(os.environ, MYSQL_PWD=env.db_pass)

        def run_client() -> None:
            out = subprocess.run(cmd, env=cenv, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise BenchError(f"LOAD DATA failed: {out.stderr.strip()}")

        try:
            wall, db_cpu = timed(run_client)
        except BenchError as exc:
            return Row(section, what, "MariaDB", notes=f"n/a: {exc}")
    stored = env.count("bench_fact")
    if stored != counts.valid:
        raise BenchError(f"LOAD DATA: table has {stored:,} rows, expected {counts.valid:,}")
    rate = counts.total / wall
    say(f"  LOAD DATA ({how}): {wall:.2f} s, {fmt_int(rate)} lines/s")
    return Row(section, what, "MariaDB", counts.total, wall, rate, None, db_cpu,
               notes=f"through the {how}; {stored:,} rows verified" + env.disturbed(mark))


def percent_notes(env: Env, limit: float, backends: tuple[str, ...]) -> str:
    """Our catch-up throughputs as a percentage of ``limit`` (both in lines/s)."""
    parts = []
    for backend in backends:
        label = "MariaDB" if backend == "mysql" else "SQLite"
        got = []
        for cmd, name in (("ingest", "ingest"), ("run", "run --once")):
            rate = env.catchup_rates.get((cmd, backend))
            if rate is not None:
                got.append(f"{name} {rate / limit * 100:.1f} %")
        if got:
            parts.append(f"{label}: " + ", ".join(got))
    if not parts:
        return "catch-up not measured in this run"
    return "our catch-up = " + "; ".join(parts) + " of this"


def section_limits(env: Env) -> list[Row]:
    path, counts = catchup_file(env)
    title = f"2. Limits (same {fmt_int(counts.total)}-line file)"
    rows: list[Row] = []
    say("limits: reading the file")
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with path.open("rb", buffering=0) as fh:
        while data := fh.read(READ_BUFFER):
            n += data.count(b"\n")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if n != counts.total:
        raise BenchError(f"read {n:,} lines, the file has {counts.total:,}")
    rows.append(Row(title, "read the file (1 MiB reads, count newlines)", "-", n, wall,
                    n / wall, cpu, notes=percent_notes(env, n / wall, ("mysql", "sqlite"))
                    + "; file in page cache"))
    say("limits: parsing (lmod_tracker.parse.Parser.parse_block, 4 MiB blocks)")
    wall, cpu = parse_pass(env, path, counts)
    rows.append(Row(title, "parse (Parser().parse_block on 4 MiB blocks)", "-", counts.total,
                    wall, counts.total / wall, cpu,
                    notes=percent_notes(env, counts.total / wall, ("mysql", "sqlite"))))
    say("limits: inserting precomputed rows into MariaDB")
    row = insert_limit(env, counts, InsertVariant(), title,
                       "multi-row INSERT of precomputed rows (asyncmy, 10k rows per INSERT"
                       " and per commit)")
    row.notes = percent_notes(env, row.rate or 1, ("mysql",)) + "; " + row.notes
    rows.append(row)
    for variant, what in (
            (InsertVariant(bulk=True), "binary bulk executemany of the same rows (the store's"
             " way; 10k rows per commit)"),
            (InsertVariant(bulk=True, rollup=True), "the same + the daily rollup's upserts of"
             " each batch in its transaction: the least work an ingest must do"),
            (InsertVariant(bulk=True, rollup=True, batches_per_commit=10), "the same with"
             " 100k rows per transaction (the rollup aggregated over 10x more loads)")):
        say(f"limits: {what}")
        row = insert_limit(env, counts, variant, title, what)
        row.notes = percent_notes(env, row.rate or 1, ("mysql",)) + "; " + row.notes
        rows.append(row)
    row = load_data_limit(env, counts, title)
    if row.rate:
        row.notes = percent_notes(env, row.rate, ("mysql",)) + "; " + row.notes
    rows.append(row)
    return rows


# -- 3. steady state ---------------------------------------------------------------------------


@dataclass
class Phase:
    rate: int
    seconds: float
    lines: int = 0
    valid: int = 0
    wall: float = 0.0
    cpu: float | None = None
    db_cpu: float | None = None
    latencies: list[float] = field(default_factory=list)
    polls: int = 0
    rss_kib: int | None = None
    disturbed: str = ""


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


async def _steady(env: Env, pid: int, logfile: Path, phases: list[Phase]) -> None:
    conn = await env.connect(env.db)
    base = 0            # valid lines written (and to be committed) before the phase
    committed = 0       # rows counted so far
    newest = "1000-01-01 00:00:00.000000"
    last_us = 0

    async def poll(cur: Any) -> int:
        # One file is committed in order and its time= values increase, so the rows not yet
        # counted are exactly those newer than the newest counted: a short range count.
        nonlocal committed, newest
        await cur.execute("SELECT COUNT(*), DATE_FORMAT(MAX(load_time),"
                          " '%%Y-%%m-%%d %%H:%%i:%%s.%%f') FROM module_usage"
                          " WHERE load_time > %s", (newest,))
        n, top = await cur.fetchone()
        if n:
            committed += int(n)
            newest = top
        return committed

    try:
        async with conn.cursor() as cur:
            for i, phase in enumerate(phases):
                say(f"steady: {phase.rate:,} lines/s for {phase.seconds:g} s")
                mark = env.mark()
                cpu0, db0 = proc_cpu(pid), proc_cpu(env.mariadbd)
                t_start = time.monotonic()
                if phase.rate == 0:  # idle: the daemon follows the file, nothing new comes
                    while time.monotonic() - t_start < phase.seconds:
                        if await poll(cur) != base:
                            raise BenchError("rows appeared while nothing was written")
                        await asyncio.sleep(POLL_S)
                    phase.wall = time.monotonic() - t_start
                    phase.cpu = _diff(cpu0, proc_cpu(pid))
                    phase.db_cpu = _diff(db0, proc_cpu(env.mariadbd))
                    phase.rss_kib = proc_status_kib(pid, "VmHWM")
                    phase.disturbed = env.disturbed(mark)
                    continue
                record = env.tmp / f"steady-{phase.rate}.json"
                writer = await asyncio.create_subprocess_exec(
                    sys.executable, str(BENCH / "gen.py"), "steady", str(logfile),
                    "--rate", str(phase.rate), "--seconds", str(phase.seconds),
                    "--record", str(record), "--seed", str(100 + i),
                    "--after-us", str(last_us), stdout=asyncio.subprocess.PIPE)
                done = asyncio.create_task(writer.communicate())
                polls: list[tuple[float, int]] = []
                expected: int | None = None
                deadline = 0.0
                tick = time.monotonic()
                while True:
                    count = await poll(cur)
                    polls.append((time.time(), count))
                    if expected is None and done.done():
                        out, _ = done.result()
                        if writer.returncode != 0:
                            raise BenchError(f"steady writer exited {writer.returncode}")
                        written = json.loads(out)
                        phase.lines = sum(written.values())
                        phase.valid = written["valid"]
                        expected = base + phase.valid
                        deadline = time.monotonic() + max(60.0, phase.lines / 2000)
                    if expected is not None:
                        if count >= expected:
                            break
                        if time.monotonic() > deadline:
                            raise BenchError(f"steady {phase.rate} lines/s: {count - base:,} of"
                                             f" {phase.valid:,} rows committed")
                    if proc_cpu(pid) is None:
                        raise BenchError("the daemon died during the steady-state test")
                    tick += POLL_S
                    await asyncio.sleep(max(0.0, tick - time.monotonic()))
                phase.wall = time.monotonic() - t_start
                phase.cpu = _diff(cpu0, proc_cpu(pid))
                phase.db_cpu = _diff(db0, proc_cpu(env.mariadbd))
                phase.rss_kib = proc_status_kib(pid, "VmHWM")
                phase.polls = len(polls)
                phase.disturbed = env.disturbed(mark)
                if count != expected:
                    raise BenchError(f"steady: {count - base:,} rows for {phase.valid:,}"
                                     " valid lines (duplicates?)")
                data = json.loads(record.read_text())
                phase.latencies = _latencies(data["bursts"], polls, base)
                last_us = int(max(t for t, _ in data["bursts"]) * 1e6) + 1_000_000
                base = expected
    finally:
        conn.close()


def _latencies(bursts: list[list[float]], polls: list[tuple[float, int]], base: int
               ) -> list[float]:
    """Per valid line: time of the first poll that counted it minus the time it was written."""
    counts = [c for _, c in polls]
    out: list[float] = []
    before = 0
    for t_write, cum in bursts:
        for line in range(base + int(before), base + int(cum)):
            k = bisect_right(counts, line)
            if k < len(polls):
                out.append(polls[k][0] - t_write)
        before = cum
    return out


def section_steady(env: Env) -> list[Row]:
    rates = [1000, 5000] if env.quick else [1000, 5000, 20000]
    seconds = 5.0 if env.quick else 20.0
    title = "3. Steady state (daemon, MariaDB)"
    env.fresh_db()
    logdir = env.tmp / "steady"
    logdir.mkdir()
    log = env.tmp / "steady-daemon.log"
    daemon = env.spawn(["run", "--log-dir", str(logdir)], env.child_env("mysql"), log)
    env.wait_schema(daemon, log)
    phases = [Phase(rate, seconds) for rate in rates]
    phases.append(Phase(0, 5.0 if env.quick else 10.0))
    asyncio.run(_steady(env, daemon.pid, logdir / "lmod.log", phases))
    total = sum(p.valid for p in phases)
    stored = env.count()
    rc = env.stop(daemon, "steady-state daemon")
    if rc != 0:
        raise BenchError(f"the steady-state daemon exited {rc} after SIGTERM:\n{tail(log)}")
    if stored != total:
        raise BenchError(f"steady: module_usage has {stored:,} rows, {total:,} written")
    rows = []
    for p in phases:
        if p.rate == 0:
            cpu_pct = (p.cpu or 0) / p.wall * 100
            rows.append(Row(title, f"idle for {p.seconds:g} s after the writes (file followed,"
                                   " nothing new)", "MariaDB", None, p.wall, None, p.cpu,
                            p.db_cpu, mib(p.rss_kib),
                            notes=f"the daemon uses {cpu_pct:.1f} % of one CPU when idle"
                                  + p.disturbed))
            continue
        lat = sorted(p.latencies)
        ms = (percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, lat[-1] * 1000)
        rows.append(Row(title, f"append {p.rate:,} lines/s for {p.seconds:g} s, bursts every"
                               " 10 ms", "MariaDB", p.lines, p.wall, p.lines / p.seconds,
                        p.cpu, p.db_cpu, mib(p.rss_kib), ms,
                        notes=f"{len(lat):,} rows timed by {p.polls:,} polls of the row count"
                              f" every {POLL_S * 1000:.0f} ms; wall = writing + draining"
                              + p.disturbed))
    rows[-1].notes += f"; SIGTERM: exit {rc}, {stored:,} rows verified"
    return rows


# -- 4. memory ---------------------------------------------------------------------------------


def backlog_rss(env: Env, title: str, path: Path, counts: Counts, limit_s: float) -> Row:
    env.fresh_db()
    logdir = env.tmp / f"backlog-{counts.total}"
    logdir.mkdir(exist_ok=True)
    target = logdir / "lmod.log"
    target.unlink(missing_ok=True)
    os.link(path, target)
    size = target.stat().st_size
    log = env.tmp / f"backlog-{counts.total}.log"
    say(f"memory: daemon on a {fmt_int(counts.total)}-line backlog (at most {limit_s:g} s)")
    mark = env.mark()
    db0 = proc_cpu(env.mariadbd)
    t0 = time.monotonic()
    daemon = env.spawn(["run", "--log-dir", str(logdir)], env.child_env("mysql"), log)
    finished: float | None = None
    hwm: int | None = None
    next_check = t0 + 2
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.5)
        if daemon.poll() is not None:
            raise BenchError(f"backlog daemon exited {daemon.returncode}:\n{tail(log)}")
        hwm = proc_status_kib(daemon.pid, "VmHWM") or hwm
        if time.monotonic() >= next_check:
            next_check += 2
            with contextlib.suppress(Exception):
                if env.checkpoint_offset() >= size:
                    finished = time.monotonic() - t0
                    break
    hwm = proc_status_kib(daemon.pid, "VmHWM") or hwm
    cpu = proc_cpu(daemon.pid)
    wall = time.monotonic() - t0
    done_bytes = size if finished is not None else env.checkpoint_offset()
    rc = env.stop(daemon, "backlog daemon")
    db_cpu = _diff(db0, proc_cpu(env.mariadbd))
    if rc != 0:
        raise BenchError(f"backlog daemon exited {rc} after SIGTERM:\n{tail(log)}")
    stored = env.count()
    if finished is not None and stored != counts.valid:
        raise BenchError(f"backlog: {stored:,} rows, {counts.valid:,} valid lines")
    if finished is not None:
        notes = f"whole backlog committed in {finished:.1f} s ({stored:,} rows verified)"
    else:
        notes = (f"stopped after {limit_s:g} s: {stored:,} of {counts.valid:,} rows committed"
                 f" ({stored / counts.valid * 100:.0f} %)")
    notes += f"; exit {rc} on SIGTERM" + env.disturbed(mark)
    done = counts.total if finished is not None else lines_upto(path, done_bytes)
    return Row(title, f"run on a {fmt_int(counts.total)}-line backlog"
                      f" ({size / 2**20:,.0f} MiB), peak RSS (VmHWM)", "MariaDB",
               done, wall, done / wall, cpu, db_cpu, mib(hwm), notes=notes)


def lines_upto(path: Path, offset: int) -> int:
    """Lines in the first ``offset`` bytes of ``path``."""
    n = 0
    with path.open("rb", buffering=0) as fh:
        while offset > 0 and (data := fh.read(min(READ_BUFFER, offset))):
            n += data.count(b"\n")
            offset -= len(data)
    return n


def outage(env: Env, title: str, reference_kib: float | None) -> list[Row]:
    """The daemon through a database outage; ``reference_kib``: its peak on a plain backlog."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.proxy import FaultProxy

    warm, cut_s, rate = 5.0, (10.0 if env.quick else 30.0), 20_000
    env.fresh_db()
    logdir = env.tmp / "outage"
    logdir.mkdir()
    logfile = logdir / "lmod.log"
    log = env.tmp / "outage-daemon.log"
    proxy = FaultProxy(env.db_host, env.db_port).start()
    try:
        say(f"memory: database unreachable for {cut_s:g} s while {rate:,} lines/s arrive")
        mark = env.mark()
        daemon = env.spawn(["run", "--log-dir", str(logdir)],
                           env.child_env("mysql", port=proxy.port), log)
        env.wait_schema(daemon, log)
        record = env.tmp / "outage-writer.json"
        writer = subprocess.Popen(
            [sys.executable, str(BENCH / "gen.py"), "steady", str(logfile), "--rate", str(rate),
             "--seconds", str(warm + cut_s), "--record", str(record), "--seed", "7"],
            stdout=subprocess.PIPE)
        env.children.append(writer)  # type: ignore[arg-type]
        time.sleep(warm)
        before_rows = env.count()
        if before_rows == 0:
            raise BenchError("outage: nothing committed before the cut")
        hwm_before = proc_status_kib(daemon.pid, "VmHWM")
        proxy.cut()
        t_cut = time.monotonic()
        rss_cut: list[int] = []
        while time.monotonic() - t_cut < cut_s:
            time.sleep(0.5)
            rss_cut.append(proc_status_kib(daemon.pid, "VmRSS") or 0)
            if daemon.poll() is not None:
                raise BenchError(f"daemon exited {daemon.returncode} during the outage:\n"
                                 + tail(log))
        peak_rss = 0
        backlog = logfile.stat().st_size - env.checkpoint_offset()
        proxy.restore()
        t_restore = time.monotonic()
        out, _ = writer.communicate(timeout=120)
        if writer.returncode != 0:
            raise BenchError(f"outage writer exited {writer.returncode}")
        written = json.loads(out)
        expected = written["valid"]
        size = logfile.stat().st_size
        deadline = time.monotonic() + 240
        while True:
            with contextlib.suppress(Exception):
                if env.checkpoint_offset() >= size:
                    break
            if time.monotonic() > deadline:
                raise BenchError("outage: the daemon did not catch up within 240 s of the"
                                 " restore:\n" + tail(log))
            peak_rss = max(peak_rss, proc_status_kib(daemon.pid, "VmRSS") or 0)
            time.sleep(0.2)
        caught_up = time.monotonic() - t_restore
        stored = env.count()
        hwm_after = proc_status_kib(daemon.pid, "VmHWM")
        cpu = proc_cpu(daemon.pid)
        rc = env.stop(daemon, "outage daemon")
    finally:
        proxy.close()
    if stored != expected:
        raise BenchError(f"outage: module_usage has {stored:,} rows, {expected:,} written")
    if rc != 0:
        raise BenchError(f"outage daemon exited {rc} after SIGTERM:\n{tail(log)}")
    assert hwm_before is not None and hwm_after is not None
    grew = hwm_after - hwm_before
    if reference_kib:
        bounded = "yes" if hwm_after <= reference_kib * 1.1 + 5 * 1024 else "NO"
        verdict = (f"bounded: {bounded} ({hwm_after / 1024:,.0f} MiB vs"
                   f" {reference_kib / 1024:,.0f} MiB on the plain backlog above)")
    else:
        verdict = "no plain-backlog reference in this run"
    lines = sum(written.values())
    return [
        Row(title, f"before the cut: following {rate:,} lines/s through a TCP proxy",
            "MariaDB", None, warm, None, None, None, mib(hwm_before),
            notes=f"{before_rows:,} rows committed before the cut"),
        Row(title, f"database unreachable {cut_s:g} s (proxy cut) while {rate:,} lines/s"
                   " keep coming, then restored", "MariaDB", lines, cut_s + caught_up,
            None, cpu, None, mib(hwm_after),
            notes=f"VmRSS during the cut {min(rss_cut) / 1024:,.0f}-{max(rss_cut) / 1024:,.0f}"
                  f" MiB (last {rss_cut[-1] / 1024:,.0f}), during catch-up up to"
                  f" {peak_rss / 1024:,.0f} MiB; peak grew {grew / 1024:+,.0f} MiB over the"
                  f" cut and catch-up; {verdict}; backlog at restore"
                  f" {backlog / 2**20:,.0f} MiB, count exact {caught_up:.1f} s after restore"
                  f" ({stored:,} rows verified); exit {rc} on SIGTERM" + env.disturbed(mark)),
    ]


def section_memory(env: Env) -> list[Row]:
    path, counts = catchup_file(env)
    big_lines = 1_000_000 if env.quick else 10_000_000
    limit_s = 15.0 if env.quick else 60.0
    title = "4. Memory under backlog (daemon)"
    big_path = env.tmp / "big" / "lmod.log"
    big_counts = make_file(big_path, big_lines, seed=2)
    rows = [backlog_rss(env, title, big_path, big_counts, limit_s)]
    if not env.args.keep:
        shutil.rmtree(big_path.parent, ignore_errors=True)
        shutil.rmtree(env.tmp / f"backlog-{big_counts.total}", ignore_errors=True)
    rows.append(backlog_rss(env, title, path, counts, limit_s))
    big, small = rows[0].rss_mib, rows[1].rss_mib
    if big and small:
        rows[0].notes += f"; {big / small:.2f}x the peak RSS on the smaller backlog"
    reference = max((r.rss_mib or 0) for r in rows) * 1024
    rows.extend(outage(env, title, reference or None))
    return rows


# -- 5. cost of each guarantee -----------------------------------------------------------------


def section_cost(env: Env) -> list[Row]:
    path, counts = catchup_file(env)
    title = "5. Cost of each guarantee (insert limit, precomputed ids)"
    if env.rows_file is None:
        say("cost: preparing rows (parse pass)")
        parse_pass(env, path, counts)
    variants = [
        ("no natural key (primary key and the two time indexes only)",
         InsertVariant(unique=False)),
        ("+ unique natural key (no duplicates, ever)", InsertVariant()),
        ("+ checkpoint upsert in each transaction (resume exactly)",
         InsertVariant(checkpoint=True)),
        ("+ look up existing keys before inserting (a re-read of data already stored)",
         InsertVariant(checkpoint=True, lookup=True)),
    ]
    rounds = 1 if env.quick else 2
    runs: dict[str, list[Row]] = {what: [] for what, _ in variants}
    for r in range(rounds):
        for what, variant in variants:
            say(f"cost (round {r + 1} of {rounds}): {what}")
            runs[what].append(insert_limit(env, counts, variant, title, what))
    rows: list[Row] = []
    previous: str | None = None
    for what, variant in variants:
        ranked = sorted(runs[what], key=lambda x: x.rate or 0, reverse=True)
        row = ranked[0]
        notes = []
        if variant.checkpoint or variant.lookup:
            kind = "lookup" if variant.lookup else "checkpoint"
            spent = [x.parts[kind] for x in runs[what]]
            per_line = min(spent) / counts.total * 1e6
            notes.append(f"the {'SELECTs' if variant.lookup else 'upserts'} themselves:"
                         f" {per_line:.2f} µs per line ({min(spent):.2f} s in all)")
        if previous is not None:
            diffs = [(1 / (a.rate or 1) - 1 / (b.rate or 1)) * 1e6
                     for a, b in zip(runs[what], runs[previous], strict=True)]
            change = (row.rate or 0) / (rows[-1].rate or 1) * 100 - 100
            notes.append("vs the row above: " + " / ".join(f"{d:+.2f}" for d in diffs)
                         + f" µs per line (round{'s' if len(diffs) > 1 else ''}),"
                           f" {change:+.0f} % lines/s")
        if len(ranked) > 1:
            others = ", ".join(fmt_int(x.rate or 0) for x in ranked[1:])
            notes.append(f"best of {len(ranked)} rounds (other: {others} lines/s)")
        row.notes = "; ".join([*notes, row.notes])
        rows.append(row)
        previous = what
    return rows


# -- main --------------------------------------------------------------------------------------


def header(env: Env, args: argparse.Namespace) -> str:
    mem_kib = 0
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        version = env.query("SELECT VERSION(), @@innodb_buffer_pool_size,"
                            " @@innodb_flush_log_at_trx_commit")[0]
        mariadb = (f"{version[0]} (innodb_buffer_pool_size {int(version[1]) / 2**20:,.0f} MiB,"
                   f" innodb_flush_log_at_trx_commit={version[2]})")
    except Exception as exc:
        mariadb = f"unreachable ({exc})"

    def git(*a: str) -> str:
        out = subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                             check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "src"):
        commit += " + uncommitted changes in src/"
    import lmod_tracker

    lines = [
        "# lmod-tracker benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs ({model}), {mem_kib / 2**20:.1f} GiB RAM,"
        f" Linux {platform.release()}",
        f"- MariaDB: {mariadb}",
        f"- Python {platform.python_version()}, asyncmy {_version('asyncmy')},"
        f" lmod-tracker {lmod_tracker.__version__} at git {commit}",
        f"- run: {'quick' if args.quick else 'full'}, sections {','.join(args.sections)}",
    ]
    if env.catchup_counts is not None and env.catchup_file is not None:
        c = env.catchup_counts
        lines.append(f"- backlog file: {c.total:,} lines ({c.valid:,} valid, {c.foreign:,}"
                     f" foreign, {c.malformed:,} malformed) drawn from 2000 users, 800 packages"
                     f" and 300 hosts with Zipf popularity")
    w = env.watch
    others = (f"busy in {w.busy} of {w.samples} one-second samples ({', '.join(sorted(w.who))});"
              " rows they may have disturbed say so" if w.busy else
              f"none seen ({w.samples} one-second samples)")
    lines.append(f"- other clients of the MariaDB server during the run: {others}")
    lines += [
        "- lines/s counts every line of the file (valid, foreign and malformed); client CPU is"
        " the lmod-tracker process, or the benchmark's own loader in the limit rows; peak RSS"
        " (VmHWM of the lmod-tracker process)",
        "",
    ]
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="lmod-tracker benchmark suite")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (100k-line backlog, short phases); under ~3 minutes")
    ap.add_argument("--lines", type=int, help="lines in the catch-up file (default 1M, quick"
                    " 100k)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    ap.add_argument("--db-host", default="127.0.0.1")
    ap.add_argument("--db-port", type=int, default=3306)
    ap.add_argument("--db-user", default="root")
    ap.add_argument("--db-pass", default="")
    args = ap.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    if args.lines is None:
        args.lines = 100_000 if args.quick else 1_000_000
    if args.lines < 1000:
        ap.error("--lines must be at least 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = Env(args)
    rows: list[Row] = []
    error: str | None = None
    funcs = {"catchup": section_catchup, "limits": section_limits, "steady": section_steady,
             "memory": section_memory, "cost": section_cost}
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if env.mariadbd is None:
            say("warning: no mariadbd process found; its CPU is not measured")
        env.watch.start()
        for name in SECTIONS:
            if name in args.sections:
                rows.extend(funcs[name](env))
    except BenchError as exc:
        error = str(exc)
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        if env.watch.is_alive():
            env.watch.stop()
        try:
            head = header(env, args)
        finally:
            env.cleanup()
            signal.signal(signal.SIGTERM, previous)
    print(head)
    if error is not None:
        print("**INCOMPLETE: the run failed, see below the table.**\n")
    print(render(rows))
    if error is not None:
        banner = "!" * 78
        print(f"\n{banner}\nBENCHMARK FAILED: {error}\n{banner}", file=sys.stderr)
        print(f"\nBENCHMARK FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

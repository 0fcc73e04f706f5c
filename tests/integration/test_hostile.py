"""Hostile input never stops ingestion: enormous, overlong, binary and SQL-laden lines, file
names that are not UTF-8, ``start_position = end``, and a live stream salted with all of it.
Real processes, real files, both backends; what each line becomes is checked row by row."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, wait_until
from tests.support.databases import DbHandle
from tests.support.hostile import (
    Line,
    LogBuilder,
    check_ingested,
    factory_line,
    healthz,
    hostile_lines,
    run_tracker,
    status_doc,
)
from tests.support.loggen import LineFactory, write_log

COUNT = "SELECT COUNT(*) FROM module_usage"
REJECTED = "SELECT COUNT(*) FROM rejected_line"
CHECKPOINTS = "SELECT byte_offset FROM file_checkpoint"
#: The summary of a run that found nothing new (README: "Run it again and it commits 0").
NOTHING_NEW = re.compile(r"\b0 events committed \(0 duplicates skipped")


def _log_dir(tmp_path: Path) -> Path:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    return log_dir


def _hostile_log(seed: int) -> LogBuilder:
    """Valid, foreign and malformed generator lines with every hostile kind in between."""
    factory = LineFactory(seed=seed)
    log = LogBuilder()
    for i, bad in enumerate(hostile_lines(seq=seed)):
        for j in range(20):
            kind = "foreign" if j == 7 else "malformed" if j == 13 and i % 3 == 0 else "valid"
            log.add(factory_line(factory, kind))
        log.add(bad)
    log.extend(factory_line(factory, "valid") for _ in range(20))
    return log


# ---------------------------------------------------------------------------- B


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_hostile_lines_never_stop_ingestion(db: DbHandle, tmp_path: Path, command: str) -> None:
    log_dir = _log_dir(tmp_path)
    path = log_dir / "lmod.log"
    log = _hostile_log(seed=101)
    path.write_bytes(log.data())
    args = (("run", "--once", "--log-dir", str(log_dir)) if command == "run"
            else ("ingest", str(path)))

    out = run_tracker(db.env, *args, timeout=30)
    assert not out.timed_out and out.returncode == 0, out.explain()
    assert "Traceback" not in out.output, out.explain()
    check_ingested(db, log)

    # Read again: the checkpoint says everything was read; nothing is added or rejected twice.
    before = (db.scalar(COUNT), db.scalar(REJECTED))
    again = run_tracker(db.env, *args, timeout=30)
    assert not again.timed_out and again.returncode == 0, again.explain()
    assert (db.scalar(COUNT), db.scalar(REJECTED)) == before
    check_ingested(db, log)


# ---------------------------------------------------------------------------- C


ODD_NAME = os.fsdecode(b"lmod.log-\xff")


def test_log_file_name_not_utf8(db: DbHandle, tmp_path: Path) -> None:
    log_dir = _log_dir(tmp_path)
    normal, odd = log_dir / "lmod.log", log_dir / ODD_NAME
    assert os.fsencode(odd).endswith(b"lmod.log-\xff")
    expected = write_log(normal, 3000, seed=111)
    expected += write_log(odd, 2000, factory=LineFactory(seed=112, start_epoch=1_710_000_000))
    assert {os.fsencode(p) for p in os.listdir(os.fsencode(log_dir))} == {
        b"lmod.log", b"lmod.log-\xff"}

    out = run_tracker(db.env, "run", "--once", "--log-dir", str(log_dir), timeout=30)
    assert not out.timed_out and out.returncode == 0, out.explain()
    assert "Traceback" not in out.output, out.explain()
    assert db.scalar(COUNT) == expected.valid
    assert db.scalar(REJECTED) == expected.malformed
    # Both files' checkpoints were stored, each at the file's end.
    assert sorted(r[0] for r in db.rows(CHECKPOINTS)) == sorted(
        [normal.stat().st_size, odd.stat().st_size])

    again = run_tracker(db.env, "run", "--once", "--log-dir", str(log_dir), timeout=30)
    assert not again.timed_out and again.returncode == 0, again.explain()
    assert NOTHING_NEW.search(again.stdout), again.explain()
    assert db.scalar(COUNT) == expected.valid


def test_ingest_file_name_not_utf8(db: DbHandle, tmp_path: Path) -> None:
    log_dir = _log_dir(tmp_path)
    odd = log_dir / ODD_NAME
    expected = write_log(odd, 2000, seed=113)

    out = run_tracker(db.env, "ingest", os.fsencode(odd), timeout=60)
    assert not out.timed_out and out.returncode == 0, out.explain()
    assert "Traceback" not in out.output, out.explain()
    assert db.scalar(COUNT) == expected.valid
    assert db.scalar(REJECTED) == expected.malformed
    assert [r[0] for r in db.rows(CHECKPOINTS)] == [odd.stat().st_size]

    again = run_tracker(db.env, "ingest", os.fsencode(odd), timeout=60)
    assert not again.timed_out and again.returncode == 0, again.explain()
    assert "Traceback" not in again.output, again.explain()
    assert db.scalar(COUNT) == expected.valid
    assert db.scalar(REJECTED) == expected.malformed


# ---------------------------------------------------------------------------- D


def test_start_position_end_with_run_once(db: DbHandle, tmp_path: Path) -> None:
    log_dir = _log_dir(tmp_path)
    log = log_dir / "lmod.log"
    factory = LineFactory(seed=121)
    write_log(log, 1000, factory=factory)
    env = {**db.env, "LMOD_TRACKER_START_POSITION": "end"}

    first = run_tracker(env, "run", "--once", "--log-dir", str(log_dir), timeout=60)
    assert not first.timed_out and first.returncode == 0, first.explain()
    assert db.scalar(COUNT) == 0, "start_position=end committed the existing lines"

    appended = write_log(log, 500, factory=factory, append=True)
    second = run_tracker(env, "run", "--once", "--log-dir", str(log_dir), timeout=60)
    assert not second.timed_out and second.returncode == 0, second.explain()
    assert db.scalar(COUNT) == appended.valid, "lines appended after the first run were lost"
    assert db.scalar(REJECTED) == appended.malformed


def test_start_position_end_with_daemon_restart(db: DbHandle, tmp_path: Path) -> None:
    log_dir = _log_dir(tmp_path)
    log = log_dir / "lmod.log"
    factory = LineFactory(seed=122)
    write_log(log, 1000, factory=factory)
    env = {**db.env, "LMOD_TRACKER_START_POSITION": "end"}

    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: healthz(daemon.env) == 200, 20, "the daemon to be ready",
                   on_timeout=daemon.log_text)
        assert daemon.stop() == 0
    assert db.scalar(COUNT) == 0, "start_position=end committed the existing lines"

    appended = write_log(log, 500, factory=factory, append=True)
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        db.wait_scalar(COUNT, expected=appended.valid, timeout=20)
        db.wait_scalar(REJECTED, expected=appended.malformed, timeout=10)
        time.sleep(1.0)
        assert db.scalar(COUNT) == appended.valid
        assert daemon.stop() == 0


# ---------------------------------------------------------------------------- I


class SaltedStream(threading.Thread):
    """Appends ~``rate`` lines/s in bursts like rsyslog (one O_APPEND descriptor); one line in
    ``every`` is hostile, cycling through every kind (and the generator's malformed lines)."""

    def __init__(self, path: Path, *, seed: int, rate: float = 1000.0, burst: int = 50,
                 every: int = 1000) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.factory = LineFactory(seed=seed)
        self.log = LogBuilder()
        self.rate = rate
        self.burst = burst
        self.every = every
        self.kinds = [*hostile_lines(seq=seed), factory_line(LineFactory(seed=seed + 1),
                                                             "malformed")]
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._n = 0

    def _next(self) -> Line:
        self._n += 1
        if self._n % self.every == self.every // 2:
            k = self._n // self.every
            bad = self.kinds[k % len(self.kinds)]
            if bad.kind in ("valid", "either"):
                # the same kind again needs a new natural key: a fresh time
                bad = next(b for b in hostile_lines(seq=self._n) if b.label == bad.label)
            return bad
        return factory_line(self.factory, "foreign" if self._n % 97 == 0 else "valid")

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            next_at = time.monotonic()
            while not self.stop_event.is_set():
                os.write(fd, self.log.extend(self._next() for _ in range(self.burst)))
                next_at += self.burst / self.rate
                time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            os.close(fd)

    def finish(self) -> LogBuilder:
        self.stop_event.set()
        self.join(10)
        assert self.error is None, self.error
        return self.log


STREAM_S = 15.0


def test_live_stream_with_hostile_lines(db: DbHandle, tmp_path: Path) -> None:
    log_dir = _log_dir(tmp_path)
    path = log_dir / "lmod.log"
    path.write_bytes(b"")
    stream = SaltedStream(path, seed=131)
    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: healthz(daemon.env) == 200, 20, "the daemon to be ready",
                   on_timeout=daemon.log_text)
        stream.start()
        time.sleep(STREAM_S)
        log = stream.finish()
        hostile = [line.label for _, line in log.lines
                   if line.label not in ("valid", "foreign")]
        assert len(log.lines) >= 10_000 and len(hostile) >= 10, (len(log.lines), hostile)

        # 'either' lines may be stored or rejected: wait for rows + rejects to add up.
        total = sum(log.rows().values()) + len(log.reject_offsets()) + len(log.of_kind("either"))

        def landed() -> int:
            return int(db.scalar(COUNT)) + int(db.scalar(REJECTED))

        wait_until(lambda: landed() >= total, 30, f"{total} rows and rejects",
                   on_timeout=lambda: f"{landed()} landed\n{daemon.log_text()[-3000:]}")
        time.sleep(1.0)
        problems = []
        try:
            check_ingested(db, log)
        except AssertionError as exc:
            problems.append(str(exc))
        doc = status_doc(daemon.env)
        assert doc is not None, daemon.log_text()[-3000:]
        p99 = doc["latency_s"]["p99"]
        if p99 is None or p99 >= 1.0:
            problems.append(f"read-to-commit p99 {p99} s: {doc['latency_s']}")
        if doc["totals"]["rejected"] != db.scalar(REJECTED):
            problems.append(f"status says {doc['totals']['rejected']} rejected,"
                            f" rejected_line has {db.scalar(REJECTED)}")
        assert not problems, "\n".join(problems)
        assert daemon.stop() == 0

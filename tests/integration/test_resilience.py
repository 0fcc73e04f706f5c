"""Exactly once under rotation, SIGKILL and database outages, with real files and processes."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lmod_tracker.statusclient import get
from tests.support.daemon import Daemon, cli, wait_until
from tests.support.databases import DbHandle
from tests.support.loggen import Counts, LineFactory, write_log
from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.slow

COUNT = "SELECT COUNT(*) FROM module_usage"
REJECTED = "SELECT COUNT(*) FROM rejected_line"


class LogWriter(threading.Thread):
    """Appends mixed lines to ``path`` like rsyslog: an O_APPEND descriptor it reopens on HUP."""

    def __init__(self, path: Path, seed: int, rate: float = 2000.0, burst: int = 40) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.factory = LineFactory(seed=seed)
        self.counts = Counts()
        self.rate = rate
        self.burst = burst
        self.lock = threading.Lock()  # held by the test while logrotate's copy runs
        self.stop_event = threading.Event()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def reopen(self) -> None:
        with self.lock:
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def run(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                lines = list(self.factory.iter_mixed(self.burst, 50, 120, self.counts))
                os.write(self.fd, b"".join(lines))
            time.sleep(self.burst / self.rate)

    def finish(self) -> Counts:
        self.stop_event.set()
        self.join(10)
        os.close(self.fd)
        return self.counts


def _finish_exactly_once(writer: LogWriter, db: DbHandle, daemon: Daemon) -> None:
    """Stop writing; every line written must be stored once, and nothing more arrive late."""
    time.sleep(0.5)
    expected = writer.finish()
    db.wait_scalar(COUNT, expected=expected.valid, timeout=60)
    db.wait_scalar(REJECTED, expected=expected.malformed, timeout=30)
    time.sleep(1.5)
    assert db.scalar(COUNT) == expected.valid
    assert db.scalar(REJECTED) == expected.malformed
    assert daemon.stop() == 0


def test_rename_rotation_while_writing(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    writer = LogWriter(log, seed=11)
    env = {**db.env, "LMOD_TRACKER_ROTATE_WAIT": "1"}
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        # A file renamed out of the followed names before the daemon ever looked cannot be
        # seen (README, "One limit"): rotate only once it is following.
        wait_until(lambda: "event=ready" in daemon.log_text(), 30, "the daemon to be ready",
                   on_timeout=daemon.log_text)
        writer.start()
        for k in range(6):
            time.sleep(random.uniform(0.3, 0.8))
            # logrotate `create`: rename, then the writer is told to reopen a little later.
            # Odd rotations move the file out of the followed names (read through the open
            # descriptor), some are then compressed and deleted (delaycompress).
            target = log_dir / (f"lmod.log-{k}" if k % 2 == 0 else f"archived-{k}")
            os.rename(log, target)
            time.sleep(0.2)
            writer.reopen()
            if k >= 2 and k % 2 == 0:
                previous = log_dir / f"lmod.log-{k - 2}"
                time.sleep(0.5)
                os.unlink(previous)  # deleted while possibly still being read: fd keeps it
        _finish_exactly_once(writer, db, daemon)
    assert "file fully read, closing" in (tmp_path / "daemon.log").read_text()


def test_copytruncate_rotation_while_writing(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    writer = LogWriter(log, seed=12)
    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        # A file renamed out of the followed names before the daemon ever looked cannot be
        # seen (README, "One limit"): rotate only once it is following.
        wait_until(lambda: "event=ready" in daemon.log_text(), 30, "the daemon to be ready",
                   on_timeout=daemon.log_text)
        writer.start()
        for k in range(6):
            time.sleep(random.uniform(0.3, 0.8))
            with writer.lock:  # logrotate's own window: lines written during it are lost
                shutil.copyfile(log, log_dir / f"lmod.log-{k}")
                os.truncate(log, 0)
        _finish_exactly_once(writer, db, daemon)
    assert "change=truncated" in (tmp_path / "daemon.log").read_text()


def test_sigkill_at_random_moments(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    seed = int(time.time())
    rng = random.Random(seed)
    expected = write_log(log, 150_000, seed=21)
    factory = LineFactory(seed=22, start_epoch=1_800_000_000)
    env = {**db.env, "LMOD_TRACKER_BATCH_SIZE": "2000"}
    kills = 0
    for _ in range(22):
        daemon = Daemon(env, log_dir, tmp_path / "daemon.log").start()
        time.sleep(rng.uniform(0.2, 1.5))
        expected += write_log(log, rng.randrange(0, 3000), append=True, factory=factory)
        assert daemon.alive(), daemon.log_text()[-3000:]
        daemon.kill()
        kills += 1
    assert kills >= 20
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        db.wait_scalar(COUNT, expected=expected.valid, timeout=120)
        db.wait_scalar(REJECTED, expected=expected.malformed, timeout=30)
        assert daemon.stop() == 0
    assert db.scalar(COUNT) == expected.valid, f"seed {seed}"


def _hold_sqlite_lock(path: Path, seconds: float, started: threading.Event) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    started.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


OUTAGE_S = 30.0


def test_database_outage(db: DbHandle, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    expected = write_log(log, 50_000, seed=31)
    factory = LineFactory(seed=32, start_epoch=1_800_000_000)
    env = {**db.env, "LMOD_TRACKER_DB_TIMEOUT": "5", "LMOD_TRACKER_RETRY_MAX": "4"}
    proxy = None
    if db.kind == "mysql":
        server = request.getfixturevalue("mysql_server")
        proxy = FaultProxy(server["host"], server["port"]).start()
        env.update(DB_HOST="127.0.0.1", DB_PORT=str(proxy.port))
    try:
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            db.wait_scalar(COUNT, expected=expected.valid, timeout=60)
            baseline = daemon.rss_kib()
            # The outage: the proxy cuts every connection, or another process locks SQLite.
            holder = None
            if proxy is not None:
                proxy.cut()
            else:
                started = threading.Event()
                holder = threading.Thread(target=_hold_sqlite_lock,
                                          args=(db.sqlite_path, OUTAGE_S, started))
                holder.start()
                assert started.wait(10)
            t0 = time.monotonic()
            peak = baseline
            degraded_seen = False

            def check_degraded() -> bool:
                """An outage handled by retries is "degraded": status exits 1, healthz 503.
                Asked while the outage surely lasts, not while it may be ending, and again
                until it shows: the first failure takes the busy timeout (or db_timeout) of
                the call it fails, and another call (a month build at start) may be ahead."""
                elapsed = time.monotonic() - t0
                if degraded_seen or not 3 < elapsed < OUTAGE_S - 5:
                    return degraded_seen
                proc = cli(daemon.env, "status", check=False)
                if proc.returncode == 0:
                    return False
                assert proc.returncode == 1, proc.stdout + proc.stderr
                assert "degraded" in proc.stdout
                assert get(Path(daemon.env["LMOD_TRACKER_STATUS_SOCKET"]), "/healthz")[0] \
                    == 503
                return True

            # ~90 MB of backlog written during the outage
            for _ in range(10):
                expected += write_log(log, 50_000, append=True, factory=factory)
                peak = max(peak, daemon.rss_kib())
                degraded_seen = check_degraded()
            while time.monotonic() - t0 < OUTAGE_S:
                time.sleep(0.5)
                assert daemon.alive(), daemon.log_text()[-3000:]
                peak = max(peak, daemon.rss_kib())
                degraded_seen = check_degraded()
            if proxy is not None:
                proxy.restore()
            else:
                assert holder is not None
                holder.join(OUTAGE_S)
            db.wait_scalar(COUNT, expected=expected.valid, timeout=240)
            db.wait_scalar(REJECTED, expected=expected.malformed, timeout=30)
            assert daemon.stop() == 0
        text = (tmp_path / "daemon.log").read_text()
        assert "commit failed, will retry" in text or "cannot read checkpoint" in text
        assert "database reachable again" in text
        assert degraded_seen
        assert log.stat().st_size > 80 << 20
        # Memory is bounded by the queue, not by the 80+ MB backlog.
        assert peak - baseline < 60 << 10, (baseline, peak)
        assert peak < 200 << 10, (baseline, peak)
        print(f"\nRSS baseline {baseline >> 10} MiB, peak during outage {peak >> 10} MiB")
    finally:
        if proxy is not None:
            proxy.close()

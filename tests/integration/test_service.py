"""The daemon as systemd runs it: sd_notify on a real datagram socket, the status endpoint
answered by real HTTP clients, SIGHUP, journald priorities, and the unit file itself."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmod_tracker import service
from lmod_tracker.config import load_settings
from lmod_tracker.statusclient import get
from lmod_tracker.store.sqlite import SQLiteStore
from tests.support.daemon import Daemon, cli, wait_until
from tests.support.databases import DbHandle
from tests.support.loggen import LineFactory, write_log

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "lmod-tracker.service"


class NotifySocket:
    """A real NOTIFY_SOCKET: collects every datagram with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _socket_path(tmp_path: Path, name: str) -> Path:
    # sun_path is limited to 108 bytes; pytest's tmp paths can be longer.
    short = Path(f"/tmp/lt-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}")
    short.mkdir(exist_ok=True)
    return short / name


def test_sd_notify_sequence(sqlite_db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    write_log(log_dir / "lmod.log", 5000, seed=41)
    notify = NotifySocket(_socket_path(tmp_path, "notify"))
    env = {**sqlite_db.env, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000",
           "LMOD_TRACKER_STATUS_SOCKET": str(_socket_path(tmp_path, "status.sock"))}
    try:
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            wait_until(lambda: len(notify.with_key("WATCHDOG")) >= 4, 20, "watchdog pings",
                       on_timeout=daemon.log_text)
            assert daemon.stop() == 0
        time.sleep(0.3)
        kinds = [next(k for k in ("READY", "WATCHDOG", "STOPPING", "STATUS") if k in m)
                 for _, m in notify.messages]
        first_ready = kinds.index("READY")
        assert "WATCHDOG" not in kinds[:first_ready]  # no pings before READY
        assert kinds.count("READY") == 1
        assert kinds[-1] == "STOPPING"
        assert "STOPPING" not in kinds[:-1]
        ready = notify.with_key("READY")[0][1]
        assert ready["MAINPID"] == str(daemon.pid)
        assert "files" in ready["STATUS"]
        pings = [t for t, _ in notify.with_key("WATCHDOG")]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0  # every WatchdogSec/2 at most
    finally:
        notify.close()


async def test_no_watchdog_while_the_writer_is_stuck(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A database call hung past its timeout stops the pings (systemd then restarts us);
    once it returns, pings resume."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    factory = LineFactory(seed=42)
    write_log(log, 100, factory=factory)
    notify = NotifySocket(_socket_path(tmp_path, "notify2"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    settings = load_settings(log_dir=log_dir, sqlite_path=tmp_path / "t.db", db_timeout=1.0,
                             status_socket="", poll_interval=0.2)
    stores: list[SQLiteStore] = []

    def make_store(s: object) -> SQLiteStore:
        store = SQLiteStore(tmp_path / "t.db", busy_timeout=1.0)
        stores.append(store)
        return store

    monkeypatch.setattr(service, "make_store", make_store)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run_daemon(settings, stop=stop))
    try:
        await asyncio.to_thread(wait_until, lambda: len(notify.with_key("WATCHDOG")) >= 2, 20,
                                "first pings")
        # The store's only worker thread hangs, as in a dead NFS mount; then a line arrives.
        release = threading.Event()
        stores[0]._executor.submit(release.wait, 60)
        write_log(log, 10, factory=factory, append=True)
        await asyncio.sleep(8.5)  # db_timeout 1 s + 5 s grace, then a few ping periods
        hung_since = time.monotonic() - 2.0
        assert not [t for t, _ in notify.with_key("WATCHDOG") if t > hung_since]
        release.set()
        await asyncio.to_thread(
            wait_until, lambda: any(t > hung_since + 2 for t, _ in notify.with_key("WATCHDOG")),
            10, "pings after the call returned")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        notify.close()


def _status_env(db: DbHandle, tmp_path: Path) -> tuple[dict[str, str], Path]:
    sock = _socket_path(tmp_path, "status.sock")
    return {**db.env, "LMOD_TRACKER_STATUS_SOCKET": str(sock)}, sock


def _raw(sock: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_status_endpoint(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    expected = write_log(log_dir / "lmod.log", 20_000, seed=43)
    env, sock = _status_env(db, tmp_path)
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid, timeout=60)
        wait_until(lambda: sock.exists(), 10, "the status socket")
        assert oct(sock.stat().st_mode & 0o777) == oct(0o660)

        def status_ok() -> bool:
            code, body = get(sock, "/status")
            return code == 200 and json.loads(body)["totals"]["events"] == expected.valid
        wait_until(status_ok, 10, "status to show the commit")
        doc = json.loads(get(sock, "/status")[1])
        assert doc["state"] == "running" and doc["version"]
        assert doc["database"]["backend"] == db.kind and doc["database"]["reachable"]
        assert doc["database"]["last_commit"] and doc["database"]["last_error"] is None
        assert doc["totals"] == {**doc["totals"], "events": expected.valid,
                                 "foreign": expected.foreign, "rejected": expected.malformed}
        assert {"batches", "retries", "duplicates"} <= doc["totals"].keys()
        assert doc["queue"]["bound"] == 16 and doc["queue"]["depth"] >= 0
        assert set(doc["events_per_s"]) == {"1m", "5m"}
        assert doc["latency_s"]["p50"] is not None and doc["latency_s"]["p99"] is not None
        (f,) = doc["files"]
        size = (log_dir / "lmod.log").stat().st_size
        assert f["path"] == str(log_dir / "lmod.log")
        assert f["offset"] == size and f["size"] == size and f["lag_bytes"] == 0
        assert f["identity"]["ino"] == (log_dir / "lmod.log").stat().st_ino
        assert f["last_event_time"].startswith("20")
        assert uptime(doc) > 0

        if shutil.which("curl"):
            out = subprocess.run(["curl", "-sf", "--unix-socket", str(sock),
                                  "http://localhost/status"], capture_output=True, check=True)
            assert json.loads(out.stdout)["totals"]["events"] == expected.valid

        _code, body = get(sock, "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["lmod_tracker_events"].samples[0].value == expected.valid
        assert families["lmod_tracker_rejected"].samples[0].value == expected.malformed
        assert families["lmod_tracker_up"].samples[0].value == 1
        assert "lmod_tracker_file_lag_bytes" in families

        assert get(sock, "/healthz") == (200, b"running\n")
        assert get(sock, "/nope")[0] == 404
        conn_reply = _raw(sock, b"POST /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn_reply.startswith(b"HTTP/1.1 405") and b"Allow: GET" in conn_reply
        assert _raw(sock, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _raw(sock, b"GET /status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
                    ).startswith(b"HTTP/1.1 400")
        assert _raw(sock, b"GET /status HTTP/1.1\r\n").startswith(b"HTTP/1.1 400")

        proc = cli(env, "status")
        assert "running" in proc.stdout and str(log_dir / "lmod.log") in proc.stdout
        assert json.loads(cli(env, "status", "--json").stdout)["state"] == "running"
        assert daemon.stop() == 0
    assert cli(env, "status", check=False).returncode == 2  # unreachable once stopped


def uptime(doc: dict[str, object]) -> float:
    value = doc["uptime_s"]
    assert isinstance(value, float | int)
    return float(value)


def test_concurrent_status_clients_while_ingesting(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    env, sock = _status_env(db, tmp_path)
    factory = LineFactory(seed=44)
    expected = write_log(log, 20_000, factory=factory)
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: sock.exists(), 20, "the status socket", on_timeout=daemon.log_text)
        # The socket answers from startup on; /healthz says 200 once the daemon is ready.
        wait_until(lambda: get(sock, "/healthz")[0] == 200, 20, "ready",
                   on_timeout=daemon.log_text)
        stop = threading.Event()

        def append() -> None:
            nonlocal expected
            while not stop.is_set():
                expected += write_log(log, 2000, factory=factory, append=True)
                time.sleep(0.05)

        appender = threading.Thread(target=append)
        appender.start()

        def hit(i: int) -> int:
            target = ("/status", "/metrics", "/healthz")[i % 3]
            return get(sock, target, timeout=30)[0]

        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(hit, range(200)))
        stop.set()
        appender.join()
        assert codes.count(200) == 200
        db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid, timeout=120)
        db.wait_scalar("SELECT COUNT(*) FROM rejected_line", expected=expected.malformed)
        assert daemon.stop() == 0


def test_sighup_reloads_what_it_can(sqlite_db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    cfg = tmp_path / "lmod-tracker.toml"
    cfg.write_text('batch_size = 100\ninstance = "one"\n')
    env = {**sqlite_db.env, "LMOD_TRACKER_CONFIG": str(cfg),
           "LMOD_TRACKER_STATUS_SOCKET": str(_socket_path(tmp_path, "hup.sock"))}
    with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: "event=ready" in daemon.log_text(), 20, "ready")
        cfg.write_text('batch_size = 200\ninstance = "two"\nlog_level = "debug"\n')
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in daemon.log_text(), 10, "the reload")
        line = next(ln for ln in daemon.log_text().splitlines() if "configuration reloaded" in ln)
        assert "batch_size" in line and "log_level" in line
        assert re.search(r"needs_restart=.*instance", line)
        cfg.write_text("batch_size = -5\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in daemon.log_text(), 10, "the failed reload")
        assert daemon.alive()
        assert daemon.stop() == 0


def test_journald_priorities_and_no_timestamps(sqlite_db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    write_log(log_dir / "lmod.log", 500, seed=45, malformed_every=100)
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, **sqlite_db.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        for k in ("DB_NAME", "DB_USER"):
            env.pop(k, None)
        subprocess.run([sys.executable, "-m", "lmod_tracker", "run", "--once", "--log-dir",
                        str(log_dir)], env=env, stderr=err, stdout=subprocess.DEVNULL,
                       check=True, timeout=60)
    lines = err_path.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>", ln) for ln in lines)
    assert any(ln.startswith("<4>") and "rejected line" in ln for ln in lines)
    assert any(ln.startswith("<6>") and "event=starting" in ln for ln in lines)
    assert not any("timestamp=" in ln for ln in lines)


def test_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze missing (apt-get install systemd)")
        pytest.skip("systemd-analyze missing (apt-get install systemd)")
    unit = tmp_path / "lmod-tracker.service"
    exe = Path(sys.executable).parent / "lmod-tracker"
    unit.write_text(UNIT.read_text().replace("/opt/lmod-tracker/bin/lmod-tracker", str(exe)))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert m, security.stdout + security.stderr
    assert float(m.group(1)) <= 2.0, security.stdout

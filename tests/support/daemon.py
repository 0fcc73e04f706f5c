"""Running the real ``lmod-tracker`` command as a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

#: Variables of the developer's shell that would leak into the process under test.
_SCRUB = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASS", "DB_NAME", "DB_SOCKET")


def child_env(env: Mapping[str, str], **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in _SCRUB and not k.startswith("LMOD_TRACKER_")}
    base.update(env)
    base.update(extra)
    base.setdefault("LMOD_TRACKER_POLL_INTERVAL", "0.5")
    # Never the shared default socket: test daemons (and test runs) may overlap.
    base.setdefault("LMOD_TRACKER_STATUS_SOCKET", f"/tmp/lt-{uuid.uuid4().hex[:12]}.sock")
    base.setdefault("LMOD_TRACKER_LOG_FORMAT", "logfmt")
    return base


def cli(env: Mapping[str, str], *args: str, timeout: float = 300, check: bool = True,
        cpus: set[int] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lmod-tracker ARGS`` to completion (``cpus``: only on these CPUs, by taskset)."""
    pin = [] if cpus is None else ["taskset", "-c", ",".join(map(str, sorted(cpus)))]
    proc = subprocess.run([*pin, sys.executable, "-m", "lmod_tracker", *args],
                          env=child_env(env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"lmod-tracker {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


class Daemon:
    """``lmod-tracker run`` in the background; its log goes to a file for post-mortems."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, stderr_path: Path,
                 *args: str) -> None:
        self.env = child_env(env)
        self.log_dir = log_dir
        self.stderr_path = stderr_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmod_tracker", "run", "--log-dir", str(self.log_dir),
                 *self.args], env=self.env, stdout=err, stderr=err)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def rss_kib(self) -> int:
        """Resident memory of the daemon now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.2, on_timeout: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (and extra context) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    extra = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{extra}")

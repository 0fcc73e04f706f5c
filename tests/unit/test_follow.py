"""Reading one file: complete lines only, bounded lines, truncation, replacement."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lmod_tracker.files import Change, read_fingerprint
from lmod_tracker.follow import Follower, LineCutter
from lmod_tracker.parse import Parser

LINE = b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time=%d.5\n"


def test_cutter_keeps_partial_line() -> None:
    c = LineCutter(100)
    assert c.cut(b"a\nb\npart", 10) == (b"a\nb\n", 10, 4, None)
    assert c.cut(b"part", 14) == (b"", 14, 0, None)
    assert c.cut(b"part", 14, final=True) == (b"part", 14, 4, None)


def test_cutter_skips_overlong_line_whatever_its_length() -> None:
    c = LineCutter(10)
    lines, _, consumed, reject = c.cut(b"x" * 50, 0)
    assert (lines, consumed) == (b"", 50)
    assert reject is not None and reject.offset == 0 and "longer than 10" in reject.reason
    assert c.cut(b"y" * 50, 50) == (b"", 50, 50, None)  # still inside the long line
    assert c.cut(b"zz\nok\n", 100) == (b"ok\n", 103, 6, None)
    assert not c.skipping


def _follower(path: Path, block: int = 4096) -> Follower:
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    return Follower(str(path), fd, st.st_dev, st.st_ino, None, 0, Parser(), block)


def test_follower_reads_complete_lines_and_detects_truncation(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1 + LINE % 2 + b"Apr 27 partial")
    f = _follower(log)
    try:
        assert f.check() is Change.NONE and f.key is not None
        chunk = f.read_chunk()
        assert chunk is not None and len(chunk.events) == 2
        assert chunk.end_offset == 2 * len(LINE % 1)
        assert f.read_chunk() is None  # the partial line waits
        with log.open("ab") as fh:
            fh.write(b" line\n")
        chunk = f.read_chunk()
        assert chunk is not None and chunk.foreign == 1
        old_key = f.key
        log.write_bytes(LINE % 9)  # copytruncate: smaller than what was read
        assert f.check() is Change.TRUNCATED
        assert f.offset == 0 and f.key != old_key
        chunk = f.read_chunk()
        assert chunk is not None and [e.load_time[-8:] for e in chunk.events] == ["9.500000"]
    finally:
        f.close()


def test_follower_detects_refilled_content(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1)
    f = _follower(log)
    try:
        f.check()
        assert f.read_chunk() is not None
        with log.open("r+b") as fh:  # truncated and refilled past the old offset
            fh.truncate(0)
            fh.write((LINE % 7) * 3)
        assert f.check() is Change.REPLACED
        chunk = f.read_chunk()
        assert chunk is not None and len(chunk.events) == 3
        assert f.key is not None and f.key.fingerprint == read_fingerprint(f.fd)
    finally:
        f.close()


def test_unreadable_file_is_reported_once_and_others_are_read() -> None:
    """A file the daemon may not read is logged (not at every poll) and does not stop the
    others; a log directory it cannot read is a configuration error. Run as an unprivileged
    user (root reads everything)."""
    base = Path(tempfile.mkdtemp(prefix="lt-perm-"))
    try:
        base.chmod(0o777)
        log_dir = base / "log"
        log_dir.mkdir(mode=0o755)
        (log_dir / "lmod.log").write_bytes(LINE % 1)
        (log_dir / "lmod.log").chmod(0o644)
        blocked = log_dir / "lmod.log-1"
        blocked.write_bytes(LINE % 2)
        blocked.chmod(0)
        env = {"PATH": os.environ["PATH"], "HOME": str(base), "LMOD_TRACKER_STATUS_SOCKET": "",
               "LMOD_TRACKER_SQLITE_PATH": str(base / "t.db"), "LMOD_TRACKER_POLL_INTERVAL": "0.1"}
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if os.geteuid() != 0:
            prefix = []
        cmd = [*prefix, sys.executable, "-m", "lmod_tracker", "run", "--once", "--log-dir"]
        proc = subprocess.run([*cmd, str(log_dir)], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "1 events committed" in proc.stdout
        assert proc.stderr.count("cannot open log file") == 1
        log_dir.chmod(0o700)
        proc = subprocess.run(cmd[:-1], env={**env, "LMOD_TRACKER_LOG_DIR": str(log_dir)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip().endswith(
            "cannot be read: Permission denied (set LMOD_TRACKER_LOG_DIR or --log-dir)")
        assert proc.stderr.count("\n") == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


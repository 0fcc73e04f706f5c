"""At start, the daemon names compressed copies that may hold lines it never read."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from tests.support.daemon import cli
from tests.support.databases import DbHandle

LINE = "Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time={}\n"


def test_compressed_copies_changed_after_the_last_commit_are_named(
        db: DbHandle, tmp_path: Path) -> None:
    """Two rotations while the daemon is stopped: the second compressed a file it had not
    read to the end (compression is excluded from following). The next start names it, and
    only it: not older copies, not an empty one; ingest then adds exactly what is missing."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    log.write_text(LINE.format("1.1"))
    old = log_dir / "lmod.log-20261120.gz"
    with gzip.open(old, "wt") as fh:
        fh.write(LINE.format("0.5"))
    before = time.time() - 3600
    os.utime(old, (before, before))  # gzip keeps the rotated file's time: long before
    cli(db.env, "run", "--once", "--log-dir", str(log_dir))
    assert "changed after this daemon's last commit" not in cli(
        db.env, "run", "--once", "--log-dir", str(log_dir)).stderr

    time.sleep(0.05)
    # while stopped: lmod.log got a line, was rotated, and compressed by the next rotation
    with log.open("a") as fh:
        fh.write(LINE.format("2.2"))
    rotated = log_dir / "lmod.log-20261122.gz"
    with log.open("rb") as src, gzip.open(rotated, "wb") as dst:
        dst.write(src.read())
    log.unlink()
    empty = log_dir / "lmod.log-20261123.gz"
    with gzip.open(empty, "wb"):
        pass
    log.write_text("")

    err = cli(db.env, "run", "--once", "--log-dir", str(log_dir)).stderr
    [warning] = [ln for ln in err.splitlines() if "changed after this daemon's last commit" in ln]
    assert str(rotated) in warning and "count=1" in warning
    assert str(old) not in warning and str(empty) not in warning
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 1

    out = cli(db.env, "ingest", str(rotated)).stdout
    assert "1 events" in out
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 2

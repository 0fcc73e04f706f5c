"""The daemon and ``ingest`` on a large generated log, against real SQLite and MariaDB."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, cli, wait_until
from tests.support.databases import DbHandle
from tests.support.loggen import write_log

pytestmark = pytest.mark.slow

N_LINES = 210_000


def counts(db: DbHandle) -> tuple[int, int]:
    return (db.scalar("SELECT COUNT(*) FROM module_usage"),
            db.scalar("SELECT COUNT(*) FROM rejected_line"))


def next_id(db: DbHandle) -> int:
    """The id the next inserted row would get."""
    if db.kind == "sqlite":
        return int(db.scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM module_usage"))
    return int(db.scalar("SELECT AUTO_INCREMENT FROM information_schema.tables"
                         " WHERE table_schema = DATABASE() AND table_name = 'module_usage'"))


def test_run_then_restart_and_ingest_add_nothing(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    expected = write_log(log, N_LINES, seed=1, foreign_every=50, malformed_every=200)
    assert expected.foreign > 1000 and expected.malformed > 500

    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid, timeout=120)
        db.wait_scalar("SELECT COUNT(*) FROM rejected_line", expected=expected.malformed,
                       timeout=30)
        assert daemon.stop() == 0
    log_text = (tmp_path / "daemon.log").read_text()
    assert f"foreign={expected.foreign}" in log_text
    first_free_id = next_id(db)

    # A restart resumes from the checkpoint: nothing is read twice.
    with Daemon(db.env, log_dir, tmp_path / "daemon2.log") as daemon:
        wait_until(lambda: "following file" in daemon.log_text(), 30, "the restart's scan")
        assert daemon.stop() == 0
    assert "start=checkpoint" in (tmp_path / "daemon2.log").read_text()
    assert "events=0 " in (tmp_path / "daemon2.log").read_text()
    assert counts(db) == (expected.valid, expected.malformed)

    # `ingest` of the same file, of a gzipped copy, and from the start: 0 rows.
    out = cli(db.env, "ingest", str(log)).stdout
    assert f"resumed at byte {log.stat().st_size}" in out
    packed = tmp_path / "lmod.log-20261121.gz"
    with log.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    out = cli(db.env, "ingest", str(packed)).stdout
    assert "0 events" in out
    out = cli(db.env, "ingest", "--from-start", str(packed)).stdout
    assert f"0 events, {expected.valid} duplicates skipped, {expected.foreign} foreign," \
           f" {expected.malformed} rejected" in out
    assert counts(db) == (expected.valid, expected.malformed)
    assert next_id(db) == first_free_id  # duplicates were skipped without taking ids


def test_ingest_backfill_then_daemon_reads_nothing_again(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    rotated = log_dir / "lmod.log-20261120"
    expected = write_log(rotated, 20_000, seed=2)
    packed = tmp_path / "lmod.log-20261119.gz"
    expected_gz = write_log(packed, 5_000, seed=3, gzip=True)
    missing = tmp_path / "missing.log"
    proc = cli(db.env, "ingest", str(packed), str(missing), str(rotated), check=False)
    assert proc.returncode == 1  # one file could not be read ...
    assert f"{missing}: cannot read" in proc.stdout
    assert f"{expected.valid} events" in proc.stdout  # ... and the others were ingested
    assert f"{expected_gz.valid} events" in proc.stdout
    total = expected.valid + expected_gz.valid
    assert counts(db) == (total, expected.malformed + expected_gz.malformed)

    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: "following file" in daemon.log_text(), 30, "the daemon's scan")
        assert daemon.stop() == 0
    text = (tmp_path / "daemon.log").read_text()
    assert f"offset={rotated.stat().st_size}" in text and "events=0 " in text


def test_views_and_dimensions(db: DbHandle, tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(
        b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=ann module=gcc/12.2.0"
        b" path=/m/gcc/12.2.0.lua host=n1.example.org time=1700000000.000001\n"
        b"Apr 27 03:22:58 n1 ModuleUsageTracking: user=bob jobid=77 module=gcc/13.1.0"
        b" path=/m/gcc/13.1.0.lua host=n1.example.org time=1700000100.5\n"
        b"Apr 27 03:22:59 n2 ModuleUsageTracking: user=ann module=bio/samtools/1.9"
        b" host=n2.example.org time=1700000050\n")
    cli(db.env, "ingest", str(log))
    assert sorted(db.rows("SELECT package, count, last_load FROM package_count")) == [
        ("bio/samtools", 1, _t(db, "2023-11-14 22:14:10.000000")),
        ("gcc", 2, _t(db, "2023-11-14 22:15:00.500000")),
    ]
    assert sorted(db.rows("SELECT package, version, count FROM package_version_count")) == [
        ("bio/samtools", "1.9", 1), ("gcc", "12.2.0", 1), ("gcc", "13.1.0", 1)]
    assert db.scalar("SELECT COUNT(*) FROM overview WHERE user = 'ann'") == 2
    assert db.rows("SELECT jobid FROM module_usage WHERE jobid IS NOT NULL") == [("77",)]
    assert db.scalar("SELECT COUNT(*) FROM modulefile") == 2


def _t(db: DbHandle, text: str) -> object:
    if db.kind == "sqlite":
        return text
    import datetime as dt

    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


def test_same_line_twice_and_same_microsecond(db: DbHandle, tmp_path: Path) -> None:
    """A line logged twice is one load; loads in the same microsecond on two hosts are two."""
    line = (b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=ann module=gcc/12.2.0"
            b" path=/m/gcc/12.2.0.lua host=%s time=1700000000.000001\n")
    log = tmp_path / "lmod.log"
    log.write_bytes(line % b"n1" + line % b"n1" + line % b"n2")
    out = cli(db.env, "ingest", str(log)).stdout
    assert "2 events, 1 duplicates skipped" in out
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 2

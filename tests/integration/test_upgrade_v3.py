"""Schema version 3 from version 2 and from version 1 (through 2), with the data: the rollup is
built from the stored facts during the upgrade, the natural key widens, and ingestion goes on
exactly once from the old checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmod_tracker.files import fingerprint_of, tail_hash
from lmod_tracker.parse import Parser
from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support.daemon import cli
from tests.support.databases import DbHandle
from tests.support.facts import assert_rollup_agrees

SUPPORT = Path(__file__).resolve().parents[1] / "support"
LINE = ("Nov 14 18:13:20 node1 ModuleUsageTracking: user=u{u} jobid={j} module=gcc/{v}"
        " path=/m/gcc/{v}.lua host=node1.frontera.example.org time={t}.{f:06d}\n")


def _lines(n: int) -> list[str]:
    # Three UTC days; pairs of loads that differ only in jobid within one second, which the
    # old key stored as one (the second is not in the old database).
    return [LINE.format(u=i // 2 % 5, j=f"{100 + i}" if i % 7 else "nil", v=i // 2 % 3,
                        t=1_700_000_000 + (i // 2) * 4000, f=0)
            for i in range(n)]


def _old_schema(db: DbHandle, version: int) -> None:
    text = (SUPPORT / f"schema_v{version}" / f"{db.kind}.sql").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
    for statement in (s.strip() for s in body.split(";")):
        if statement:
            db.execute(statement)


def _fill_old(db: DbHandle, version: int, log: Path, lines: list[str], done: int) -> int:
    """What an old version wrote after reading the first ``done`` lines of ``log`` (one row
    per old natural key); returns the rows stored."""
    parser = Parser()
    user = "`user`"
    ignore = "INSERT OR IGNORE" if db.kind == "sqlite" else "INSERT IGNORE"
    stored = 0
    for text in lines[:done]:
        e = parser.parse_line(text.rstrip("\n").encode())
        assert e is not None and not isinstance(e, str)
        db.execute(f"{ignore} INTO {user} (name) VALUES (%s)", (e.user,))
        db.execute(f"{ignore} INTO package (name, version) VALUES (%s, %s)",
                   (e.package, e.version))
        db.execute(f"{ignore} INTO host (name) VALUES (%s)", (e.host,))
        db.execute(f"{ignore} INTO modulefile (path) VALUES (%s)", (e.path,))
        stored += db.execute(
            f"{ignore} INTO module_usage (user_id, package_id, host_id, modulefile_id, jobid,"
            f" load_time) SELECT (SELECT id FROM {user} WHERE name = %s),"
            f" (SELECT id FROM package WHERE name = %s AND version = %s),"
            f" (SELECT id FROM host WHERE name = %s), (SELECT id FROM modulefile WHERE path = %s),"
            f" %s, %s", (e.user, e.package, e.version, e.host, e.path, e.jobid, e.load_time))
    st = log.stat()
    data = log.read_bytes()
    offset = sum(len(ln.encode()) for ln in lines[:done])
    columns, values = "", ()
    if version >= 2:
        columns, values = ", tail", (tail_hash(data[:offset]),)
    db.execute(f"INSERT INTO file_checkpoint (instance, dev, ino, fingerprint, path, byte_offset,"
               f" updated_at{columns}) VALUES (%s, %s, %s, %s, %s, %s, %s{', %s' * len(values)})",
               ("v3", st.st_dev, st.st_ino, fingerprint_of(data[:1024]), str(log), offset,
                "2026-01-01 00:00:00", *values))
    return stored


@pytest.mark.parametrize("version", [2, 1])
def test_upgrade_to_3_builds_the_rollup_then_ingests(db: DbHandle, tmp_path: Path,
                                                     version: int) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    lines = _lines(300)
    log.write_text("".join(lines))
    _old_schema(db, version)
    stored = _fill_old(db, version, log, lines, 200)
    assert stored < 200  # the old key lost loads that differ only in jobid
    env = {**db.env, "LMOD_TRACKER_INSTANCE": "v3", "HOME": str(tmp_path)}

    proc = cli(env, "ingest", str(log), check=False)
    assert proc.returncode == 3 and "lmod-tracker db upgrade" in proc.stderr
    # through 3 (the rollup built from the facts) to the current version
    assert f"from version {version} to {SCHEMA_VERSION}" in cli(env, "db", "upgrade").stdout
    assert db.scalar("SELECT MAX(version) FROM lmod_tracker_schema") == SCHEMA_VERSION
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == stored
    assert db.scalar("SELECT COUNT(*) FROM module_usage WHERE cluster_id IS NOT NULL"
                     " OR userload IS NOT NULL") == 0
    assert db.scalar("SELECT SUM(loads) FROM usage_daily") == stored   # built from the facts
    assert db.scalar("SELECT COUNT(*) FROM usage_daily WHERE cluster_id <> 0") == 0
    assert db.scalar("SELECT COUNT(DISTINCT day) FROM usage_daily") >= 2
    assert_rollup_agrees(db)
    assert "is current" in cli(env, "db", "upgrade").stdout

    # Ingestion resumes at the old checkpoint: only the last 100 lines are read.
    proc = cli(env, "ingest", str(log))
    assert "100 events, 0 duplicates" in proc.stdout and "resumed at byte" in proc.stdout, \
        proc.stdout
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == stored + 100
    assert_rollup_agrees(db)
    # Re-reading everything adds exactly the loads the old key had lost.
    cli(env, "ingest", "--from-start", str(log))
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == len(set(lines)) == 300
    assert_rollup_agrees(db)
    assert db.scalar("SELECT SUM(count) FROM package_count") == 300
    assert db.scalar("SELECT COUNT(*) FROM overview") == 300

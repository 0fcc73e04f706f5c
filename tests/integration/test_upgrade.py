"""Schema upgrades: a database made and filled by schema version 1 moves to the current version
in place with ``db upgrade``, and ingestion then goes on from its checkpoints, exactly once."""

from __future__ import annotations

import os
from pathlib import Path

from lmod_tracker.files import fingerprint_of
from lmod_tracker.parse import Parser
from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support.daemon import cli
from tests.support.databases import DbHandle

V1 = Path(__file__).resolve().parents[1] / "support" / "schema_v1"
LINE = ("Nov 14 18:13:20 node1 ModuleUsageTracking: user=u{n} module=gcc/{v}"
        " path=/m/gcc/{v}.lua host=node1.example.org time=1700000{n:03d}.000001\n")


def _v1_schema(db: DbHandle) -> None:
    text = (V1 / f"{db.kind}.sql").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))
    for statement in (s.strip() for s in body.split(";")):
        if statement:
            db.execute(statement)


def _fill_as_v1(db: DbHandle, log: Path, lines: list[str], done: int) -> None:
    """What version 1 wrote after reading the first ``done`` lines of ``log``: the rows and a
    checkpoint without a tail."""
    parser = Parser()
    user = "`user`"
    for i, line in enumerate(lines[:done]):
        e = parser.parse_line(line.rstrip("\n").encode())
        assert not isinstance(e, str) and e is not None
        db.execute(f"INSERT INTO {user} (name) VALUES (%s)", (e.user,))
        db.execute("INSERT INTO package (name, version) VALUES (%s, %s)"
                   " ON CONFLICT DO NOTHING" if db.kind == "sqlite" else
                   "INSERT IGNORE INTO package (name, version) VALUES (%s, %s)",
                   (e.package, e.version))
        if i == 0:
            db.execute("INSERT INTO host (name) VALUES (%s)", (e.host,))
        db.execute(
            f"INSERT INTO module_usage (user_id, package_id, host_id, load_time)"
            f" SELECT (SELECT id FROM {user} WHERE name = %s),"
            f" (SELECT id FROM package WHERE name = %s AND version = %s),"
            f" (SELECT id FROM host WHERE name = %s), %s",
            (e.user, e.package, e.version, e.host, e.load_time))
    st = log.stat()
    head = log.read_bytes()[:1024]
    offset = sum(len(ln.encode()) for ln in lines[:done])
    db.execute("INSERT INTO file_checkpoint (instance, dev, ino, fingerprint, path, byte_offset,"
               " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
               ("upgrade-test", st.st_dev, st.st_ino, fingerprint_of(head), str(log), offset,
                "2026-01-01 00:00:00"))


def test_upgrade_from_version_1_then_ingest(db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    lines = [LINE.format(n=n, v=n % 3) for n in range(60)]
    log.write_text("".join(lines))
    _v1_schema(db)
    _fill_as_v1(db, log, lines, 40)
    env = {**db.env, "LMOD_TRACKER_INSTANCE": "upgrade-test", "HOME": str(tmp_path)}

    # Every command refuses the old schema with one line that says what to run.
    for args in (("run", "--once", "--log-dir", str(log_dir)), ("db", "init"),
                 ("ingest", str(log))):
        proc = cli(env, *args, check=False)
        assert proc.returncode == 3, proc.stderr
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("lmod-tracker:")]
        assert "schema version 1" in line and "lmod-tracker db upgrade" in line, line

    proc = cli(env, "db", "upgrade")
    assert f"from version 1 to {SCHEMA_VERSION}" in proc.stdout
    assert db.scalar("SELECT MAX(version) FROM lmod_tracker_schema") == SCHEMA_VERSION
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 40  # the data is kept
    assert "is current" in cli(env, "db", "upgrade").stdout      # a second run changes nothing

    # The version 1 checkpoint (no tail) is trusted for its own file: only new lines are read.
    proc = cli(env, "run", "--once", "--log-dir", str(log_dir))
    assert proc.stdout.startswith("20 events committed (0 duplicates skipped"), proc.stdout
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == 60
    with log.open("a") as fh:
        fh.write(LINE.format(n=60, v=1))
    proc = cli(env, "run", "--once", "--log-dir", str(log_dir))
    assert proc.stdout.startswith("1 events committed (0 duplicates"), proc.stdout
    tail = db.scalar("SELECT tail FROM file_checkpoint WHERE instance = 'upgrade-test'")
    assert len(tail) == 16  # checkpoints now carry their proof
    # The views still answer the lmod_tracking queries.
    assert db.scalar("SELECT SUM(count) FROM package_count") == 61
    assert os.path.getsize(log) == db.scalar(
        "SELECT byte_offset FROM file_checkpoint WHERE instance = 'upgrade-test'")

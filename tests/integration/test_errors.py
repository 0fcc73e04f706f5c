"""Failures an operator meets, seen from outside: exit codes, one-line errors without
tracebacks, databases that refuse us for good (never retried as if they were down), a foreign
schema left untouched, shutdown that always ends, health that tells the truth, and the usual
configuration mistakes. Real processes, real databases, real signals."""

from __future__ import annotations

import grp
import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lmod_tracker.statusclient import get
from tests.support.daemon import Daemon, cli, wait_until
from tests.support.databases import (
    DbHandle,
    MysqlServer,
    drop_mysql_database,
    mysql_query,
    new_database_name,
)
from tests.support.hostile import (
    CONFIG_ERROR,
    DB_ERROR,
    MysqlAccount,
    Outcome,
    Tracker,
    healthz,
    one_error_line,
    run_tracker,
    status_doc,
)
from tests.support.loggen import LineFactory, write_log
from tests.support.proxy import FaultProxy

COUNT = "SELECT COUNT(*) FROM module_usage"
#: A permanent refusal is reported at once: no retry loop, every command ends within this.
PERMANENT_S = 15.0
GRACE_S = 2
#: The summary of a successful ``run --once`` (README, "Try it").
SUCCESS_SUMMARY = re.compile(r"\d+ events committed \(\d+ duplicates skipped")
RETRYING = re.compile(r"retrying|will retry", re.IGNORECASE)


def _log(tmp_path: Path, n: int = 300, seed: int = 141) -> tuple[Path, Path]:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    write_log(log, n, seed=seed)
    return log_dir, log


def _server(db: DbHandle) -> MysqlServer:
    assert db.server is not None
    return db.server


# ---------------------------------------------------------------------------- A: exit 3

COMMANDS = ("run", "run --once", "ingest", "db init")


def _every_command(env: Mapping[str, str], log_dir: Path, log: Path,
                   commands: Sequence[str] = COMMANDS) -> dict[str, Outcome]:
    """Start the commands at once; each must end by itself within PERMANENT_S."""
    argv = {"run": ("run", "--log-dir", str(log_dir)),
            "run --once": ("run", "--once", "--log-dir", str(log_dir)),
            "ingest": ("ingest", str(log)),
            "db init": ("db", "init")}
    started = {name: Tracker(env, *argv[name]) for name in commands}
    return {name: t.wait_from_start(PERMANENT_S) for name, t in started.items()}


def _assert_permanent(outcomes: Mapping[str, Outcome], names: str,
                      secrets_: Sequence[str] = ()) -> None:
    """Each command: exit 3, one ``database error`` line matching ``names``, no traceback,
    no retries, no secret."""
    problems: list[str] = []
    for name, out in outcomes.items():
        try:
            line = one_error_line(out, 3, DB_ERROR)
        except AssertionError as exc:
            problems.append(f"[{name}] {exc}")
            continue
        if not re.search(names, line):
            problems.append(f"[{name}] the error line does not name the problem ({names}):"
                            f" {line}")
        if RETRYING.search(out.stderr):
            problems.append(f"[{name}] retried a permanent refusal:\n{out.explain()}")
        problems += [f"[{name}] secret shown" for s in secrets_ if s in out.output]
    assert not problems, "\n\n".join(problems)


def test_wrong_password_is_permanent(mysql_db: DbHandle, tmp_path: Path) -> None:
    log_dir, log = _log(tmp_path)
    with MysqlAccount(_server(mysql_db)) as account:
        account.grant("ALL PRIVILEGES", mysql_db.name)
        wrong = "not-" + account.password
        outcomes = _every_command(account.env(mysql_db.name, password=wrong), log_dir, log)
    _assert_permanent(outcomes, r"Access denied", secrets_=(wrong, account.password))


def test_unknown_database_is_permanent(mysql_db: DbHandle, tmp_path: Path) -> None:
    server = _server(mysql_db)
    log_dir, log = _log(tmp_path)
    missing = new_database_name()
    try:
        outcomes = _every_command(server.env(missing), log_dir, log)
        created = mysql_query(server, "SHOW DATABASES LIKE %s", (missing,))
    finally:
        drop_mysql_database(server, missing)
    assert not created, f"database {missing} was created"
    _assert_permanent(outcomes, rf"{missing}|[Uu]nknown database")


def test_missing_create_privilege_is_permanent(mysql_db: DbHandle, tmp_path: Path) -> None:
    """A user that may only SELECT, on a database without a schema."""
    log_dir, log = _log(tmp_path)
    with MysqlAccount(_server(mysql_db)) as account:
        account.grant("SELECT", mysql_db.name)
        outcomes = _every_command(account.env(mysql_db.name), log_dir, log)
    _assert_permanent(outcomes, r"(?i)denied|privilege|grant")


@pytest.mark.parametrize(("grants", "refusal"), [
    # The schema exists (made by an administrator); our user may only SELECT, so the first
    # commit would be refused: that is not an outage to wait out.
    pytest.param("SELECT", r"(?i)denied|privilege|grant", id="insert"),
    # Every grant but DELETE (which the writer needs on usage_month, and month builds on the
    # monthly tables): refused at start, before a row is written, not at the first commit.
    pytest.param("SELECT, INSERT, UPDATE", r"(?i)DELETE command denied", id="delete"),
])
def test_missing_write_privilege_is_permanent(mysql_db: DbHandle, tmp_path: Path, grants: str,
                                              refusal: str) -> None:
    log_dir, log = _log(tmp_path)
    init = run_tracker(mysql_db.env, "db", "init", timeout=30)
    assert init.returncode == 0, init.explain()
    with MysqlAccount(_server(mysql_db)) as account:
        account.grant(grants, mysql_db.name)
        outcomes = _every_command(account.env(mysql_db.name), log_dir, log,
                                  ("run", "run --once", "ingest"))
    _assert_permanent(outcomes, refusal)
    assert mysql_db.scalar(COUNT) == 0


def test_wrong_schema_version_is_permanent(db: DbHandle, tmp_path: Path) -> None:
    log_dir, log = _log(tmp_path)
    init = run_tracker(db.env, "db", "init", timeout=30)
    assert init.returncode == 0, init.explain()
    db.execute("UPDATE lmod_tracker_schema SET version = 99")
    outcomes = _every_command(db.env, log_dir, log)
    _assert_permanent(outcomes, r"\b99\b")
    assert db.scalar("SELECT version FROM lmod_tracker_schema") == 99
    assert db.scalar(COUNT) == 0


# ---------------------------------------------------------------------------- A: exit 1 and 2


def test_unreadable_file_exits_1(db: DbHandle, tmp_path: Path) -> None:
    """ingest reads what it can, reports the rest and exits 1."""
    good = tmp_path / "lmod.log-1"
    expected = write_log(good, 500, seed=145)
    missing = tmp_path / "lmod.log-missing"
    corrupt = tmp_path / "lmod.log-2.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 100)
    out = run_tracker(db.env, "ingest", str(good), str(missing), str(corrupt), timeout=60)
    assert not out.timed_out and out.returncode == 1, out.explain()
    assert "Traceback" not in out.output, out.explain()
    assert missing.name in out.output and corrupt.name in out.output, out.explain()
    assert db.scalar(COUNT) == expected.valid


def test_unreachable_database_exits_1(mysql_db: DbHandle, tmp_path: Path) -> None:
    """Nothing listens where the database should be: a runtime failure (1), not a refusal."""
    _, log = _log(tmp_path)
    server = _server(mysql_db)
    with FaultProxy(server.host, server.port) as proxy:
        proxy.cut()
        env = _proxied(mysql_db, proxy, LMOD_TRACKER_RETRY_INITIAL="0.1",
                       LMOD_TRACKER_RETRY_MAX="0.5", LMOD_TRACKER_DB_TIMEOUT="5")
        started = {"ingest": Tracker(env, "ingest", str(log)),
                   "db init": Tracker(env, "db", "init")}
        results = {name: t.wait_from_start(60) for name, t in started.items()}
    problems = [f"[{name}] expected exit 1\n{out.explain()}" for name, out in results.items()
                if out.timed_out or out.returncode != 1 or "Traceback" in out.output]
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("args", [("run", "--no-such-option"), ("ingest",), ("frobnicate",)],
                         ids=["unknown-option", "missing-argument", "unknown-command"])
def test_usage_errors_exit_2(sqlite_db: DbHandle, args: tuple[str, ...]) -> None:
    out = run_tracker(sqlite_db.env, *args, timeout=30)
    assert not out.timed_out and out.returncode == 2, out.explain()
    assert "Traceback" not in out.output and out.stderr.strip(), out.explain()


# ---------------------------------------------------------------------------- G: foreign schema

# Tables with our names made by another application, modelled on the lmod_tracking project
# (user, host, package with a path, module_usage referring to them, an overview view) and on
# a variant with other column names.
FOREIGN_MYSQL = {
    "lmod_tracking": [
        "CREATE TABLE `user` (id INT AUTO_INCREMENT PRIMARY KEY,"
        " name VARCHAR(100) NOT NULL UNIQUE, INDEX name_index (name)) ENGINE=InnoDB",
        "CREATE TABLE host (id INT AUTO_INCREMENT PRIMARY KEY,"
        " name VARCHAR(100) NOT NULL UNIQUE) ENGINE=InnoDB",
        "CREATE TABLE package (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,"
        " version VARCHAR(100), path VARCHAR(200) NOT NULL UNIQUE) ENGINE=InnoDB",
        "CREATE TABLE module_usage (id INT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL,"
        " host_id INT NOT NULL, package_id INT NOT NULL, load_time DATETIME(6) NOT NULL,"
        " FOREIGN KEY (user_id) REFERENCES `user` (id),"
        " FOREIGN KEY (host_id) REFERENCES host (id),"
        " FOREIGN KEY (package_id) REFERENCES package (id),"
        " UNIQUE (user_id, host_id, package_id, load_time)) ENGINE=InnoDB",
        "CREATE VIEW overview AS SELECT `user`.name AS user, package.name AS package,"
        " package.version, module_usage.load_time FROM module_usage"
        " JOIN `user` ON `user`.id = module_usage.user_id"
        " JOIN package ON package.id = module_usage.package_id",
        "INSERT INTO `user` (name) VALUES ('alice'), ('bob')",
        "INSERT INTO host (name) VALUES ('node1')",
        "INSERT INTO package (name, version, path) VALUES ('gcc', '12.2.0', '/m/gcc/12.2.0')",
        "INSERT INTO module_usage (user_id, host_id, package_id, load_time)"
        " VALUES (1, 1, 1, '2023-04-27 07:22:57.622180')",
    ],
    "other_columns": [
        "CREATE TABLE `user` (user_id INT AUTO_INCREMENT PRIMARY KEY,"
        " user_name VARCHAR(64) NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE package (package_id INT AUTO_INCREMENT PRIMARY KEY,"
        " package_name VARCHAR(64) NOT NULL, package_version VARCHAR(64)) ENGINE=InnoDB",
        "CREATE TABLE module_usage (usage_id INT AUTO_INCREMENT PRIMARY KEY,"
        " user_id INT NOT NULL, package_id INT NOT NULL, used_at DATETIME NOT NULL)"
        " ENGINE=InnoDB",
        "INSERT INTO `user` (user_name) VALUES ('alice')",
        "INSERT INTO package (package_name, package_version) VALUES ('gcc', '12.2.0')",
        "INSERT INTO module_usage (user_id, package_id, used_at)"
        " VALUES (1, 1, '2023-04-27 07:22:57')",
    ],
}
FOREIGN_SQLITE = {
    "lmod_tracking": [
        "CREATE TABLE user (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE host (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE package (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
        " version TEXT, path TEXT NOT NULL UNIQUE)",
        "CREATE TABLE module_usage (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user_id INTEGER NOT NULL REFERENCES user (id),"
        " host_id INTEGER NOT NULL REFERENCES host (id),"
        " package_id INTEGER NOT NULL REFERENCES package (id), load_time TEXT NOT NULL,"
        " UNIQUE (user_id, host_id, package_id, load_time))",
        "CREATE VIEW overview AS SELECT user.name AS user, package.name AS package,"
        " package.version, module_usage.load_time FROM module_usage"
        " JOIN user ON user.id = module_usage.user_id"
        " JOIN package ON package.id = module_usage.package_id",
        "INSERT INTO user (name) VALUES ('alice'), ('bob')",
        "INSERT INTO host (name) VALUES ('node1')",
        "INSERT INTO package (name, version, path) VALUES ('gcc', '12.2.0', '/m/gcc/12.2.0')",
        "INSERT INTO module_usage (user_id, host_id, package_id, load_time)"
        " VALUES (1, 1, 1, '2023-04-27 07:22:57.622180')",
    ],
    "other_columns": [
        "CREATE TABLE user (user_id INTEGER PRIMARY KEY, user_name TEXT NOT NULL)",
        "CREATE TABLE package (package_id INTEGER PRIMARY KEY, package_name TEXT NOT NULL,"
        " package_version TEXT)",
        "CREATE TABLE module_usage (usage_id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
        " package_id INTEGER NOT NULL, used_at TEXT NOT NULL)",
        "INSERT INTO user (user_name) VALUES ('alice')",
        "INSERT INTO package (package_name, package_version) VALUES ('gcc', '12.2.0')",
        "INSERT INTO module_usage (user_id, package_id, used_at)"
        " VALUES (1, 1, '2023-04-27 07:22:57')",
    ],
}
FOREIGN_WORDS = re.compile(r"(?i)another application|other application|foreign"
                           r"|not (created|made|managed) by lmod-tracker|not lmod-tracker")
ELSEWHERE_WORDS = re.compile(
    r"(?i)\b(different|another|other|separate|new|empty|own)\b[^.;:]{0,30}\bdatabase")


def _schema_snapshot(db: DbHandle) -> dict[str, Any]:
    """Every table and view: its definition and (tables) its rows."""
    out: dict[str, Any] = {}
    if db.kind == "mysql":
        for name, kind in db.rows(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"):
            definition = db.rows(f"SHOW CREATE TABLE `{name}`")[0][1]
            rows = (sorted(map(repr, db.rows(f"SELECT * FROM `{name}`")))
                    if kind == "BASE TABLE" else None)
            out[name] = (kind, definition, rows)
    else:
        for kind, name, sql in db.rows(
                "SELECT type, name, sql FROM sqlite_master"
                " WHERE name NOT LIKE 'sqlite_%' ORDER BY name"):
            rows = (sorted(map(repr, db.rows(f'SELECT * FROM "{name}"')))
                    if kind == "table" else None)
            out[name] = (kind, sql, rows)
    return out


@pytest.mark.parametrize("variant", ["lmod_tracking", "other_columns"])
def test_foreign_schema_is_refused_and_untouched(db: DbHandle, tmp_path: Path,
                                                 variant: str) -> None:
    log_dir, log = _log(tmp_path)
    for statement in (FOREIGN_MYSQL if db.kind == "mysql" else FOREIGN_SQLITE)[variant]:
        db.execute(statement)
    before = _schema_snapshot(db)
    assert "lmod_tracker_schema" not in before

    outcomes = _every_command(db.env, log_dir, log, ("db init", "run --once", "ingest"))
    after = _schema_snapshot(db)

    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    problems = [f"the foreign schema was changed: {changed}"] if changed else []
    try:
        _assert_permanent(outcomes, FOREIGN_WORDS.pattern)
    except AssertionError as exc:
        problems.append(str(exc))
    for name, out in outcomes.items():
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith(DB_ERROR)]
        if lines and not ELSEWHERE_WORDS.search(lines[0]):
            problems.append(f"[{name}] does not say to use a different database: {lines[0]}")
    assert not problems, "\n\n".join(problems)


# ---------------------------------------------------------------------------- E: shutdown ends

def _count(db: DbHandle) -> int:
    try:
        return int(db.scalar(COUNT) or 0)
    except Exception:  # the schema may not exist yet
        return 0


def _proxied(db: DbHandle, proxy: FaultProxy, **extra: str) -> dict[str, str]:
    return {**db.env, "DB_HOST": "127.0.0.1", "DB_PORT": str(proxy.port), **extra}


def test_run_once_sigterm_while_database_hangs(mysql_db: DbHandle, tmp_path: Path) -> None:
    log_dir, _ = _log(tmp_path, n=300_000, seed=151)
    server = _server(mysql_db)
    with FaultProxy(server.host, server.port) as proxy:
        env = _proxied(mysql_db, proxy, LMOD_TRACKER_SHUTDOWN_GRACE=str(GRACE_S),
                       LMOD_TRACKER_BATCH_SIZE="1000")
        with Tracker(env, "run", "--once", "--log-dir", str(log_dir)) as tracker:
            wait_until(lambda: _count(mysql_db) > 0 or not tracker.alive(), 60,
                       "the first commit")
            assert tracker.alive(), ("finished before the database hung (make the backlog"
                                     f" larger)\n{tracker.wait(1).explain()}")
            proxy.stall()
            time.sleep(1.0)
            assert tracker.alive(), tracker.wait(1).explain()
            tracker.send(signal.SIGTERM)
            out = tracker.wait(GRACE_S + 10)
    assert not out.timed_out, f"still running {GRACE_S + 10} s after SIGTERM\n{out.explain()}"
    assert out.returncode == 1, f"an interrupted run --once must exit 1\n{out.explain()}"
    assert not SUCCESS_SUMMARY.search(out.output), (
        f"an interrupted run printed the summary of a complete one\n{out.explain()}")
    assert "Traceback" not in out.output, out.explain()


def test_daemon_sigterm_while_database_hangs(mysql_db: DbHandle, tmp_path: Path) -> None:
    log_dir, _ = _log(tmp_path, n=300_000, seed=152)
    server = _server(mysql_db)
    with FaultProxy(server.host, server.port) as proxy:
        env = _proxied(mysql_db, proxy, LMOD_TRACKER_SHUTDOWN_GRACE=str(GRACE_S),
                       LMOD_TRACKER_BATCH_SIZE="1000")
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            wait_until(lambda: _count(mysql_db) > 0, 60, "the first commit",
                       on_timeout=daemon.log_text)
            proxy.stall()
            time.sleep(1.0)
            assert daemon.proc is not None and daemon.alive(), daemon.log_text()[-3000:]
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                code = daemon.proc.wait(GRACE_S + 10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"daemon still running {GRACE_S + 10} s after SIGTERM with the"
                            f" database hung\n{daemon.log_text()[-3000:]}")
    assert code in (0, 1), daemon.log_text()[-3000:]
    assert "Traceback" not in daemon.log_text()


# ---------------------------------------------------------------------------- F: honest health


def test_status_after_catch_up_shows_no_lag(db: DbHandle, tmp_path: Path) -> None:
    log_dir, log = _log(tmp_path, n=5000, seed=161)
    once = run_tracker(db.env, "run", "--once", "--log-dir", str(log_dir), timeout=60)
    assert once.returncode == 0, once.explain()
    size = log.stat().st_size
    with Daemon(db.env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: healthz(daemon.env) == 200, 20, "the daemon to be ready",
                   on_timeout=daemon.log_text)
        proc = cli(daemon.env, "status", "--json", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["state"] == "running"
        files = [(f["path"], f["offset"], f["size"], f["lag_bytes"]) for f in doc["files"]]
        assert files == [(str(log), size, size, 0)], (
            f"(path, offset, size, lag_bytes) right after start: {files}, the file is"
            f" {size} bytes and fully committed")
        assert daemon.stop() == 0


def test_health_follows_database_reachability(mysql_db: DbHandle, tmp_path: Path) -> None:
    log_dir, _ = _log(tmp_path, n=2000, seed=162)
    server = _server(mysql_db)
    with FaultProxy(server.host, server.port) as proxy:
        env = _proxied(mysql_db, proxy, LMOD_TRACKER_DB_TIMEOUT="5",
                       LMOD_TRACKER_RETRY_MAX="2")
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            wait_until(lambda: healthz(daemon.env) == 200 and _count(mysql_db) > 0, 30,
                       "ready and committed", on_timeout=daemon.log_text)
            time.sleep(1.0)  # idle from now on: no line arrives

            proxy.cut()
            wait_until(lambda: healthz(daemon.env) == 503, 20,
                       "/healthz 503 while the database is unreachable",
                       on_timeout=lambda: json.dumps(status_doc(daemon.env), indent=1))
            text = cli(daemon.env, "status", check=False)
            assert text.returncode == 1 and "degraded" in text.stdout, text.stdout + text.stderr
            raw = cli(daemon.env, "status", "--json", check=False)
            assert raw.returncode == 1, raw.stdout + raw.stderr
            doc = json.loads(raw.stdout)
            assert doc["state"] == "degraded"
            assert doc["database"]["reachable"] is False
            assert doc["database"]["last_error"], doc["database"]

            proxy.restore()
            wait_until(lambda: healthz(daemon.env) == 200, 20,
                       "/healthz 200 once the database is back",
                       on_timeout=lambda: json.dumps(status_doc(daemon.env), indent=1))
            raw = cli(daemon.env, "status", "--json", check=False)
            assert raw.returncode == 0, raw.stdout + raw.stderr
            doc = json.loads(raw.stdout)
            assert doc["state"] == "running" and doc["database"]["reachable"] is True
            assert daemon.stop() == 0


# ---------------------------------------------------------------------------- H: operators


@pytest.mark.parametrize("spelling", ["*.gz *.xz", "*.gz,*.xz"], ids=["spaces", "commas"])
def test_exclude_as_a_plain_list(sqlite_db: DbHandle, tmp_path: Path, spelling: str) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    kept = write_log(log_dir / "lmod.log", 200, seed=171)
    # Followed names, excluded by the setting (plain text inside: read, they would count).
    for name, seed in (("lmod.log-1.gz", 172), ("lmod.log-2.xz", 173)):
        write_log(log_dir / name, 100, factory=LineFactory(seed=seed, start_epoch=1_710_000_000))
    env = {**sqlite_db.env, "LMOD_TRACKER_EXCLUDE": spelling}

    check = run_tracker(env, "check-config", timeout=30)
    assert check.returncode == 0 and "Traceback" not in check.output, check.explain()
    (line,) = [ln for ln in check.stdout.splitlines() if ln.startswith("exclude")]
    assert "*.gz" in line and "*.xz" in line and spelling not in line, line

    out = run_tracker(env, "run", "--once", "--log-dir", str(log_dir), timeout=30)
    assert out.returncode == 0, out.explain()
    assert sqlite_db.scalar(COUNT) == kept.valid


def test_latin1_config_file(sqlite_db: DbHandle, tmp_path: Path) -> None:
    cfg = tmp_path / "lmod-tracker.toml"
    cfg.write_bytes('instance = "café"\n'.encode("latin-1"))
    log_dir, _ = _log(tmp_path)
    for args in (("check-config",), ("run", "--once", "--log-dir", str(log_dir))):
        out = run_tracker(sqlite_db.env, "--config", str(cfg), *args, timeout=30)
        line = one_error_line(out, 2, CONFIG_ERROR)
        assert out.stderr.strip().splitlines() == [line], out.explain()
        assert cfg.name in line, line


def test_home_unset(sqlite_db: DbHandle, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    expected = write_log(log_dir / "lmod.log", 500, seed=174)
    out = run_tracker(sqlite_db.env, "run", "--once", "--log-dir", str(log_dir), timeout=30,
                      unset=("HOME",), cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.output, out.explain()
    assert sqlite_db.scalar(COUNT) == expected.valid
    check = run_tracker(sqlite_db.env, "check-config", timeout=30, unset=("HOME",),
                        cwd=tmp_path)
    assert check.returncode == 0 and "Traceback" not in check.output, check.explain()


def test_one_letter_wrong_password_leaves_messages_intact(mysql_db: DbHandle,
                                                          tmp_path: Path) -> None:
    log_dir, _ = _log(tmp_path)
    env = {**mysql_db.env, "DB_PASS": "e"}
    out = run_tracker(env, "run", "--once", "--log-dir", str(log_dir), timeout=PERMANENT_S)
    mangled = [ln for ln in out.stderr.splitlines()
               if "Acc" in ln and "Access denied" not in ln]
    assert "Access denied" in out.stderr and not mangled, out.explain()
    line = one_error_line(out, 3, DB_ERROR)
    assert "Access denied" in line, line


def test_password_never_shown(mysql_db: DbHandle, tmp_path: Path) -> None:
    log_dir, log = _log(tmp_path, n=1000, seed=175)
    secret = "Zq9-" + secrets.token_hex(16)
    wrong = "Wx7-" + secrets.token_hex(16)
    server = _server(mysql_db)
    seen: dict[str, str] = {}
    with MysqlAccount(server, password=secret) as account, \
            FaultProxy(server.host, server.port) as proxy:
        account.grant("ALL PRIVILEGES", mysql_db.name)
        check = run_tracker(account.env(mysql_db.name), "check-config", timeout=30)
        assert check.returncode == 0, check.explain()
        seen["check-config"] = check.output
        bad = run_tracker(account.env(mysql_db.name, password=wrong), "run", "--once",
                          "--log-dir", str(log_dir), timeout=PERMANENT_S)
        seen["run --once with a wrong password"] = bad.output
        assert "Access denied" in bad.output, bad.explain()

        env = {**account.env(mysql_db.name), "DB_HOST": "127.0.0.1",
               "DB_PORT": str(proxy.port), "LMOD_TRACKER_DB_TIMEOUT": "5",
               "LMOD_TRACKER_RETRY_MAX": "1", "LMOD_TRACKER_SHUTDOWN_GRACE": str(GRACE_S)}
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            wait_until(lambda: healthz(daemon.env) == 200 and _count(mysql_db) > 0, 30,
                       "ready and committed", on_timeout=daemon.log_text)
            proxy.cut()
            write_log(log, 100, factory=LineFactory(seed=176, start_epoch=1_800_000_000),
                      append=True)

            def failed() -> bool:
                doc = status_doc(daemon.env)
                return bool(doc and doc["database"]["last_error"])

            wait_until(failed, 20, "the status to show the database error",
                       on_timeout=daemon.log_text)
            seen["/status"] = get(Path(daemon.env["LMOD_TRACKER_STATUS_SOCKET"]),
                                  "/status")[1].decode()
            seen["/metrics"] = get(Path(daemon.env["LMOD_TRACKER_STATUS_SOCKET"]),
                                   "/metrics")[1].decode()
            seen["status"] = cli(daemon.env, "status", check=False).stdout
            seen["status --json"] = cli(daemon.env, "status", "--json", check=False).stdout
            daemon.stop()
            seen["daemon log"] = daemon.log_text()
    shown = [where for where, text in seen.items() if secret in text or wrong in text]
    assert not shown, f"the password appears in: {shown}"


def test_check_config_shows_socket_mode_in_octal(sqlite_db: DbHandle) -> None:
    out = run_tracker(sqlite_db.env, "check-config", timeout=30)
    assert out.returncode == 0, out.explain()
    assert re.search(r'(?m)^status_socket_mode\s*=\s*"?0o?660"?\s*$', out.stdout), out.stdout


def test_unknown_socket_group(sqlite_db: DbHandle, tmp_path: Path) -> None:
    group = "nonexistentgrp"
    with pytest.raises(KeyError):
        grp.getgrnam(group)
    log_dir, _ = _log(tmp_path)
    sock = Path(f"/tmp/lt-{secrets.token_hex(6)}.sock")
    env = {**sqlite_db.env, "LMOD_TRACKER_STATUS_SOCKET_GROUP": group,
           "LMOD_TRACKER_STATUS_SOCKET": str(sock)}
    try:
        out = run_tracker(env, "run", "--log-dir", str(log_dir), timeout=PERMANENT_S)
        line = one_error_line(out, 2, CONFIG_ERROR)
        assert group in line, line
        assert not sock.exists(), f"{sock} left behind"
    finally:
        sock.unlink(missing_ok=True)


def test_db_init_twice_prints_no_warnings(db: DbHandle) -> None:
    """stderr holds log lines at info level and nothing else (no driver notes such as
    "Table 'user' already exists", no warnings)."""
    for attempt in (1, 2):
        out = run_tracker(db.env, "db", "init", timeout=30)
        assert out.returncode == 0, out.explain()
        stray = [ln for ln in out.stderr.splitlines()
                 if ln.strip() and not re.match(r"timestamp=\S+ level=(info|debug) ", ln)]
        assert not stray, f"db init run {attempt} printed {stray}\n{out.explain()}"

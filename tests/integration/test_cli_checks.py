"""The command line's own checks: check-config proves the grants `run` needs and reports a
refusal as `run` does; fatal lines carry the journal's error priority; bad values and paths
end in one line and exit 2, never in a usage error or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support.daemon import child_env, cli
from tests.support.databases import DbHandle
from tests.support.hostile import CONFIG_ERROR, DB_ERROR, MysqlAccount

#: Root without the capabilities that let it write whatever the permissions say.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _fatal_line(proc: subprocess.CompletedProcess[str], code: int, prefix: str) -> str:
    """The process exited ``code`` with exactly one stderr line, starting with ``prefix``."""
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    return lines[0]


def _log_dir(tmp_path: Path) -> Path:
    log_dir = tmp_path / "log"
    log_dir.mkdir(exist_ok=True)
    return log_dir


# -- check-config proves the grants ---------------------------------------------------------

def test_check_config_refuses_a_select_only_mysql_user(mysql_db: DbHandle,
                                                       tmp_path: Path) -> None:
    """Before: exit 0 'reachable, schema version 4', then `run` exited 3 (INSERT denied)."""
    cli(mysql_db.env, "db", "init")
    assert mysql_db.server is not None
    with MysqlAccount(mysql_db.server) as account:
        account.grant("SELECT", mysql_db.name)
        env = account.env(mysql_db.name)
        check = cli(env, "check-config", check=False, timeout=60)
        line = _fatal_line(check, 3, DB_ERROR)
        assert "(1142)" in line and "denied" in line and "GRANT" in line, line
        assert f"db_user = {account.user}" in check.stdout  # the settings are still shown
        assert account.password not in check.stdout + check.stderr
        run = cli(env, "run", "--once", "--log-dir", str(_log_dir(tmp_path)), check=False,
                  timeout=60)
    assert run.returncode == 3, run.stderr
    # the same words as `run` at start (which logs its start before that line)
    assert [ln for ln in run.stderr.splitlines() if ln.startswith(DB_ERROR)] == [line]


def test_check_config_passes_a_user_with_the_grants(mysql_db: DbHandle) -> None:
    assert mysql_db.server is not None
    cli(mysql_db.env, "db", "init")
    with MysqlAccount(mysql_db.server) as account:
        account.grant("SELECT, INSERT, UPDATE, DELETE", mysql_db.name)
        check = cli(account.env(mysql_db.name), "check-config", timeout=60)
    assert check.stderr == ""
    assert f"schema version {SCHEMA_VERSION}, reading and writing allowed" in check.stdout


def test_check_config_refuses_a_read_only_sqlite_file(sqlite_db: DbHandle) -> None:
    """SQLite opens a file it may not write read-only: only the probe's write sees it. Run
    without root's override capabilities (cli() cannot add the setpriv prefix)."""
    cli(sqlite_db.env, "db", "init")
    path = sqlite_db.sqlite_path
    assert path is not None
    path.chmod(0o444)
    check = subprocess.run(
        [*NO_OVERRIDE, sys.executable, "-m", "lmod_tracker", "check-config"],
        env=child_env(sqlite_db.env), capture_output=True, text=True, timeout=60)
    line = _fatal_line(check, 3, DB_ERROR)
    assert "readonly" in line and "not writable" in line, line
    assert f"sqlite_path = {path}" in check.stdout


def test_check_config_unreachable_database_reports_on_stderr(tmp_path: Path) -> None:
    """Before: 'database: unreachable: ...' on stdout, stderr empty."""
    env = {"DB_NAME": "lmod", "DB_USER": "nobody", "DB_HOST": "127.0.0.1", "DB_PORT": "1",
           "HOME": str(tmp_path)}
    check = cli(env, "check-config", check=False, timeout=60)
    line = _fatal_line(check, 1, DB_ERROR)
    assert "127.0.0.1:1" in line
    assert "unreachable" not in check.stdout and "database:" not in check.stdout


# -- journald priority ----------------------------------------------------------------------

def _under_journald(env: Mapping[str, str], *args: str, tmp_path: Path
                    ) -> tuple[int, list[str]]:
    """Run with stderr on a file named by JOURNAL_STREAM, as systemd does with the journal's
    socket (logs.under_journald compares device and inode of stderr)."""
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        st = os.fstat(err.fileno())
        proc = subprocess.run(
            [sys.executable, "-m", "lmod_tracker", *args],
            env=child_env(env, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
            stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    return proc.returncode, err_path.read_text().splitlines()


def test_fatal_lines_have_the_error_priority_under_journald(sqlite_db: DbHandle,
                                                            tmp_path: Path) -> None:
    """Before: no prefix, so journald filed them at info and `journalctl -p warning` hid why
    the unit exited 2 or 3."""
    code, lines = _under_journald({**sqlite_db.env, "LMOD_TRACKER_BATCH_SIZE": "0"},
                                  "run", "--once", "--log-dir", str(_log_dir(tmp_path)),
                                  tmp_path=tmp_path)
    assert code == 2 and lines and lines[-1].startswith(f"<3>{CONFIG_ERROR} invalid"), lines

    path = sqlite_db.sqlite_path
    assert path is not None
    path.write_bytes(b"this is not a SQLite database, not at all" * 100)
    code, lines = _under_journald(sqlite_db.env, "run", "--once", "--log-dir",
                                  str(_log_dir(tmp_path)), tmp_path=tmp_path)
    assert code == 3 and lines[-1].startswith(f"<3>{DB_ERROR}"), lines
    assert all(line.startswith("<") for line in lines), lines  # log lines have theirs too

    code, lines = _under_journald(sqlite_db.env, "check-config", tmp_path=tmp_path)
    assert code == 3 and lines == [lines[-1]] and lines[-1].startswith(f"<3>{DB_ERROR}")

    # a report's refusal as well
    path.unlink()
    code, lines = _under_journald(sqlite_db.env, "report", "top", "--since", "nonsense",
                                  tmp_path=tmp_path)
    assert code == 2 and lines[-1].startswith("<3>lmod-tracker: "), lines


def test_no_priority_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    env = {"JOURNAL_STREAM": "1:1", "LMOD_TRACKER_BATCH_SIZE": "0", "HOME": str(tmp_path)}
    _fatal_line(cli(env, "check-config", check=False), 2, CONFIG_ERROR)


# -- one line and exit 2 for bad values and paths ------------------------------------------

@pytest.mark.parametrize(("args", "env", "words"), [
    (["--config", "/tmp", "check-config"], {}, "config file /tmp is a directory"),
    (["check-config"], {"LMOD_TRACKER_CONFIG": "/tmp"},
     "config file /tmp (LMOD_TRACKER_CONFIG) is a directory"),
    (["run", "--once", "--log-dir", "/etc/passwd"], {},
     "log_dir /etc/passwd is not a directory"),
    (["run", "--once", "--log-dir", ""], {}, "log_dir (LMOD_TRACKER_LOG_DIR): is empty"),
    (["run", "--once"], {"LMOD_TRACKER_LOG_DIR": ""}, "log_dir (LMOD_TRACKER_LOG_DIR): is empty"),
    (["run", "--once", "--log-dir", "/tmp"], {"LMOD_TRACKER_FILE_GLOB": ""},
     "file_glob (LMOD_TRACKER_FILE_GLOB): is empty"),
    (["run", "--once", "--log-dir", "/tmp"], {"LMOD_TRACKER_SQLITE_PATH": ""},
     "sqlite_path (LMOD_TRACKER_SQLITE_PATH): is empty"),
    (["check-config"], {"LMOD_TRACKER_INSTANCE": "   "}, "instance (LMOD_TRACKER_INSTANCE):"
                                                         " is blank"),
    (["check-config"], {"LMOD_TRACKER_RETRY_MAX": "inf"}, "retry_max (LMOD_TRACKER_RETRY_MAX):"
                                                          " Input should be a finite number"),
    (["check-config"], {"LMOD_TRACKER_POLL_INTERVAL": "nan"},
     "poll_interval (LMOD_TRACKER_POLL_INTERVAL): Input should be a finite number"),
])
def test_bad_values_and_paths_end_in_one_line(sqlite_db: DbHandle, tmp_path: Path,
                                              args: list[str], env: dict[str, str],
                                              words: str) -> None:
    """Before: click's four-line usage error (naming --config for the variable too), exit 0
    with nothing read (LOG_DIR=, FILE_GLOB=), exit 3 (SQLITE_PATH=), a blank instance."""
    proc = cli({**sqlite_db.env, "HOME": str(tmp_path), **env}, *args, check=False,
               timeout=60)
    line = _fatal_line(proc, 2, CONFIG_ERROR)
    assert words in line, line
    if "LMOD_TRACKER_CONFIG" in env:
        assert "--config" not in line


def test_nul_byte_in_the_config_file_ends_in_one_line(sqlite_db: DbHandle,
                                                      tmp_path: Path) -> None:
    """Before: 'ValueError: embedded null byte', a traceback and exit 1."""
    cfg = tmp_path / "c.toml"
    # (status_socket too, in the unit tests: here the environment sets it, and wins)
    for setting in ("log_dir", "sqlite_path", "file_glob"):
        cfg.write_text(f'{setting} = "/tmp/x\\u0000y"\n')
        env = {k: v for k, v in sqlite_db.env.items() if k != "LMOD_TRACKER_SQLITE_PATH"}
        proc = cli({**env, "HOME": str(tmp_path)}, "--config", str(cfg), "run", "--once",
                   check=False, timeout=60)
        line = _fatal_line(proc, 2, CONFIG_ERROR)
        assert setting in line and "NUL byte" in line, line


def test_ingest_of_a_directory_is_one_failed_file_among_others(sqlite_db: DbHandle,
                                                               tmp_path: Path) -> None:
    """A directory given to ingest was a click usage error that read no file at all."""
    good = tmp_path / "lmod.log-1"
    good.write_text("Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h"
                    " time=1.5\n")
    (tmp_path / "adir").mkdir()
    proc = cli(sqlite_db.env, "ingest", str(tmp_path / "adir"), str(good), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Is a directory" in proc.stdout and "1 events" in proc.stdout
    assert sqlite_db.scalar("SELECT COUNT(*) FROM module_usage") == 1


def test_a_password_beyond_latin1_logs_in_and_is_never_shown(mysql_db: DbHandle,
                                                             tmp_path: Path) -> None:
    """The driver encoded a str password as Latin-1: 'grüß' was refused as a wrong password
    and '€' raised an encoding error (retried for ever) that showed a character of it."""
    cli(mysql_db.env, "db", "init")
    password = "grüß€ 'x' %s @ Ω 1234"
    with MysqlAccount(mysql_db.server, password=password) as account:
        account.grant("SELECT, INSERT, UPDATE, DELETE", mysql_db.name)
        env = account.env(mysql_db.name)
        check = cli(env, "check-config", timeout=60)
        run = cli(env, "run", "--once", "--log-dir", str(_log_dir(tmp_path)), timeout=60)
        report = cli(env, "report", "top", timeout=60)
        wrong = cli(account.env(mysql_db.name, password=password[:-1] + "5"), "check-config",
                    check=False, timeout=60)
    assert "reading and writing allowed" in check.stdout
    assert wrong.returncode == 3
    for proc in (check, run, report, wrong):
        for text in (proc.stdout, proc.stderr):
            assert "€" not in text and "grü" not in text and "1234" not in text

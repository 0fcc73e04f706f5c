"""Settings: sources, one-line errors, and the password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmod_tracker.config import ConfigError, load_settings
from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support.daemon import cli

SECRET = "s3cr3t-Passw0rd"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASS", "DB_NAME", "DB_SOCKET",
                 "LMOD_TRACKER_CONFIG", "LMOD_TRACKER_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ingest.env of the developer
    monkeypatch.chdir(tmp_path)


def test_defaults_use_embedded_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    s = load_settings()
    assert s.backend == "sqlite"
    assert str(s.sqlite_path).endswith(".local/state/lmod-tracker/lmod-tracker.db")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/lmod-tracker")
    assert load_settings().sqlite_path == Path("/var/lib/lmod-tracker/lmod-tracker.db")


def test_lmod_tracking_variables_select_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_NAME", "lmod")
    monkeypatch.setenv("DB_USER", "tracker")
    monkeypatch.setenv("DB_PASS", SECRET)
    s = load_settings()
    assert (s.backend, s.db_host, s.db_port) == ("mysql", "localhost", 3306)
    assert s.db_pass.get_secret_value() == SECRET
    assert SECRET not in repr(s) and SECRET not in str(s.redacted())


def test_ingest_env_file_in_home(tmp_path: Path) -> None:
    (tmp_path / ".ingest.env").write_text(f"DB_NAME=lmod\nDB_USER=u\nDB_PASS={SECRET}\n")
    s = load_settings()
    assert s.backend == "mysql" and s.db_name == "lmod"


def test_toml_file_and_environment_precedence(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('batch_size = 123\nsyslog_tag = "lmod"\nexclude = ["*.gz"]\n')
    s = load_settings(cfg)
    assert (s.batch_size, s.syslog_tag, s.exclude) == (123, ["lmod"], ["*.gz"])
    monkeypatch.setenv("LMOD_TRACKER_BATCH_SIZE", "77")
    assert load_settings(cfg).batch_size == 77


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "lmod-tracker.toml"
    assert load_settings(example).log_dir == Path("/var/log/lmod")


@pytest.mark.parametrize(("toml", "env", "message"), [
    ("batch_size = 0\n", {}, "batch_size (LMOD_TRACKER_BATCH_SIZE): Input should be greater"),
    ("batchsize = 10\n", {}, "unknown setting 'batchsize'"),
    ("batch_size = \n", {}, "is not valid TOML"),
    ("", {"DB_PORT": "abc"}, "DB_PORT: Input should be a valid integer"),
    ("", {"LMOD_TRACKER_BACKEND": "mysql"}, "DB_NAME must be set for the mysql backend"),
    ("", {"LMOD_TRACKER_MODULE_SPLIT": "middle"}, "module_split"),
    ('syslog_tag = ["a b"]\n', {}, "syslog_tag"),
    ('syslog_tag = "a:b"\n', {}, "syslog_tag"),
])
def test_errors_are_one_line_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, env: dict[str, str],
        message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_password_never_in_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'db_pass = ["{SECRET}"]\n')  # wrong type: the value must not be echoed
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert SECRET not in str(err.value)


def test_cli_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = cli({"LMOD_TRACKER_BATCH_SIZE": "-1", "HOME": str(tmp_path)}, "check-config",
               check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("lmod-tracker: configuration error: invalid setting batch_size")


def test_cli_run_once_missing_log_dir(tmp_path: Path) -> None:
    """``run --once`` has nothing to wait for: a missing directory is a setting to fix (the
    daemon waits for it: tests/integration/test_start_without_database.py)."""
    proc = cli({"HOME": str(tmp_path), "LMOD_TRACKER_SQLITE_PATH": str(tmp_path / "x.db")},
               "run", "--once", "--log-dir", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2
    assert "log_dir" in proc.stderr and "does not exist" in proc.stderr


def test_check_config_redacts_password_and_reports_database(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "DB_NAME": "lmod_nonexistent", "DB_USER": "nobody",
           "DB_PASS": SECRET, "DB_HOST": "127.0.0.1", "DB_PORT": "1"}
    proc = cli(env, "check-config", check=False)
    assert proc.returncode == 1
    assert "db_pass = ***" in proc.stdout
    # the failure goes to stderr, in one line, as `run` reports it; stdout holds the settings
    assert proc.stderr.startswith("lmod-tracker: database error: mysql://nobody@127.0.0.1:1/")
    assert proc.stderr.count("\n") == 1
    assert not any(line.startswith("database") for line in proc.stdout.splitlines())
    assert SECRET not in proc.stdout + proc.stderr


def test_check_config_on_sqlite(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "LMOD_TRACKER_SQLITE_PATH": str(tmp_path / "t.db")}
    proc = cli(env, "check-config")
    assert "no schema yet" in proc.stdout
    cli(env, "db", "init")
    assert f"schema version {SCHEMA_VERSION}" in cli(env, "check-config").stdout

"""Values a setting may not take: empty where empty means nothing, inf and nan, huge numbers,
NUL bytes, a directory as the config file. Each is refused in one line naming the setting."""

from __future__ import annotations

import math
from pathlib import Path

import annotated_types
import pytest

from lmod_tracker.config import ConfigError, Settings, load_settings

FLOATS = sorted(name for name, field in Settings.model_fields.items()
                if field.annotation is float)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASS", "DB_NAME", "DB_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"LMOD_TRACKER_{name.upper()}", raising=False)
    monkeypatch.delenv("LMOD_TRACKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ingest.env of the developer
    monkeypatch.chdir(tmp_path)


def _refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
             config: Path | None = None) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    message = str(err.value)
    assert "\n" not in message
    return message


# -- empty and blank values ---------------------------------------------------------------

@pytest.mark.parametrize(("variable", "setting"), [
    ("LMOD_TRACKER_LOG_DIR", "log_dir (LMOD_TRACKER_LOG_DIR)"),
    ("LMOD_TRACKER_FILE_GLOB", "file_glob (LMOD_TRACKER_FILE_GLOB)"),
    ("LMOD_TRACKER_SQLITE_PATH", "sqlite_path (LMOD_TRACKER_SQLITE_PATH)"),
    ("LMOD_TRACKER_INSTANCE", "instance (LMOD_TRACKER_INSTANCE)"),
    ("DB_HOST", "DB_HOST"),
])
@pytest.mark.parametrize(("value", "word"), [("", "is empty"), ("   ", "is blank")])
def test_empty_or_blank_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str,
                                   setting: str, value: str, word: str) -> None:
    """Before: LOG_DIR= read the working directory, FILE_GLOB= followed nothing,
    SQLITE_PATH= failed later as a database error (exit 3), INSTANCE='   ' was a name."""
    message = _refused(monkeypatch, {variable: value})
    assert f"{setting}: {word}: set " in message and "unset it" in message, message


@pytest.mark.parametrize("setting", ["log_dir", "file_glob", "sqlite_path", "instance"])
def test_empty_in_the_toml_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           setting: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'{setting} = ""\n')
    assert f"{setting} (LMOD_TRACKER_{setting.upper()}): is empty" in _refused(
        monkeypatch, {}, cfg)


def test_blank_status_socket_is_refused_but_empty_disables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMOD_TRACKER_STATUS_SOCKET", "")
    assert load_settings().status_socket == ""
    assert "status_socket (LMOD_TRACKER_STATUS_SOCKET): is blank" in _refused(
        monkeypatch, {"LMOD_TRACKER_STATUS_SOCKET": "  "})


def test_empty_where_it_means_unset_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLUSTER", "CLUSTER_FROM_HOST", "RETENTION", "STATUS_SOCKET_GROUP",
                 "EXCLUDE", "NO_JOB_TOKENS"):
        monkeypatch.setenv(f"LMOD_TRACKER_{name}", "")
    monkeypatch.setenv("DB_SOCKET", "")
    monkeypatch.setenv("DB_PASS", "")
    s = load_settings()
    assert (s.cluster, s.cluster_from_host, s.retention, s.status_socket_group,
            s.db_socket) == (None, None, None, None, None)
    assert (s.exclude, s.no_job_tokens, s.db_pass.get_secret_value()) == ([], [], "")


def test_log_dir_given_as_dot_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMOD_TRACKER_LOG_DIR", ".")
    assert load_settings().log_dir == Path(".")


# -- numbers ------------------------------------------------------------------------------

def test_the_float_settings_are_known() -> None:
    assert FLOATS == ["batch_timeout", "db_timeout", "poll_interval", "retry_initial",
                      "retry_max", "rotate_wait", "shutdown_grace", "summary_interval"]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "NaN"])
def test_non_finite_floats_are_refused(monkeypatch: pytest.MonkeyPatch, name: str,
                                       value: str) -> None:
    """Before: RETRY_MAX=inf (the daemon stopped retrying), DB_TIMEOUT, ROTATE_WAIT,
    SHUTDOWN_GRACE, SUMMARY_INTERVAL=inf were accepted; POLL_INTERVAL=nan was refused as
    'less than or equal to 60'."""
    message = _refused(monkeypatch, {f"LMOD_TRACKER_{name.upper()}": value})
    assert f"{name} (LMOD_TRACKER_{name.upper()}): Input should be a finite number" in message
    assert "less than" not in message


@pytest.mark.parametrize("name", FLOATS)
def test_non_finite_floats_in_toml_are_refused(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path, name: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{name} = inf\n")
    assert "finite number" in _refused(monkeypatch, {}, cfg)


def _upper_bound(name: str) -> float:
    for meta in Settings.model_fields[name].metadata:
        if isinstance(meta, annotated_types.Le):
            return float(meta.le)  # type: ignore[arg-type]
    raise AssertionError(f"{name} has no upper bound")


@pytest.mark.parametrize("name", FLOATS)
def test_every_float_has_an_upper_bound_it_documents(name: str) -> None:
    bound = _upper_bound(name)
    assert math.isfinite(bound) and bound <= 86400
    description = Settings.model_fields[name].description or ""
    if name not in ("poll_interval", "batch_timeout"):  # bounded before, documented in README
        assert f"{bound:g}" in description, description


@pytest.mark.parametrize(("name", "bound"), [
    ("retry_initial", 3600), ("retry_max", 3600), ("db_timeout", 3600),
    ("shutdown_grace", 3600), ("rotate_wait", 86400), ("summary_interval", 86400),
])
def test_huge_values_are_refused_and_the_bound_is_accepted(
        monkeypatch: pytest.MonkeyPatch, name: str, bound: int) -> None:
    """Before: RETRY_MAX=1e308 was accepted (the daemon effectively stopped retrying)."""
    variable = f"LMOD_TRACKER_{name.upper()}"
    message = _refused(monkeypatch, {variable: "1e308"})
    assert f"{name} ({variable}): Input should be less than or equal to {bound}" in message
    monkeypatch.setenv(variable, str(bound))
    if name == "retry_initial":
        monkeypatch.setenv("LMOD_TRACKER_RETRY_MAX", str(bound))
    assert getattr(load_settings(), name) == bound


# -- NUL bytes ----------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    'log_dir = "/var/log/\\u0000lmod"',
    'sqlite_path = "/tmp/a\\u0000.db"',
    'status_socket = "/tmp/\\u0000.sock"',
    'file_glob = "lmod\\u0000*"',
    'instance = "a\\u0000b"',
    'exclude = ["*.gz", "*\\u0000"]',
    'cluster = "a\\u0000"',
    'db_host = "db\\u0000"',
])
def test_nul_byte_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         line: str) -> None:
    """Before: a traceback 'ValueError: embedded null byte' (exit 1) when the value was used."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    setting = line.split(" ", 1)[0]
    message = _refused(monkeypatch, {}, cfg)
    assert setting in message.lower() and "contains a NUL byte" in message, message


def test_nul_byte_in_the_password_is_refused_without_showing_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('db_pass = "Secret-\\u0000-Value"\n')
    message = _refused(monkeypatch, {}, cfg)
    assert "db_pass" in message.lower(), message
    assert "NUL" in message and "Secret" not in message


# -- the config file ----------------------------------------------------------------------

def test_config_file_that_is_a_directory(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    message = _refused(monkeypatch, {}, tmp_path)
    assert message == f"config file {tmp_path} is a directory: name a TOML file"


def test_config_file_from_the_environment_is_named_so(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    message = _refused(monkeypatch, {"LMOD_TRACKER_CONFIG": str(tmp_path)})
    assert f"{tmp_path} (LMOD_TRACKER_CONFIG) is a directory" in message
    missing = tmp_path / "missing.toml"
    message = _refused(monkeypatch, {"LMOD_TRACKER_CONFIG": str(missing)})
    assert message == f"cannot read config file {missing} (LMOD_TRACKER_CONFIG): No such file" \
                      " or directory"

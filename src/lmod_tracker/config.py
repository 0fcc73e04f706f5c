"""All settings in one typed class: environment, ``.env`` files and an optional TOML file.

Database variables keep the names of the lmod_tracking ingest script (``DB_USER``, ``DB_PASS``,
``DB_HOST``, ``DB_PORT``, ``DB_NAME``, read from ``~/.ingest.env`` too); every other setting is
``LMOD_TRACKER_<NAME>`` in the environment and ``<name>`` in the TOML file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("lmod_tracker_config_file", default=None)
_SECRET_FIELDS = frozenset({"db_pass"})
_TAG = re.compile(r"[^\s:\[\]]+\Z")
#: Settings that must not be empty or blank, and what to set instead. (Where empty means
#: something it is allowed: status_socket '' disables the endpoint; cluster, cluster_from_host,
#: retention, db_socket and status_socket_group '' are unset; exclude and no_job_tokens may
#: be empty lists; DB_PASS '' is no password; DB_NAME and DB_USER '' are unset.)
_NOT_BLANK = {
    "log_dir": "set the directory rsyslog writes to, or unset it for /var/log/lmod",
    "file_glob": "set a glob of the file names to follow, or unset it for lmod.log*",
    "sqlite_path": "set the SQLite file, or unset it for the default",
    "instance": "set this daemon's name, or unset it for the host name",
    "db_host": "set the server's host name, or unset it for localhost",
}


class ConfigError(Exception):
    """A setting is wrong; the message is one line that says which and what to fix."""


def _home() -> Path | None:
    """The home directory, or None when there is none (a service user without HOME and
    without a passwd entry)."""
    try:
        return Path.home()
    except (RuntimeError, KeyError, OSError):
        return None


def default_sqlite_path() -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME`` or ``~/.local/state``
    (``/var/lib/lmod-tracker`` for a user without a home directory)."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "lmod-tracker.db"
    xdg = os.environ.get("XDG_STATE_HOME")
    if not xdg:
        home = _home()
        if home is None:
            return Path("/var/lib/lmod-tracker/lmod-tracker.db")
        xdg = str(home / ".local" / "state")
    return Path(xdg) / "lmod-tracker" / "lmod-tracker.db"


def default_status_socket() -> str:
    """``$RUNTIME_DIRECTORY/status.sock`` (systemd), else a per-user runtime directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return str(Path(runtime.split(":")[0]) / "status.sock")
    if os.geteuid() == 0:
        return "/run/lmod-tracker/status.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/lmod-tracker-{os.geteuid()}"
    return str(Path(base) / "lmod-tracker" / "status.sock")


def _db(name: str) -> Any:
    return AliasChoices(name, name.lower(), f"LMOD_TRACKER_{name}")


class Settings(BaseSettings):
    """Every setting of lmod-tracker, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="LMOD_TRACKER_",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        allow_inf_nan=False,  # inf or nan in a period or timeout is never meant
    )

    # What to read
    log_dir: Path = Field(Path("/var/log/lmod"), description="directory rsyslog writes to")
    file_glob: str = Field("lmod.log*", description="which files in log_dir to follow")
    exclude: Annotated[list[str], NoDecode] = Field(
        ["*.gz", "*.xz", "*.bz2", "*.zst"],
        description="globs never followed (compressed copies); a list, or one string"
                    " separated by spaces or commas")
    start_position: Literal["beginning", "end"] = Field(
        "beginning", description="where files without a checkpoint start, at the first scan")
    poll_interval: float = Field(1.0, gt=0, le=60, description="stat sweep period, seconds")
    rotate_wait: float = Field(5.0, ge=0, le=86400,
                               description="keep a vanished file open this long, seconds"
                                           " (0 to 86400)")
    syslog_tag: Annotated[list[str], NoDecode] = Field(
        ["ModuleUsageTracking"], min_length=1,
        description="the syslog program name(s) of our lines: one, or a list (a renamed tag"
                    " keeps its old files readable)")
    module_split: Literal["last", "first"] = Field(
        "last", description="split module= at the last or first '/'")
    max_line_bytes: int = Field(8192, ge=256, le=1 << 20)
    cluster: str | None = Field(
        None, max_length=64, description="the cluster of lines without cluster=/syshost="
                                         " (one daemon per cluster); unset: none")
    cluster_from_host: str | None = Field(
        None, description="derive the cluster of such lines from host=: 'second-label'"
                          " (Lmod's default syshost) or a regular expression with one group")
    no_job_tokens: Annotated[list[str], NoDecode] = Field(
        ["nil", "none", "null", "interactive", "na", "n/a", "-", ""],
        description="jobid= values that mean 'not in a job' (without case), stored as NULL")
    retention: str | None = Field(
        None, description="delete load rows older than this (13mo, 400d, 52w, 2y; the daily"
                          " rollup is kept); unset: keep everything")
    instance: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)

    # Pipeline
    read_block_bytes: int = Field(128 * 1024, ge=4096, le=16 << 20)
    queue_chunks: int = Field(16, ge=1, le=1024)
    batch_size: int = Field(10_000, ge=1, le=100_000)
    batch_timeout: float = Field(0.25, gt=0, le=60, description="seconds")
    parse_process: Literal["auto", "on", "off"] = Field(
        "auto", description="parse in a child process: auto = when this process may use two"
                            " or more CPUs")
    retry_initial: float = Field(0.5, gt=0, le=3600,
                                 description="first backoff after a failed commit, seconds"
                                             " (up to 3600)")
    retry_max: float = Field(30.0, gt=0, le=3600,
                             description="longest backoff between retries, seconds (up to"
                                         " 3600: a longer one would leave a recovered database"
                                         " unused for that long)")
    shutdown_grace: float = Field(10.0, ge=0, le=3600,
                                  description="seconds to commit what is queued after SIGTERM"
                                              " (0 to 3600; systemd's TimeoutStopSec must be"
                                              " longer)")

    # Database
    backend: Literal["auto", "sqlite", "mysql"] = "auto"
    sqlite_path: Path = Field(default_factory=default_sqlite_path)
    db_host: str = Field("localhost", validation_alias=_db("DB_HOST"))
    db_port: int = Field(3306, ge=1, le=65535, validation_alias=_db("DB_PORT"))
    db_user: str | None = Field(None, validation_alias=_db("DB_USER"))
    db_pass: SecretStr = Field(SecretStr(""), validation_alias=_db("DB_PASS"))
    db_name: str | None = Field(None, validation_alias=_db("DB_NAME"))
    db_socket: str | None = Field(None, validation_alias=_db("DB_SOCKET"))
    db_timeout: float = Field(30.0, gt=0, le=3600,
                              description="seconds for one database call (up to 3600)")

    # Operations
    status_socket: str = Field(default_factory=default_status_socket,
                               description="unix socket of the status endpoint; '' disables")
    status_socket_mode: int = Field(0o660, ge=0, le=0o777)
    status_socket_group: str | None = Field(None, description="group owning the socket")
    summary_interval: float = Field(60.0, gt=0, le=86400,
                                    description="seconds between summary lines (up to 86400)")

    # Logging
    log_format: Literal["auto", "logfmt", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """A NUL byte fits in TOML ("\\u0000") but in no file name, glob or SQL text."""
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            text = item.get_secret_value() if isinstance(item, SecretStr) else item
            if isinstance(text, str | Path) and "\0" in str(text):
                raise ValueError("contains a NUL byte: remove it")
        return value

    @field_validator(*_NOT_BLANK, mode="before")
    @classmethod
    def _not_blank(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"is {'empty' if not value else 'blank'}:"
                             f" {_NOT_BLANK[str(info.field_name)]}")
        return value

    @field_validator("status_socket", mode="before")
    @classmethod
    def _socket_not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and value and not value.strip():
            raise ValueError("is blank: set '' to disable the status endpoint, or a socket path")
        return value

    @field_validator("exclude", "syslog_tag", "no_job_tokens", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """``'*.gz *.xz'``, ``'*.gz,*.xz'`` or JSON ``'["*.gz"]'`` from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc.msg}") from None
            return [part for part in re.split(r"[\s,]+", text) if part]
        return value

    @field_validator("syslog_tag", mode="after")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TAG.match(tag):
                raise ValueError(f"{tag!r} is not a syslog program name (no spaces, ':', '[' or"
                                 " ']')")
        return value

    @field_validator("cluster", "cluster_from_host", "retention", "db_socket",
                     "status_socket_group", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cluster", mode="after")
    @classmethod
    def _cluster(cls, value: str | None) -> str | None:
        if value is not None and any(c.isspace() for c in value):
            raise ValueError(f"{value!r} has white space")
        return value

    @field_validator("cluster_from_host", mode="after")
    @classmethod
    def _host_rule(cls, value: str | None) -> str | None:
        from lmod_tracker.parse import host_rule

        host_rule(value)  # raises ValueError saying what is wrong
        return value

    @field_validator("retention", mode="after")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        from lmod_tracker.retention import parse_age

        if value is not None:
            parse_age(value)  # raises ValueError saying what is accepted
        return value

    @field_validator("status_socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        """File modes are octal: ``0660``, ``660`` or ``0o660`` (a TOML integer as it is)."""
        if isinstance(value, str):
            try:
                return int(value.strip().removeprefix("0o"), 8)
            except ValueError:
                raise ValueError(f"{value!r} is not an octal file mode such as 0660") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.backend == "auto":
            self.backend = "mysql" if (self.db_name or self.db_user) else "sqlite"
        if self.backend == "mysql":
            if not self.db_name:
                raise ValueError("DB_NAME must be set for the mysql backend")
            if not self.db_user:
                raise ValueError("DB_USER must be set for the mysql backend")
        if self.read_block_bytes <= self.max_line_bytes:
            raise ValueError("read_block_bytes must be larger than max_line_bytes")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must not be smaller than retry_initial")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def mysql_params(self) -> dict[str, Any]:
        """The keyword arguments of a MariaDB/MySQL connection (store or report reader)."""
        return {"host": self.db_host, "port": self.db_port, "user": self.db_user or "",
                "password": self.db_pass.get_secret_value(), "database": self.db_name or "",
                "unix_socket": self.db_socket, "timeout": self.db_timeout}

    def redacted(self) -> dict[str, Any]:
        """The effective settings for logs and ``check-config``: the password is never shown."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in _SECRET_FIELDS:
                value = "***" if value.get_secret_value() else ""
            elif name == "status_socket_mode":
                value = f"{value:04o}"
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        if self.backend == "sqlite":
            for name in ("db_host", "db_port", "db_user", "db_pass", "db_name", "db_socket"):
                out.pop(name)
        else:
            out.pop("sqlite_path")
        return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; raise ConfigError with one line that says what to fix.

    Without ``config_file``, the file named by ``LMOD_TRACKER_CONFIG`` (if any) is read.
    """
    where = None
    if config_file is None and os.environ.get("LMOD_TRACKER_CONFIG"):
        config_file = Path(os.environ["LMOD_TRACKER_CONFIG"])
        where = "LMOD_TRACKER_CONFIG"
    if config_file is not None:
        _check_toml(config_file, where)
    token = _CONFIG_FILE.set(config_file)
    env_files = _readable_env_files()
    try:
        return Settings(_env_file=env_files,  # type: ignore[call-arg]
                        **{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except UnicodeDecodeError:
        names = ", ".join(str(p) for p in env_files) or "the environment"
        raise ConfigError(f"{names}: not UTF-8 text; save it as UTF-8") from None
    finally:
        _CONFIG_FILE.reset(token)


def _readable_env_files() -> tuple[Path, ...]:
    """``~/.ingest.env`` (as the lmod_tracking ingest script) and ``./.env``, when readable:
    a home directory the service user cannot enter is not an error."""
    found = []
    home = _home()
    candidates = [Path(".env")] if home is None else [home / ".ingest.env", Path(".env")]
    for path in candidates:
        try:
            if path.is_file() and os.access(path, os.R_OK):
                found.append(path)
        except OSError:
            continue
    return tuple(found)


def _check_toml(path: Path, where: str | None = None) -> None:
    """Read the TOML file; ``where`` names the variable that gave its name, if one did."""
    name = f"{path} ({where})" if where else str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except IsADirectoryError:
        raise ConfigError(f"config file {name} is a directory: name a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {name} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {name} is not UTF-8 (byte {exc.start}): save it as"
                          " UTF-8") from None
    known = set(Settings.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {name}: unknown setting {unknown[0]!r}"
                          f" (known: {', '.join(sorted(known))})")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        if loc in Settings.model_fields:
            loc = f"{loc} (LMOD_TRACKER_{loc.upper()})"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(msg if loc == "settings" else f"{loc}: {msg}")
    return "invalid setting " + "; ".join(parts)

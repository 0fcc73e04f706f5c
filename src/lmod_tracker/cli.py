"""The ``lmod-tracker`` command line.

Exit codes: 0 success, 1 a runtime failure (unreadable file, database down, interrupted),
2 a configuration or usage error, 3 the database refuses us for good (credentials, grants,
schema); in each failure one line on stderr says what to fix.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from lmod_tracker import __version__
from lmod_tracker.config import ConfigError, Settings, load_settings
from lmod_tracker.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_PERMANENT, PermanentError
from lmod_tracker.store.base import SCHEMA_VERSION, StoreError, check_version


def _fail_line(message: str) -> None:
    from lmod_tracker.logs import fail_line  # only on failure: structlog is not free

    fail_line(message)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    try:
        settings = load_settings(ctx.obj["config"], **overrides)
    except ConfigError as exc:
        _fail_line(f"configuration error: {exc}")
        sys.exit(EXIT_CONFIG)
    from lmod_tracker import logs  # here: reports neither log nor pay for structlog's import

    logs.setup(ctx.obj["log_format"] or settings.log_format,
               ctx.obj["log_level"] or settings.log_level)
    return settings


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except ConfigError as exc:
        _fail_line(f"configuration error: {exc}")
        return EXIT_CONFIG
    except PermanentError as exc:
        _fail_line(f"database error: {exc}")
        return EXIT_PERMANENT
    except StoreError as exc:
        _fail_line(f"database error: {exc}")
        return EXIT_FAILURE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lmod-tracker")
# Paths are checked where the settings are read (one line, exit 2), not by click (a usage
# error of several lines that names --config even when LMOD_TRACKER_CONFIG gave the path).
@click.option("--config", "-c", type=click.Path(path_type=Path),
              envvar="LMOD_TRACKER_CONFIG", help="TOML configuration file.")
@click.option("--log-format", type=click.Choice(["auto", "logfmt", "json", "console"]),
              help="Log output format (default: console on a terminal, logfmt otherwise).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def main(ctx: click.Context, config: Path | None, log_format: str | None,
         log_level: str | None) -> None:
    """Turn every Lmod module load in the syslog files into a row in a SQL database."""
    if ctx.get_parameter_source("config") is click.core.ParameterSource.ENVIRONMENT:
        config = None  # load_settings reads LMOD_TRACKER_CONFIG itself and names it in errors
    ctx.obj = {"config": config, "log_format": log_format, "log_level": log_level}


@main.command()
@click.option("--log-dir", type=click.Path(path_type=str),
              help="Directory holding lmod.log and its rotations.")
@click.option("--once", is_flag=True,
              help="Read what is there now, commit it and exit (instead of following).")
@click.pass_context
def run(ctx: click.Context, log_dir: str | None, once: bool) -> None:
    """Follow the log directory and commit every load event (the daemon)."""
    settings = _settings(ctx, log_dir=log_dir)
    from lmod_tracker.service import run_daemon

    config = ctx.obj["config"]

    def reload() -> Settings:
        return load_settings(config, log_dir=log_dir)

    sys.exit(_run(run_daemon(settings, once=once, echo=click.echo if once else None,
                             reload=reload)))


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--from-start", is_flag=True,
              help="Ignore checkpoints and read every file from its first byte"
                   " (rows already stored are still skipped).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")
@click.pass_context
def ingest(ctx: click.Context, files: tuple[Path, ...], from_start: bool,
           progress: bool | None) -> None:
    """Backfill: read FILES (plain, gzip, xz, bzip2 or zstd) once and commit their load events."""
    settings = _settings(ctx)
    from lmod_tracker.service import ingest_files

    if progress is None:
        progress = sys.stderr.isatty()
    sys.exit(_run(ingest_files(settings, list(files), from_start=from_start,
                               progress=progress, echo=click.echo)))


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Print the effective settings (password redacted) and test the database."""
    settings = _settings(ctx)
    for key, value in settings.redacted().items():
        click.echo(f"{key} = {value}")

    async def probe() -> int:
        """What ``run`` checks at start, without creating anything: a failure is reported
        (and exits) as ``run`` reports it."""
        from lmod_tracker.service import make_store

        store = make_store(settings)
        try:
            await store.open()
            version = await store.schema_version()
            if version is not None:
                check_version(version, store.describe())
                await store.probe()  # the grants the writer needs, without writing a row
        finally:
            await store.close()
        if version is None:
            click.echo(f"database: {store.describe()} reachable, no schema yet"
                       " (run `lmod-tracker db init`)")
        else:
            click.echo(f"database: {store.describe()} reachable, schema version {version},"
                       " reading and writing allowed")
        return 0

    sys.exit(_run(probe()))


@main.command()
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Status socket (default: the status_socket setting).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON document.")
@click.pass_context
def status(ctx: click.Context, socket_path: Path | None, as_json: bool) -> None:
    """Show the running daemon's status. Exit 0 healthy, 1 degraded, 2 unreachable."""
    from lmod_tracker.statusclient import fetch_status, render

    if socket_path is None:
        socket_path = Path(_settings(ctx).status_socket)
    try:
        doc = fetch_status(socket_path)
    except OSError as exc:
        _fail_line(f"status socket {socket_path} unreachable: {exc}")
        sys.exit(2)
    click.echo(json.dumps(doc, indent=2) if as_json else render(doc))
    sys.exit(0 if doc.get("state") == "running" else 1)


@main.group()
def db() -> None:
    """Database administration."""


@db.command("init")
@click.pass_context
def db_init(ctx: click.Context) -> None:
    """Create the tables and views (idempotent) and record the schema version."""
    settings = _settings(ctx)

    async def init() -> int:
        from lmod_tracker.service import make_store, prepare

        store = make_store(settings)
        try:
            await prepare(store, settings, attempts=1)
            await store.init_schema()
        finally:
            await store.close()
        click.echo(f"schema version {SCHEMA_VERSION} ready in {store.describe()}")
        return 0

    sys.exit(_run(init()))


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Move an older lmod-tracker schema to this version, in place, keeping the data."""
    settings = _settings(ctx)

    async def upgrade() -> int:
        from lmod_tracker.service import make_store

        store = make_store(settings)
        try:
            await store.open()
            found = await store.schema_version()
            if found is None or found > SCHEMA_VERSION:
                check_version(found, store.describe())  # raises, saying what to do
            applied = await store.upgrade()
            check_version(await store.schema_version(), store.describe())
        finally:
            await store.close()
        if applied:
            click.echo(f"schema upgraded from version {found} to {SCHEMA_VERSION} in"
                       f" {store.describe()}")
        else:
            click.echo(f"schema version {SCHEMA_VERSION} in {store.describe()} is current")
        return 0

    sys.exit(_run(upgrade()))


@db.command("months")
@click.pass_context
def db_months(ctx: click.Context) -> None:
    """Build the monthly rollup (usage_monthly) of every month that has ended and is not
    built, or was changed since (a backfill). The daemon does this hourly; reports are exact
    either way, and faster over long windows once months are built."""
    settings = _settings(ctx)

    async def run() -> int:
        from lmod_tracker.months import build_months
        from lmod_tracker.service import make_store

        store = make_store(settings)
        try:
            await store.open()
            check_version(await store.schema_version(), store.describe())
            built = await build_months(
                store, done=lambda month, rows: click.echo(f"{month[:7]}: {rows} rows"))
        finally:
            await store.close()
        click.echo(f"{len(built)} months built in {store.describe()}")
        return 0

    sys.exit(_run(run()))


from lmod_tracker.reports.cli import report  # noqa: E402

main.add_command(report)


@db.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete loads older than this: Nd, Nw, Nmo, Ny (13mo) or a date YYYY-MM-DD.")
@click.option("--batch-rows", default=10_000, show_default=True,
              type=click.IntRange(100, 1_000_000), help="Ids per transaction.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")
@click.pass_context
def db_prune(ctx: click.Context, older_than: str, batch_rows: int,
             progress: bool | None) -> None:
    """Delete load rows (and rejected lines) older than AGE, in small transactions.

    The daily rollup (usage_daily), the dimension tables and the checkpoints are kept.
    """
    from lmod_tracker.retention import cutoff_text, prune

    try:
        before = cutoff_text(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    settings = _settings(ctx)
    if progress is None:
        progress = sys.stderr.isatty()

    async def run() -> int:
        from lmod_tracker.service import make_store

        store = make_store(settings)
        bar: Any = None

        def advance(n: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = click.progressbar(length=total, label="pruning", file=sys.stderr)
                bar.__enter__()
            bar.update(n)

        try:
            await store.open()
            check_version(await store.schema_version(), store.describe())
            result = await prune(store, before, step=batch_rows,  # type: ignore[arg-type]
                                 progress=advance if progress else None)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
            await store.close()
        click.echo(f"deleted {result.deleted['module_usage']} loads and"
                   f" {result.deleted['rejected_line']} rejected lines older than"
                   f" {before[:19]} UTC from {store.describe()} (usage_daily kept)")
        return 0

    sys.exit(_run(run()))


if __name__ == "__main__":  # pragma: no cover
    main()

"""``lmod-tracker report ...``: read-only usage reports (exit 2 for a bad argument, 3 when the
database refuses us or has no rollup yet, 1 when it cannot be reached)."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lmod_tracker.config import ConfigError, load_settings
from lmod_tracker.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_PERMANENT, PermanentError
from lmod_tracker.logs import fail_line
from lmod_tracker.reports import queries
from lmod_tracker.reports.db import Reader, open_reader
from lmod_tracker.reports.render import to_csv, to_json, to_text, zone
from lmod_tracker.reports.result import Table
from lmod_tracker.reports.spider import parse_spider
from lmod_tracker.reports.window import ReportError, Window, resolve_window
from lmod_tracker.store.base import StoreError

F = TypeVar("F", bound=Callable[..., Any])

#: Default --since per report.
DEFAULT_SINCE = {"top": "30d", "users": "365d", "user": "365d", "trend": "365d",
                 "unused": "180d", "jobs": "30d", "health": "7d", "html": "365d"}


def _common(fn: F) -> F:
    """--since/--until/--cluster/--format/--utc, shared by every report."""
    options = [
        click.option("--since", metavar="WHEN",
                     help="First day: a date (2026-01-31) or an age (30d, 12w, 6mo, 1y)."),
        click.option("--until", metavar="WHEN", help="Last day (included); default today."),
        click.option("--cluster", metavar="NAME", help="Only loads on this cluster."),
        click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
                     default="table", show_default=True, help="Output format."),
        click.option("--utc", is_flag=True, help="Times in UTC (default: the local zone)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fail(message: str, code: int) -> None:
    fail_line(message)
    sys.exit(code)


async def answer(reader: Reader, window: Window, cluster: str | None,
                 ask: Callable[[Reader, queries.Catalog, queries.Scope],
                               Awaitable[Table | list[Table]]]) -> list[Table]:
    """Read the catalog, resolve the cluster and ask, all in one snapshot of the database: the
    statements of a report never mix rows committed between them."""
    async with reader.snapshot():
        cat = await queries.catalog(reader)
        sc = queries.scope(cat, window, cluster)
        result = await ask(reader, cat, sc)
    return result if isinstance(result, list) else [result]


def _execute(ctx: click.Context, report: str, opts: dict[str, Any],
             ask: Callable[[Reader, queries.Catalog, queries.Scope],
                           Awaitable[Table | list[Table]]],
             output: Callable[[list[Table]], None] | None = None) -> None:
    """Open the database read-only, resolve the window and cluster, ask, print."""
    root = ctx.find_root().obj or {}
    try:
        window = resolve_window(opts["since"], opts["until"],
                                default_since=DEFAULT_SINCE[report])
        settings = load_settings(root.get("config"))
    except ReportError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", EXIT_CONFIG)

    async def go() -> list[Table]:
        reader = open_reader(settings)
        try:
            return await answer(reader, window, opts["cluster"], ask)
        finally:
            await reader.close()

    try:
        tables = asyncio.run(go())
    except ReportError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except PermanentError as exc:
        _fail(f"database error: {exc}", EXIT_PERMANENT)
    except StoreError as exc:
        _fail(f"database error: {exc}", EXIT_FAILURE)
    if output is not None:
        output(tables)
        return
    tz = zone(opts["utc"])
    if opts["fmt"] == "csv":
        click.echo(to_csv(tables, tz), nl=False)
    elif opts["fmt"] == "json":
        click.echo(to_json(report, tables, tz), nl=False)
    else:
        tty = sys.stdout.isatty()
        width = shutil.get_terminal_size().columns if tty else None
        click.echo(to_text(tables, tz, width=width, color=tty), nl=False)


def _opts(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in ("since", "until", "cluster", "fmt", "utc")}


def _installed(path: Path | None, modulepath: str | None) -> list[tuple[str, str]] | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(errors="replace")
    except OSError as exc:
        _fail(f"--installed {path}: {exc.strerror}", EXIT_CONFIG)
    roots = (modulepath or os.environ.get("MODULEPATH", "")).split(":")
    try:
        return parse_spider(text, roots)
    except ReportError as exc:
        _fail(f"--installed {path}: {exc}", EXIT_CONFIG)
    raise AssertionError("unreachable")  # pragma: no cover


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def report() -> None:
    """Usage reports (read-only): top, users, user, trend, unused, jobs, health, html.

    Windows are whole UTC days (--since/--until); times are shown in the local zone unless
    --utc. CSV and JSON are stable for scripts (see the README, Reports)."""


@report.command()
@_common
@click.option("--by", type=click.Choice(["package", "version"]), default="package",
              show_default=True, help="One row per package or per module version.")
@click.option("--user", "user_name", metavar="NAME", help="Only this user's loads.")
@click.option("--user-requested", is_flag=True,
              help="Count only loads the user asked for (not dependencies).")
@click.option("--exclude", multiple=True, metavar="REGEX",
              help="Leave out modules whose name/version matches (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows shown (0: all).")
@click.pass_context
def top(ctx: click.Context, by: str, user_name: str | None, user_requested: bool,
        exclude: tuple[str, ...], limit: int, **kwargs: Any) -> None:
    """Most used modules: loads, distinct users, first and last load."""
    opts = _opts(kwargs)
    _execute(ctx, "top", opts, lambda r, c, s: queries.top(
        r, c, s, by=by, user=user_name, user_requested=user_requested,  # type: ignore[arg-type]
        exclude=exclude, limit=limit))


@report.command()
@click.argument("module")
@_common
@click.pass_context
def users(ctx: click.Context, module: str, **kwargs: Any) -> None:
    """Who loaded MODULE (gcc, gcc/12.2.0 or a pattern such as 'gcc/1*'), how often, when."""
    opts = _opts(kwargs)
    _execute(ctx, "users", opts, lambda r, c, s: queries.users(r, c, s, module))


@report.command()
@click.argument("name")
@_common
@click.pass_context
def user(ctx: click.Context, name: str, **kwargs: Any) -> None:
    """What user NAME loads."""
    opts = _opts(kwargs)
    _execute(ctx, "user", opts, lambda r, c, s: queries.user(r, c, s, name))


@report.command()
@click.argument("module", required=False)
@_common
@click.option("--every", type=click.Choice(["day", "week", "month"]), default="month",
              show_default=True, help="Period length (weeks start on Monday).")
@click.pass_context
def trend(ctx: click.Context, module: str | None, every: str, **kwargs: Any) -> None:
    """Loads and distinct users per period, of every module or of MODULE."""
    opts = _opts(kwargs)
    _execute(ctx, "trend", opts,
             lambda r, c, s: queries.trend(r, c, s, module, every))  # type: ignore[arg-type]


@report.command()
@_common
@click.option("--installed", type=click.Path(dir_okay=False, path_type=Path),
              metavar="SPIDER", help="Lmod spider output (-o spider-json or -o list; - for"
              " stdin): list installed versions without loads, loaded ones not installed.")
@click.option("--modulepath", metavar="DIRS",
              help="MODULEPATH the -o list output was made with (default $MODULEPATH).")
@click.pass_context
def unused(ctx: click.Context, installed: Path | None, modulepath: str | None,
           **kwargs: Any) -> None:
    """Module versions without loads in the window (default: the last 180 days)."""
    opts = _opts(kwargs)
    listed = _installed(installed, modulepath)
    _execute(ctx, "unused", opts, lambda r, c, s: queries.unused(r, c, s, listed))


@report.command()
@click.argument("module")
@_common
@click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Newest jobs shown (0: all).")
@click.pass_context
def jobs(ctx: click.Context, module: str, limit: int, **kwargs: Any) -> None:
    """Job ids (where logged) that loaded MODULE, newest first."""
    opts = _opts(kwargs)
    _execute(ctx, "jobs", opts, lambda r, c, s: queries.jobs(r, c, s, module, limit))


@report.command()
@_common
@click.pass_context
def health(ctx: click.Context, **kwargs: Any) -> None:
    """What the tracker knows about itself: instances, files and lag, rejects per reason."""
    opts = _opts(kwargs)
    _execute(ctx, "health", opts, lambda r, c, s: queries.health(r, s))


@report.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="The HTML file to write (replaced atomically).")
@_common
@click.option("--installed", type=click.Path(dir_okay=False, path_type=Path),
              metavar="SPIDER", help="Lmod spider output, for the unused section.")
@click.option("--modulepath", metavar="DIRS",
              help="MODULEPATH the -o list output was made with (default $MODULEPATH).")
@click.option("--top", "top_n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Modules in the top table.")
@click.pass_context
def html(ctx: click.Context, output: Path, installed: Path | None, modulepath: str | None,
         top_n: int, **kwargs: Any) -> None:
    """One self-contained HTML page: top modules, monthly trend, users of the top modules,
    unused versions (with --installed) and the tracker's health."""
    from lmod_tracker.reports import html as html_report

    opts = _opts(kwargs)
    listed = _installed(installed, modulepath)
    tz = zone(opts["utc"])
    ask = functools.partial(html_report.gather, installed=listed, top_n=top_n)

    def write(tables: list[Table]) -> None:
        page = html_report.render(tables, tz)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, output)
        click.echo(f"wrote {output} ({len(page.encode()):,} bytes)")

    _execute(ctx, "html", opts, ask, output=write)

"""Wiring: the daemon (``run``) and the one-shot backfill (``ingest``).

``run`` reads as startup, main loop, shutdown. Signals only set a flag; shutdown stops the
readers, lets the writer commit what is queued within ``shutdown_grace`` seconds and exits 0.
Whatever was not committed is read again at the next start: the checkpoints say where.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import click

from lmod_tracker import faults, logs, months, retention
from lmod_tracker.config import ConfigError, Settings
from lmod_tracker.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PERMANENT,
    PermanentError,
    StoreError,
)
from lmod_tracker.events import Chunk, FileKey
from lmod_tracker.files import (
    FINGERPRINT_BYTES,
    TAIL_BYTES,
    Decompressed,
    damage_of,
    fingerprint_of,
    open_stream,
    path_text,
    resume_point,
    stream_tail,
    tail_hash,
)
from lmod_tracker.follow import LineCutter, parse_cuts
from lmod_tracker.notify import Notifier, watchdog_interval
from lmod_tracker.parse import ParsedBlock, Parser
from lmod_tracker.parseproc import ParseProcess
from lmod_tracker.pipeline import END, GaveUp, Stats, Writer, backoff
from lmod_tracker.status import Monitor, StatusServer
from lmod_tracker.store.base import Store, check_version
from lmod_tracker.watch import Selection, Tailer

log = logs.get("lmod_tracker")


def make_store(settings: Settings) -> Store:
    if settings.backend == "mysql":
        from lmod_tracker.store.mysql import MySQLStore

        return MySQLStore(**settings.mysql_params())
    from lmod_tracker.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path, busy_timeout=settings.db_timeout)


#: Container allocations between two young-generation collections (CPython's default is 700).
#: The hot path makes hundreds of thousands of short-lived tuples a second, all freed by
#: reference counting; with the default the collector runs every 700 of them, looking for
#: cycles there are none of. Cyclic garbage (rare here) is still collected, a little later;
#: memory stays bounded (bench/run.py measures peak RSS; README, Performance, the cost).
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what start-up allocated (never garbage) and collect the young generation less
    often: called once the program is set up, before the hot path."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: taskset, systemd's CPUAffinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


async def start_parsing(parser: Parser, setting: Literal["auto", "on", "off"] = "auto"
                        ) -> ParseProcess | None:
    """A child process for parsing, or None: ``setting`` off, or auto with a single CPU to
    run on (the parsing would only take turns with the rest on it)."""
    if setting == "off" or (setting == "auto" and usable_cpus() < 2):
        return None
    parsing = ParseProcess(parser)
    await parsing.start()
    return parsing if parsing.running else None


def make_parser(settings: Settings) -> Parser:
    return Parser.from_settings(settings)


async def prepare(store: Store, settings: Settings, *, attempts: int | None,
                  stop: asyncio.Event | None = None, stats: Stats | None = None) -> bool:
    """Connect, create the schema if there is none, check its version.

    Retries transient failures (``attempts`` times, or until ``stop``); a permanent one
    (credentials, grants, schema) is raised at once. Returns False if stopped first. Failures
    are recorded in ``stats`` (the status endpoint shows them meanwhile).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            await store.open()
            version = await store.schema_version()
            if version is None:
                log.info("creating schema", database=store.describe())
                await store.init_schema()
                version = await store.schema_version()
            check_version(version, store.describe())
            await store.probe()  # the grants the writer needs, before any line is read
            return True
        except PermanentError:
            await store.reset()
            raise
        except StoreError as exc:
            await store.reset()
            if stats is not None:
                stats.fail(exc)
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff(attempt, settings.retry_initial, settings.retry_max)
            log.warning("database unreachable, retrying", error=str(exc), attempt=attempt,
                        retry_in=round(delay, 2))
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False


def _install_signals(stop: asyncio.Event, hup: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)


#: Settings a SIGHUP applies at run time; every other change needs a restart.
RELOADABLE = ("log_level", "log_format", "batch_size", "batch_timeout", "retry_initial",
              "retry_max", "summary_interval", "shutdown_grace")


async def run_daemon(settings: Settings, *, once: bool = False,
                     echo: Callable[[str], None] | None = None,
                     reload: Callable[[], Settings] | None = None,
                     stop: asyncio.Event | None = None) -> int:
    """The daemon: follow ``log_dir`` and commit every load event until SIGTERM/SIGINT
    (or until ``stop`` is set, for callers that embed it)."""
    missing = False
    try:
        entries = os.scandir(settings.log_dir)
        entries.close()
    except FileNotFoundError:
        if once:
            raise ConfigError(f"log_dir {settings.log_dir} does not exist"
                              " (set LMOD_TRACKER_LOG_DIR or --log-dir)") from None
        missing = True  # rsyslog makes it with the first message (a tmpfs /var/log, a cleanup)
    except OSError as exc:
        problem = ("is not a directory" if isinstance(exc, NotADirectoryError)
                   else f"cannot be read: {exc.strerror}")
        raise ConfigError(f"log_dir {settings.log_dir} {problem}"
                          " (set LMOD_TRACKER_LOG_DIR or --log-dir)") from None
    hup = asyncio.Event()
    if stop is None:
        stop = asyncio.Event()
        _install_signals(stop, hup)
    notifier = Notifier()
    store = make_store(settings)
    log.info("starting", **settings.redacted())
    if missing:
        log.warning("log_dir does not exist yet; following it from when it appears",
                    dir=str(settings.log_dir))
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=settings.queue_chunks)
    stats = Stats()
    # A one-shot run gives up on a database that keeps failing (and says so in its exit
    # code); the daemon never does.
    writer = Writer(store, settings.instance, queue, batch_size=settings.batch_size,
                    batch_timeout=settings.batch_timeout, retry_initial=settings.retry_initial,
                    retry_max=settings.retry_max, max_attempts=5 if once else None,
                    stats=stats)
    parser = make_parser(settings)
    tailer = Tailer(Selection(settings.log_dir, settings.file_glob, tuple(settings.exclude)),
                    store, settings.instance, parser, queue,
                    block_bytes=settings.read_block_bytes, poll_interval=settings.poll_interval,
                    rotate_wait=settings.rotate_wait,
                    start_at_end=settings.start_position == "end", stats=stats)
    monitor = Monitor(store=store, stats=stats, tailer=tailer, queue=queue,
                      db_timeout=settings.db_timeout)
    server = None
    if settings.status_socket and not once:
        server = StatusServer(Path(settings.status_socket), monitor,
                              mode=settings.status_socket_mode, group=settings.status_socket_group)
        try:
            await server.start()
        except (OSError, KeyError) as exc:
            await store.close()
            raise ConfigError(f"status_socket {settings.status_socket}: {exc}") from None
    if not once:
        tailer.start_watching()
    notifier.status("waiting for the database")
    # While the database is not there yet, files are held open from first sight all the
    # same (a file rotated and compressed meanwhile is read through its descriptor), and the
    # status endpoint answers (degraded, with the reason).
    holding = asyncio.create_task(tailer.hold(stop), name="hold")
    ready = False
    try:
        ready = await prepare(store, settings, attempts=5 if once else None, stop=stop,
                              stats=stats)
    finally:
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
        if not ready:  # stopped first, or the database refused us: raised on
            if server is not None:
                await server.close()
            tailer.close()
            await store.close()
    if not ready:
        return 0
    stats.degraded = False
    tailer.parsing = await start_parsing(parser, settings.parse_process)
    tune_gc()
    live = _Live(settings)
    writer_task = asyncio.create_task(writer.run(), name="writer")
    reader_task = asyncio.create_task(tailer.run(stop, once=once), name="reader")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    supervisor = asyncio.create_task(
        _supervise(live, monitor, tailer, writer, store, notifier, hup, reload),
        name="supervisor")
    log.info("running", database=store.describe(), dir=str(settings.log_dir),
             parsing="child process" if tailer.parsing is not None else "in process")
    drained = False
    try:
        done, _ = await asyncio.wait({writer_task, reader_task, stop_task, supervisor},
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in (reader_task, supervisor):
            if task in done:
                task.result()  # these only end early on a bug: raise it
        if writer_task in done:
            with contextlib.suppress(GaveUp, PermanentError):
                writer_task.result()  # reported below; anything else is a bug
    finally:
        monitor.state = "stopping"
        notifier.stopping(f"stopping, {queue.qsize()} chunks queued")
        log.info("stopping", queued=queue.qsize())
        for task in (reader_task, supervisor):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(reader_task, supervisor)
        # --once commits everything unless a signal comes; a signal (now or while draining)
        # leaves the grace period.
        faults.point("drain")
        drained = await _drain(queue, writer_task, stop, live.settings.shutdown_grace,
                               patient=once)
        stop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop_task
        tailer.close()
        if tailer.parsing is not None:
            await tailer.parsing.close()
        if server is not None:
            await server.close()
        await store.close()
        notifier.close()
    log.info("stopped", drained=drained, **_totals(stats))
    if not once:
        return EXIT_OK  # whatever was not committed is read again at the next start
    code, failure = _once_failure(stats, tailer, drained, stop.is_set())
    if failure:
        logs.fail_line(f"{failure}; committed: {stats.events} events into"
                       f" {store.describe()}")
    elif echo is not None:
        echo(f"{stats.events} events committed ({stats.duplicates} duplicates skipped,"
             f" {stats.foreign} foreign, {stats.rejected} rejected lines) into"
             f" {store.describe()}")
    return code


def _once_failure(stats: Stats, tailer: Tailer, drained: bool, stopped: bool
                  ) -> tuple[int, str]:
    """The exit code of a ``run --once`` and why it did not do its whole job."""
    if not drained and stats.last_error_kind == "permanent":
        return EXIT_PERMANENT, f"database error: {stats.last_error}"
    if stopped and not drained:
        return EXIT_FAILURE, "interrupted before everything read was committed"
    if not drained:
        return EXIT_FAILURE, f"database failed: {stats.last_error or 'gave up'}"
    if stopped:
        return EXIT_FAILURE, "interrupted; the files were not all read (the next run goes on)"
    if tailer.unreadable:
        path, why = next(iter(tailer.unreadable.items()))
        more = f" (and {len(tailer.unreadable) - 1} more)" if len(tailer.unreadable) > 1 else ""
        return EXIT_FAILURE, f"{path_text(path)}: {why}{more}"
    return EXIT_OK, ""


class _Live:
    """The settings in force; SIGHUP replaces the reloadable part."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


#: While no batch commits, the database is probed this often, so that an outage or a revoked
#: grant shows on /healthz and in systemd's status line within seconds, not at the next line.
PROBE_INTERVAL = 10.0


async def _supervise(live: _Live, monitor: Monitor, tailer: Tailer, writer: Writer,
                     store: Store, notifier: Notifier, hup: asyncio.Event,
                     reload: Callable[[], Settings] | None) -> None:
    """READY after the first scan, then STATUS, WATCHDOG, probes, summaries and SIGHUP."""
    await tailer.first_scan.wait()
    monitor.state = "running"
    monitor.sample()
    notifier.ready(monitor.summary())
    log.info("ready", files=len(tailer.followers))
    watchdog = watchdog_interval()
    tick = min(watchdog or 1.0, 1.0)
    loop = asyncio.get_running_loop()
    next_status = next_summary = next_probe = loop.time()
    next_summary += live.settings.summary_interval
    next_probe += PROBE_INTERVAL
    probing: asyncio.Task[None] | None = None
    next_retention = loop.time()  # at start, then once a day
    pruning: asyncio.Task[None] | None = None
    next_months = loop.time()  # at start (once caught up), then hourly
    building: asyncio.Task[None] | None = None
    last_events = monitor.stats.events
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hup.wait(), tick)
            if hup.is_set():
                hup.clear()
                _reload(live, writer, reload)
            now = loop.time()
            monitor.sample()
            if watchdog is not None:
                if monitor.writer_stuck():
                    log.error("database call hung past its timeout; not feeding the watchdog",
                              timeout=live.settings.db_timeout)
                else:
                    notifier.watchdog()
            if probing is not None and probing.done():
                probing = None
            if now >= next_probe and probing is None:
                next_probe = now + PROBE_INTERVAL
                if not writer.busy and time.time() - monitor.stats.last_commit >= PROBE_INTERVAL:
                    probing = asyncio.create_task(_probe(store, writer))
            if now >= next_retention and (pruning is None or pruning.done()):
                next_retention = now + RETENTION_INTERVAL
                if live.settings.retention:
                    pruning = asyncio.create_task(_prune(store, live.settings))
            # Months are built once the files are read to their end (a backlog being read
            # would unmark them again), at the latest one interval late.
            if now >= next_months and (building is None or building.done()) and (
                    now >= next_months + months.INTERVAL
                    or not any(f["lag_bytes"] for f in monitor.files())):
                next_months = now + months.INTERVAL
                building = asyncio.create_task(_build_months(store))
            if now >= next_status:
                notifier.status(monitor.summary())
                next_status = now + 5.0
            if now >= next_summary:
                stats = monitor.stats
                log.info("summary", files=len(tailer.followers), state=monitor.current_state(),
                         events_per_s=round(monitor.rate(60), 1),
                         new_events=stats.events - last_events, **_totals(stats))
                last_events = stats.events
                next_summary = now + live.settings.summary_interval
    finally:
        for task in (probing, pruning, building):
            if task is not None:
                task.cancel()


#: How often the daemon applies the ``retention`` setting (and once at start).
RETENTION_INTERVAL = 24 * 3600.0


async def _prune(store: Store, settings: Settings) -> None:
    """Delete facts older than ``retention`` (short transactions; the writer goes on)."""
    try:
        result = await retention.apply_retention(store, settings)
    except StoreError as exc:
        log.warning("retention: pruning failed, will try again tomorrow", error=str(exc))
        return
    if result is not None:
        log.info("retention: old rows deleted", retention=settings.retention,
                 before=result.before, **result.deleted)


async def _build_months(store: Store) -> None:
    """Build the monthly rollup of months that ended (one short transaction each)."""
    try:
        await months.build_months(  # months without a load are built quietly
            store, done=lambda month, rows: (log.info if rows else log.debug)(
                "monthly rollup built", month=month[:7], rows=rows))
    except StoreError as exc:
        log.warning("monthly rollup: building failed, will try again in an hour",
                    error=str(exc))


async def _probe(store: Store, writer: Writer) -> None:
    """Check an idle database; the writer's state says what the probe found."""
    stats = writer.stats
    try:
        await store.probe()
    except StoreError as exc:
        if writer.busy:
            return  # the writer's own result is the better judge
        if not stats.degraded or stats.last_error != str(exc):
            log.error("database check failed", error=str(exc), kind=exc.kind)
        stats.fail(exc)
        await store.reset()
        return
    if stats.degraded and not writer.busy:
        log.info("database check passed; reachable again")
        stats.degraded = False


def _reload(live: _Live, writer: Writer, reload: Callable[[], Settings] | None) -> None:
    if reload is None:
        log.warning("SIGHUP ignored: no configuration to reload")
        return
    try:
        new = reload()
    except ConfigError as exc:
        log.error("reload failed, keeping the running configuration", error=str(exc))
        return
    old = live.settings
    applied = {k: getattr(new, k) for k in RELOADABLE if getattr(new, k) != getattr(old, k)}
    restart = sorted(k for k in type(new).model_fields
                     if k not in RELOADABLE and getattr(new, k) != getattr(old, k))
    if "log_level" in applied or "log_format" in applied:
        logs.setup(new.log_format, new.log_level)
    writer.batch_size = new.batch_size
    writer.batch_timeout = new.batch_timeout
    writer.retry_initial = new.retry_initial
    writer.retry_max = new.retry_max
    kept = {k: getattr(old, k) for k in restart}
    live.settings = new.model_copy(update=kept)
    log.info("configuration reloaded", applied=applied or None,
             needs_restart=restart or None)


async def _drain(queue: asyncio.Queue[Chunk | None], writer_task: asyncio.Task[None],
                 stop: asyncio.Event, grace: float, *, patient: bool) -> bool:
    """Let the writer commit what is queued within ``grace`` seconds; when ``patient``,
    without limit until ``stop`` is set and then for ``grace`` more seconds. True when
    everything read was committed."""
    if writer_task.done():
        return queue.empty() and not writer_task.cancelled() and \
            writer_task.exception() is None

    async def finish() -> None:
        await queue.put(END)
        await writer_task

    finishing = asyncio.ensure_future(finish())
    stopping = asyncio.ensure_future(stop.wait() if patient else asyncio.sleep(0))
    try:
        await asyncio.wait({finishing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not finishing.done():
            await asyncio.wait({finishing}, timeout=grace)
    finally:
        stopping.cancel()
    if finishing.done():
        return finishing.exception() is None
    log.warning("shutdown grace period over; uncommitted lines will be read again at the"
                " next start", grace=grace)
    finishing.cancel()
    writer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await writer_task
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await finishing
    return False


def _totals(stats: Stats) -> dict[str, object]:
    return {"events": stats.events, "duplicates": stats.duplicates, "rejected": stats.rejected,
            "foreign": stats.foreign, "batches": stats.batches, "retries": stats.retries}


# -- ingest ------------------------------------------------------------------------------


@dataclass
class FileReport:
    path: str
    events: int = 0
    duplicates: int = 0
    foreign: int = 0
    rejected: int = 0
    resumed_at: int = 0
    held_back: int = 0
    #: the file could not be read at all
    error: str = ""
    #: why it could not be read to its end (what came before is committed)
    damage: str = ""
    #: something ignored that a careful reader should know of
    note: str = ""


async def ingest_files(settings: Settings, paths: list[Path], *, from_start: bool,
                       progress: bool, echo: Callable[[str], None]) -> int:
    """Backfill: read each file once (plain or compressed), commit with checkpoints. Exit
    code 1 when a file could not be read to its end (the others are read all the same)."""
    store = make_store(settings)
    try:
        await prepare(store, settings, attempts=3)
    except BaseException:
        await store.close()
        raise  # the command line reports it (exit 3 permanent, 1 otherwise)
    parser = make_parser(settings)
    parsing = await start_parsing(parser, settings.parse_process)
    tune_gc()
    failed = False
    try:
        for path in paths:
            report = FileReport(path_text(str(path)))
            try:
                await _ingest_one(store, settings, parser, parsing, path, report,
                                  from_start=from_start, progress=progress)
            except OSError as exc:
                report.error = f"cannot read: {exc.strerror or exc}"
            except GaveUp as exc:
                logs.fail_line(f"{path_text(str(path))}: database failed: {exc}")
                return EXIT_FAILURE
            failed = failed or bool(report.error or report.damage)
            echo(_report_line(report))
    finally:
        if parsing is not None:
            await parsing.close()
        await store.close()
    return 1 if failed else 0


def _report_line(r: FileReport) -> str:
    if r.error:
        return f"{r.path}: {r.error}"
    resumed = f" (resumed at byte {r.resumed_at})" if r.resumed_at else ""
    held = (f"; unterminated last line held back ({r.held_back} bytes)" if r.held_back
            else "")
    note = f"; {r.note}" if r.note else ""
    damage = (f"; damaged: {r.damage}; the complete lines before it are committed" if r.damage
              else "")
    return (f"{r.path}: {r.events} events, {r.duplicates} duplicates skipped, {r.foreign} foreign,"
            f" {r.rejected} rejected{resumed}{held}{note}{damage}")


async def _ingest_one(store: Store, settings: Settings, parser: Parser,
                      parsing: ParseProcess | None, path: Path, report: FileReport, *,
                      from_start: bool, progress: bool) -> None:
    stream, raw = open_stream(str(path))
    with contextlib.ExitStack() as stack:
        stack.callback(raw.close)
        stack.callback(stream.close)
        st = os.fstat(raw.fileno())
        head = await asyncio.to_thread(stream.read, FINGERPRINT_BYTES)
        if not head:
            report.damage = damage_of(stream)
            return
        fingerprint = fingerprint_of(head) or fingerprint_of(head + b"\n")
        assert fingerprint is not None
        key = FileKey(st.st_dev, st.st_ino, fingerprint)
        candidates = [] if from_start else await store.checkpoint(settings.instance, key)
        proven = await asyncio.to_thread(
            resume_point, candidates, lambda off: stream_tail(stream, off), None)
        offset = 0 if proven is None else proven.offset
        before = await asyncio.to_thread(_seek_after, stream, offset)
        report.resumed_at = offset

        queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=settings.queue_chunks)
        stats = Stats()
        writer = Writer(store, settings.instance, queue, batch_size=settings.batch_size,
                        batch_timeout=settings.batch_timeout,
                        retry_initial=settings.retry_initial, retry_max=settings.retry_max,
                        max_attempts=5, stats=stats)
        writer_task = asyncio.create_task(writer.run())
        bar = None
        if progress:
            bar = stack.enter_context(click.progressbar(
                length=st.st_size, label=path.name, file=sys.stderr))
        try:
            report.held_back, report.damage = await _feed(
                stream, raw, before, offset, key, str(path), parser, parsing, settings, queue,
                writer_task, bar)
            await queue.put(END)
            await writer_task
        finally:
            if not writer_task.done():
                writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer_task
        report.events, report.duplicates = stats.events, stats.duplicates
        report.foreign, report.rejected = stats.foreign, stats.rejected
        if isinstance(stream, Decompressed) and stream.trailing:
            report.note = (f"{stream.trailing} bytes of trailing garbage after the"
                           f" {stream.compression.name} data ignored")


def _seek_after(stream: BinaryIO, offset: int) -> bytes:
    """Position ``stream`` at ``offset`` (proven to exist); the bytes just before it."""
    start = max(0, offset - TAIL_BYTES)
    stream.seek(start)
    before = stream.read(offset - start)
    stream.seek(offset)
    return before


#: Blocks being parsed at once by ``ingest`` (the child parses one while the next is read).
_IN_FLIGHT = 2


async def _feed(stream: object, raw: object, before: bytes, pos: int, key: FileKey, path: str,
                parser: Parser, parsing: ParseProcess | None, settings: Settings,
                queue: asyncio.Queue[Chunk | None], writer_task: asyncio.Task[None],
                bar: object) -> tuple[int, str]:
    """Cut, parse and queue the rest of ``stream``: the bytes of its unterminated last line
    left unread (the checkpoint stays before them), and why the stream ended before its end
    ('' when it did not).

    A read error or damaged compressed data ends the stream after its last complete line:
    what was read before is queued and committed, and the line cut short is held back, not
    given up (the file may yet be completed, by a copy or a compression still running).

    With a parse process, a few blocks are parsed while the next are read; chunks are queued
    in file order all the same.
    """
    cutter = LineCutter(parser.max_line_bytes, parser.is_ours)
    read = stream.read  # type: ignore[attr-defined]
    tell = raw.tell  # type: ignore[attr-defined]
    # A compressed stream is finished: its unterminated last line is given up, as a reject.
    # A plain file may still be written to: its last line waits for its newline.
    finished = stream is not raw
    damage = ""
    shown = 0
    carry = b""
    pending: deque[tuple[asyncio.Future[ParsedBlock], int, int, str]] = deque()

    async def queue_oldest() -> bool:
        """Queue the oldest parsed block; False when the writer has stopped."""
        parsing_done, end, nbytes, tail = pending.popleft()
        parsed = await parsing_done
        chunk = Chunk(key, path, end, parsed.events, parsed.rejects, parsed.foreign, nbytes,
                      time.time(), tail)
        put = asyncio.ensure_future(queue.put(chunk))
        await asyncio.wait({put, writer_task}, return_when=asyncio.FIRST_COMPLETED)
        if writer_task.done():
            put.cancel()
            return False
        return True

    try:
        while True:
            try:
                block = await asyncio.to_thread(read, settings.read_block_bytes)
            except OSError as exc:
                block = b""
                damage = f"read error after byte {pos + len(carry)} ({exc.strerror or exc})"
            data = carry + block if carry else block
            end = not block
            if end and not damage:
                damage = damage_of(stream)
            cut = cutter.cut(data, pos, final=end and finished and not damage)
            carry = data[cut.consumed:]
            pos += cut.consumed
            if cut.consumed:
                seg = data[max(0, cut.consumed - TAIL_BYTES):cut.consumed]
                before = seg if len(seg) == TAIL_BYTES else (before + seg)[-TAIL_BYTES:]
                if parsing is not None:
                    parsed: asyncio.Future[ParsedBlock] = asyncio.ensure_future(
                        parsing.parse_cuts([cut]))
                else:
                    parsed = asyncio.get_running_loop().create_future()
                    parsed.set_result(parse_cuts(parser, [cut]))
                pending.append((parsed, pos, cut.consumed, tail_hash(before)))
                if len(pending) >= _IN_FLIGHT and not await queue_oldest():
                    break
            if bar is not None:
                now = tell()
                bar.update(now - shown)  # type: ignore[attr-defined]
                shown = now
            if end:
                while pending:
                    if not await queue_oldest():
                        break
                break
    finally:
        for parsing_done, *_ in pending:
            parsing_done.cancel()
    if writer_task.done():
        writer_task.result()  # raises GaveUp or the permanent error
    return cutter.held_back, damage

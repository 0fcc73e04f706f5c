"""The reader side of the daemon: which files to follow, and reading them into the queue.

watchdog (inotify where available) wakes the loop as soon as a matching file changes; a stat
sweep every ``poll_interval`` catches what events miss (NFS, overflowed queues). Files are
followed by identity (device, inode, first-line fingerprint), not by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lmod_tracker import faults, logs
from lmod_tracker.events import Chunk, FileKey
from lmod_tracker.files import (
    Change,
    path_text,
    read_fingerprint,
    read_tail,
    resume_point,
    start_offset,
)
from lmod_tracker.follow import Follower, Read, parse_cuts
from lmod_tracker.parse import Parser
from lmod_tracker.parseproc import ParseProcess
from lmod_tracker.pipeline import Stats
from lmod_tracker.store.base import Store, StoreError

log = logs.get("lmod_tracker.reader")

#: Problems that persist (an unreadable file, a missing directory) are logged every 5 minutes.
_repeats = logs.Repeats(300.0)

_GROWTH = frozenset({"modified", "closed", "opened", "closed_no_write"})

#: After a file event, wait this long so that a burst of writes is read in one pass.
_COALESCE = 0.03

#: Chunks read from one file before the others get a turn.
_FAIR_SHARE = 4


@dataclass(frozen=True)
class Selection:
    """Which names in the log directory are followed."""

    directory: Path
    pattern: str
    exclude: tuple[str, ...]

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern) and not any(
            fnmatch.fnmatchcase(name, x) for x in self.exclude)

    def scan(self) -> dict[tuple[int, int], str]:
        """(device, inode) -> path of every regular file that matches now."""
        found: dict[tuple[int, int], str] = {}
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            if _repeats.allow(("list", self.directory)):
                log.error("cannot list log directory", dir=str(self.directory),
                          error=exc.strerror)
            return found
        for entry in entries:
            if not self.matches(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue  # vanished between listing and stat
            if stat.S_ISREG(st.st_mode):
                found[(st.st_dev, st.st_ino)] = entry.path
        return found


class _Wake(FileSystemEventHandler):
    """Bridges watchdog's thread into the event loop: any relevant event sets ``event``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tailer: Tailer) -> None:
        self.loop = loop
        self.tailer = tailer

    def on_any_event(self, event: FileSystemEvent) -> None:
        for p in (event.src_path, getattr(event, "dest_path", "")):
            name = os.path.basename(os.fsdecode(p)) if p else ""
            if name and self.tailer.selection.matches(name):
                # Growth only needs a read; anything else (created, moved, deleted) a rescan.
                rescan = event.event_type not in _GROWTH
                self.loop.call_soon_threadsafe(self.tailer.notify, rescan)
                return


class Tailer:
    """Follows the matching files of one directory and feeds their chunks to ``queue``."""

    def __init__(self, selection: Selection, store: Store, instance: str, parser: Parser,
                 queue: asyncio.Queue[Chunk | None], *, block_bytes: int, poll_interval: float,
                 rotate_wait: float, start_at_end: bool = False,
                 stats: Stats | None = None, parsing: ParseProcess | None = None) -> None:
        self.selection = selection
        self.store = store
        self.instance = instance
        self.parser = parser
        self.queue = queue
        self.block_bytes = block_bytes
        self.poll_interval = poll_interval
        self.rotate_wait = rotate_wait
        self.start_at_end = start_at_end
        self.stats = stats if stats is not None else Stats()
        #: parses in a child process when given; else lines are parsed on a worker thread
        self.parsing = parsing
        #: files that could not be opened or read (path -> reason), for ``run --once``'s exit
        self.unreadable: dict[str, str] = {}
        self.followers: dict[tuple[int, int], Follower] = {}
        self.wake = asyncio.Event()
        self.rescan = True
        self._pending = False  # a matching file waits for its first complete line
        self._last_scan = 0.0
        self.first_scan = asyncio.Event()
        self.scans = 0
        self._observer: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    def start_watching(self) -> None:
        """Start watchdog on the directory (falls back to the stat sweep alone on failure)."""
        try:
            observer = Observer()
            observer.schedule(_Wake(asyncio.get_running_loop(), self),
                              str(self.selection.directory), recursive=False)
            observer.start()
            self._observer = observer
        except Exception as exc:
            log.warning("directory events unavailable, polling only", error=str(exc),
                        poll_interval=self.poll_interval)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        for f in self.followers.values():
            f.close()
        self.followers.clear()

    def notify(self, rescan: bool) -> None:
        """A file event (from watchdog's thread, through the loop)."""
        self.rescan = self.rescan or rescan
        self.wake.set()

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Scan and read until ``stop`` is set (or, with ``once``, until everything is read).

        A file growing costs a read; the directory is scanned, and every file looked at
        closely (fingerprint, truncation), on events that change names and every
        ``poll_interval`` seconds.
        """
        while not stop.is_set():
            self.wake.clear()
            now = time.monotonic()
            full = (self.rescan or self._pending
                    or now - self._last_scan >= self.poll_interval)
            if full:
                self.rescan = False
                self._last_scan = now
                await self.scan()
            await self.read_available(stop, full=full)
            if once:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_interval)
                await asyncio.sleep(_COALESCE)

    # -- scanning --------------------------------------------------------------------------

    async def scan(self) -> None:
        """Match the directory against the followed identities; start and drop followers."""
        seen = await asyncio.to_thread(self.selection.scan)
        first = self.scans == 0
        self._pending = False
        self.scans += 1
        for ident, path in seen.items():
            follower = self.followers.get(ident)
            if follower is not None:
                if follower.path != path:
                    log.info("file renamed", old=path_text(follower.path), new=path_text(path))
                    follower.path = path
                follower.present = True
            else:
                await self._start(ident, path, at_end=first and self.start_at_end)
        now = time.monotonic()
        for ident, follower in list(self.followers.items()):
            if ident in seen:
                continue
            if follower.present:
                follower.present = False
                follower.idle_since = now
                log.info("file gone from the directory, reading it to the end",
                         file=path_text(follower.path), offset=follower.offset)
        self.first_scan.set()

    async def _start(self, ident: tuple[int, int], path: str, *, at_end: bool) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.unreadable[path] = f"cannot open: {exc.strerror}"
            if _repeats.allow(("open", path, exc.errno)):
                log.warning("cannot open log file", file=path_text(path), error=exc.strerror)
            return
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ident:
                os.close(fd)  # replaced between scan and open; the next scan sees the new one
                return
            fingerprint = read_fingerprint(fd)
            if fingerprint is None:
                os.close(fd)  # first line not complete yet: look again at the next wake-up
                self._pending = True
                return
            key = FileKey(st.st_dev, st.st_ino, fingerprint)
            faults.point("lookup")
            candidates = await self.store.checkpoint(self.instance, key)
            proven = resume_point(candidates, lambda off: read_tail(fd, off), st.st_size)
        except StoreError as exc:
            os.close(fd)
            if _repeats.allow(("checkpoint", path)):
                log.warning("cannot read checkpoint, will retry", file=path_text(path),
                            error=str(exc))
            return
        except OSError as exc:
            os.close(fd)
            self.unreadable[path] = f"cannot read: {exc.strerror}"
            if _repeats.allow(("read", path, exc.errno)):
                log.warning("cannot read log file", file=path_text(path), error=exc.strerror)
            return
        self.unreadable.pop(path, None)
        checkpoint = None if proven is None else proven.offset
        # start_position = "end" skips the history of files never seen before, not of a file
        # whose content changed under its checkpoint.
        at_end = at_end and not any(c.exact for c in candidates)
        offset = start_offset(checkpoint, st.st_size, new_file_at_end=at_end)
        follower = Follower(path, fd, st.st_dev, st.st_ino, key, offset, self.parser,
                            self.block_bytes)
        self.followers[ident] = follower
        if proven is not None:
            origin = "checkpoint" if proven.exact else "checkpoint of a copy"
        else:
            origin = "end" if offset else "beginning"
        log.info("following file", file=path_text(path), inode=st.st_ino, offset=offset,
                 size=st.st_size, start=origin,
                 unproven=sum(1 for c in candidates if c is not proven) or None)
        if proven is not None and proven.exact:
            # What the database says was committed, so that status shows no lag for a file
            # read to its end before a restart.
            self.stats.files.setdefault(key, (path, offset, ""))
        elif origin == "end" or proven is not None:
            # Record the starting point now (start_position = "end": lines written while the
            # daemon is stopped are read at the next start; a copy: its own checkpoint).
            await self.queue.put(Chunk(key, path, offset, [], [], 0, 0, time.time(),
                                       follower.tail))

    # -- reading ---------------------------------------------------------------------------

    async def read_available(self, stop: asyncio.Event, *, full: bool = True) -> None:
        """Read every follower up to its end, a fair share at a time, into the queue.

        Unless ``full``, a follower whose size is what it has read is skipped without a look
        at its content.
        """
        progress = True
        while progress and not stop.is_set():
            progress = False
            for ident, follower in list(self.followers.items()):
                if not full and follower.key is not None and follower.present:
                    try:
                        if os.fstat(follower.fd).st_size == follower.offset:
                            continue
                    except OSError:
                        pass
                for _ in range(_FAIR_SHARE):
                    if self.parsing is None:
                        chunk = await asyncio.to_thread(self._next_chunk, follower)
                    else:
                        read = await asyncio.to_thread(self._next_read, follower)
                        chunk = None if read is None else follower.chunk(
                            read, await self.parsing.parse_cuts(read.cuts))
                    if chunk is None:
                        break
                    faults.point("read")
                    await self.queue.put(chunk)
                    progress = True
                    if stop.is_set():
                        return
                else:
                    continue
                self._maybe_drop(ident, follower)

    def _next_chunk(self, follower: Follower) -> Chunk | None:
        read = self._next_read(follower)
        return None if read is None else follower.chunk(read, parse_cuts(self.parser, read.cuts))

    def _next_read(self, follower: Follower) -> Read | None:
        """Look at the file and read and cut its next chunk (on a worker thread)."""
        try:
            change = follower.check()
            if change is not Change.NONE:
                log.warning("file content replaced, reading it from the start",
                            file=path_text(follower.path), change=change.value)
            garbage = follower.garbage_bytes
            read = follower.read()
            if read is None and not follower.present and self._expired(follower):
                read = follower.read(final=True)
            self.stats.garbage_bytes += follower.garbage_bytes - garbage
            return read
        except OSError as exc:
            self.unreadable[follower.path] = f"read failed: {exc.strerror}"
            if _repeats.allow(("read", follower.path, exc.errno)):
                log.warning("read failed", file=path_text(follower.path), error=exc.strerror)
            return None

    def _expired(self, follower: Follower) -> bool:
        return time.monotonic() - follower.idle_since >= self.rotate_wait

    def _maybe_drop(self, ident: tuple[int, int], follower: Follower) -> None:
        if follower.present or not self._expired(follower):
            return
        try:
            size = os.fstat(follower.fd).st_size
        except OSError:
            size = follower.offset
        if size <= follower.offset:
            log.info("file fully read, closing", file=path_text(follower.path),
                     offset=follower.offset)
            follower.close()
            del self.followers[ident]

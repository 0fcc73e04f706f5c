"""The reader side of the daemon: which files to follow, and reading them into the queue.

watchdog (inotify where available) wakes the loop as soon as a matching file changes; a stat
sweep every ``poll_interval`` catches what events miss (NFS, overflowed queues). Files are
followed by identity (device, inode, first-line fingerprint), not by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import resource
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lmod_tracker import faults, logs
from lmod_tracker.events import Chunk, FileKey
from lmod_tracker.files import (
    MAGIC_BYTES,
    Change,
    compression_of,
    damage_of,
    open_stream,
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

    def scan(self) -> dict[tuple[int, int], Seen] | None:
        """Every regular file that matches now, by (device, inode); None when the directory
        cannot be listed (then nothing is concluded about the files: out of descriptors is not
        "every file is gone")."""
        found: dict[tuple[int, int], Seen] = {}
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            if _repeats.allow(("list", self.directory)):
                log.error("cannot list log directory", dir=str(self.directory),
                          error=exc.strerror)
            return None
        for entry in entries:
            if not self.matches(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue  # vanished between listing and stat
            if stat.S_ISREG(st.st_mode):
                found[(st.st_dev, st.st_ino)] = Seen(entry.path, st.st_mtime, st.st_size)
        return found

    def set_aside_since(self, since: float) -> list[str]:
        """Files the pattern matches but ``exclude`` leaves out (compressed copies), changed
        after ``since`` (Unix time) and not empty: they may hold lines written after that."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        found = []
        for entry in entries:
            if not fnmatch.fnmatchcase(entry.name, self.pattern) or self.matches(entry.name):
                continue
            try:
                st = entry.stat()
                if not stat.S_ISREG(st.st_mode) or st.st_mtime <= since:
                    continue
                stream, raw = open_stream(entry.path)
                try:  # damaged at its start reads as empty: worth a look all the same
                    empty = not stream.read(1) and not damage_of(stream)
                finally:
                    stream.close()
                    raw.close()
            except Exception:  # unreadable or damaged: worth a look all the same
                empty = False
            if not empty:
                found.append(entry.path)
        return sorted(found)


class Seen(NamedTuple):
    """A file as the directory scan saw it."""

    path: str
    mtime: float
    size: int


class _Wake(FileSystemEventHandler):
    """Bridges watchdog's thread into the event loop: any relevant event sets ``event``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tailer: Tailer) -> None:
        self.loop = loop
        self.tailer = tailer

    def on_any_event(self, event: FileSystemEvent) -> None:
        if (event.is_directory and event.event_type in ("deleted", "moved")
                and os.fsdecode(event.src_path) == str(self.tailer.selection.directory)):
            # The watched directory itself is gone (inotify watches end with it): the next
            # scan watches the one that takes its place.
            self.loop.call_soon_threadsafe(self.tailer.lost_watch)
            return
        for p in (event.src_path, getattr(event, "dest_path", "")):
            name = os.path.basename(os.fsdecode(p)) if p else ""
            if name and self.tailer.selection.matches(name):
                # Growth only needs a read; anything else (created, moved, deleted) a rescan.
                rescan = event.event_type not in _GROWTH
                self.loop.call_soon_threadsafe(self.tailer.notify, rescan)
                return


def default_max_open() -> int:
    """Files held open at most: the descriptor limit (LimitNOFILE) less a reserve for the
    database, the status socket, the parse process and inotify."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(8, soft - 64)


class Tailer:
    """Follows the matching files of one directory and feeds their chunks to ``queue``."""

    def __init__(self, selection: Selection, store: Store, instance: str, parser: Parser,
                 queue: asyncio.Queue[Chunk | None], *, block_bytes: int, poll_interval: float,
                 rotate_wait: float, start_at_end: bool = False,
                 stats: Stats | None = None, parsing: ParseProcess | None = None,
                 max_open: int | None = None) -> None:
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
        #: files held open at most (below the process's descriptor limit); more wait their turn
        self.max_open = max_open if max_open is not None else default_max_open()
        #: files seen but not opened at the last scan because ``max_open`` were open
        self.waiting = 0
        #: files read to their end and closed to make room: (dev, ino) -> size then
        #: (size, mtime) then: a file is opened again when either changes (it grew, or was
        #: rewritten in place or replaced under the same inode with as many bytes)
        self.parked: dict[tuple[int, int], tuple[int, float]] = {}
        self.followers: dict[tuple[int, int], Follower] = {}
        self.wake = asyncio.Event()        # the reader has something to do
        self._scan_due = asyncio.Event()   # the watcher should list the directory
        self.rescan = True
        self._pending = False  # a matching file waits for its first complete line
        self._last_scan = 0.0
        self.first_scan = asyncio.Event()
        self.scans = 0
        self._observer: Any = None
        self._watching = False
        #: (device, inode) of the directory the observer watches, None when it watches none
        self._watched: tuple[int, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start_watching(self) -> None:
        """Start watchdog on the directory (falls back to the stat sweep alone on failure).
        The directory may not exist yet, or be removed and made again: each scan that finds
        another directory than the one watched starts watching it (:meth:`_rewatch`)."""
        self._watching = True
        self._rewatch()

    def _rewatch(self) -> None:
        try:
            st = os.stat(self.selection.directory)
        except OSError:
            return  # not there (yet): the stat sweep looks again
        if (st.st_dev, st.st_ino) == self._watched:
            return
        self._stop_observer()
        try:
            observer = Observer()
            observer.schedule(_Wake(asyncio.get_running_loop(), self),
                              str(self.selection.directory), recursive=False)
            observer.start()
            self._observer = observer
            self._watched = (st.st_dev, st.st_ino)
        except Exception as exc:
            if _repeats.allow(("watch", self.selection.directory)):
                log.warning("directory events unavailable, polling only", error=str(exc),
                            poll_interval=self.poll_interval)

    def lost_watch(self) -> None:
        """The watched directory was removed or renamed (from the observer, via the loop)."""
        self._watched = None
        self.notify(True)

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        self._watched = None

    def close(self) -> None:
        self._stop_observer()
        for f in self.followers.values():
            f.close()
        self.followers.clear()

    def notify(self, rescan: bool) -> None:
        """A file event (from watchdog's thread, through the loop)."""
        if rescan:
            self._scan_due.set()
        self.wake.set()

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Watch and read until ``stop`` is set (or, with ``once``, until everything is read).

        Two loops. The watcher lists the directory on events that change names and every
        ``poll_interval`` seconds and opens every new file at once: it never waits for the
        database or the queue, so a file rotated and compressed while the database is down or
        the queue is full is held all the same. The reader resolves where each held file
        starts (database), and reads: a file growing costs a read; every file is looked at
        closely (fingerprint, truncation, tail) after a scan and every ``poll_interval``.
        """
        await self.scan()  # the first look, and where each file starts (then READY)
        await self._warn_set_aside()
        if once:
            await self.read_available(stop)
            return
        watcher = asyncio.create_task(self._watch(stop), name="watcher")
        try:
            while not stop.is_set():
                self.wake.clear()
                now = time.monotonic()
                full = (self.rescan or self._pending
                        or now - self._last_scan >= self.poll_interval)
                if full:
                    self.rescan = False
                    self._last_scan = now
                    await self._resolve_pending()
                await self.read_available(stop, full=full)
                if watcher.done():
                    watcher.result()  # it only ends early on a bug: raise it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_interval)
                    await asyncio.sleep(_COALESCE)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def hold(self, stop: asyncio.Event) -> None:
        """Until cancelled (the database answers) or ``stop``: open every file as it appears,
        without reading any (where each starts is the database's to say)."""
        await self._look()
        await self._watch(stop)

    async def _watch(self, stop: asyncio.Event) -> None:
        """The watcher loop: look at the directory, open what is new, wake the reader."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan_due.wait(), self.poll_interval)
                await asyncio.sleep(_COALESCE)
            self._scan_due.clear()
            await self._look()
            self.rescan = True
            self.wake.set()

    # -- scanning --------------------------------------------------------------------------

    async def scan(self) -> None:
        """Look at the directory, open what is new, and resolve where held files start."""
        await self._look()
        await self._resolve_pending()
        self.first_scan.set()

    async def _warn_set_aside(self) -> None:
        """At start: compressed copies written to after this instance's last commit may hold
        lines that were compressed (or moved out of the followed names) while it was stopped,
        before it could read them; ``ingest`` reads exactly what of them is missing."""
        try:
            since = await self.store.last_commit(self.instance)
        except StoreError:
            return
        if since is None:
            return
        files = await asyncio.to_thread(self.selection.set_aside_since, since.timestamp())
        if files:
            shown = " ".join(path_text(f) for f in files[:5]) + (" ..." if len(files) > 5 else "")
            log.warning("files left out of following (exclude) changed after this daemon's last"
                        " commit and may hold lines it never read: give them to lmod-tracker"
                        " ingest, which reads only what is missing", count=len(files),
                        files=shown, last_commit=since.isoformat(timespec="seconds"))

    async def _resolve_pending(self) -> None:
        self._pending = False
        for follower in list(self.followers.values()):
            if not follower.resolved:
                await self._resolve(follower)

    async def _look(self) -> None:
        """Match the directory against the followed identities; open, park, mark gone.

        A file is opened as soon as it is seen (oldest first, up to ``max_open``), whatever the
        database is doing: the descriptor keeps it readable through a rename, a compression or
        a deletion. Where to start reading it is resolved afterwards, when its first line is
        complete and the database answers.
        """
        seen = await asyncio.to_thread(self.selection.scan)
        first = self.scans == 0
        self.scans += 1
        if seen is None:  # the directory could not be listed: conclude nothing
            self._pending = True
            return
        if self._watching:
            self._rewatch()
        new = []
        for ident, entry in seen.items():
            follower = self.followers.get(ident)
            if follower is not None:
                if follower.path != entry.path:
                    log.info("file renamed", old=path_text(follower.path),
                             new=path_text(entry.path))
                    follower.path = entry.path
                follower.present = True
            elif self.parked.get(ident) != (entry.size, entry.mtime):
                new.append((entry.mtime, ident, entry.path))
        for ident in [i for i in self.parked if i not in seen]:
            del self.parked[ident]
        now = time.monotonic()
        for ident, follower in list(self.followers.items()):
            if ident in seen:
                continue
            if follower.present:
                follower.present = False
                follower.idle_since = now
                log.info("file gone from the directory, reading it to the end",
                         file=path_text(follower.path), offset=follower.offset)
        self.waiting = 0
        for n, (_, ident, path) in enumerate(sorted(new)):
            if len(self.followers) >= self.max_open and not self._make_room():
                self.waiting = len(new) - n
                self._pending = True
                if _repeats.allow(("max_open",)):
                    log.warning("too many files to hold open; the others wait their turn",
                                open=len(self.followers), waiting=self.waiting,
                                max_open=self.max_open)
                break
            self._open(ident, path, at_end=first and self.start_at_end)

    def _make_room(self) -> bool:
        """Close the longest-idle present file that is read to its end and committed (it is
        opened again when it grows); False when none can be closed."""
        now = time.monotonic()
        best: tuple[float, tuple[int, int], float] | None = None
        for ident, f in self.followers.items():
            if not (f.resolved and f.present and f.key is not None
                    and now - f.idle_since >= self.rotate_wait):
                continue
            committed = self.stats.files.get(f.key)
            if committed is None or committed[1] != f.offset:
                continue
            try:
                st = os.fstat(f.fd)
            except OSError:
                continue
            if st.st_size != f.offset:
                continue
            if best is None or f.idle_since < best[0]:
                best = (f.idle_since, ident, st.st_mtime)
        if best is None:
            return False
        follower = self.followers[best[1]]
        self._release(follower, parked=(follower.offset, best[2]))
        return True

    def _release(self, follower: Follower, *, parked: tuple[int, float] | None = None) -> None:
        """Close a held file and stop following it; ``parked``: the (size, mtime) it is known
        by, so that it is opened again only when it changes."""
        ident = (follower.dev, follower.ino)
        follower.close()
        self.followers.pop(ident, None)
        if parked is not None:
            self.parked[ident] = parked

    def _open(self, ident: tuple[int, int], path: str, *, at_end: bool) -> None:
        """Hold the file open from now on; where to read from is resolved later."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors: hold no more than what is open now.
                self.max_open = max(1, len(self.followers))
            self.unreadable[path] = f"cannot open: {exc.strerror}"
            if _repeats.allow(("open", path, exc.errno)):
                log.warning("cannot open log file", file=path_text(path), error=exc.strerror)
            self._pending = True
            return
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)  # replaced between scan and open; the next scan sees the new one
            return
        follower = Follower(path, fd, st.st_dev, st.st_ino, None, 0, self.parser,
                            self.block_bytes)
        follower.resolved = False
        follower.at_end = at_end
        self.followers[ident] = follower
        self.parked.pop(ident, None)

    async def _resolve(self, follower: Follower) -> None:
        """Find where to start reading a held file: its first line must be complete (its
        fingerprint), and the database must say what was committed of it."""
        path, fd = follower.path, follower.fd
        try:
            st = os.fstat(fd)
            size = st.st_size
            compression = compression_of(os.pread(fd, MAGIC_BYTES, 0))
            if compression is not None:
                self._skip_compressed(follower, compression.name, st)
                return
            fingerprint = read_fingerprint(fd)
            if fingerprint is None:
                if follower.present or not self._expired(follower):
                    self._pending = True  # first line not complete yet: look again soon
                    return
                self._close_incomplete(follower, size)
                return
            key = FileKey(follower.dev, follower.ino, fingerprint)
            faults.point("lookup")
            candidates = await self.store.checkpoint(self.instance, key)
            proven = resume_point(candidates, lambda off: read_tail(fd, off), size)
        except StoreError as exc:
            self._pending = True
            if _repeats.allow(("checkpoint", path)):
                log.warning("cannot read checkpoint; the file is held open meanwhile",
                            file=path_text(path), error=str(exc))
            return
        except OSError as exc:
            self.unreadable[path] = f"cannot read: {exc.strerror}"
            if _repeats.allow(("read", path, exc.errno)):
                log.warning("cannot read log file", file=path_text(path), error=exc.strerror)
            return
        self.unreadable.pop(path, None)
        checkpoint = None if proven is None else proven.offset
        # start_position = "end" skips the history of files never seen before, not of a file
        # whose content changed under its checkpoint.
        at_end = follower.at_end and not any(c.exact for c in candidates)
        offset = start_offset(checkpoint, size, new_file_at_end=at_end)
        follower.key = key
        follower.offset = offset
        follower.tail = read_tail(fd, offset)
        follower.resolved = True
        if proven is not None:
            origin = "checkpoint" if proven.exact else "checkpoint of a copy"
        else:
            origin = "end" if offset else "beginning"
        unproven = sum(1 for c in candidates if c is not proven)
        log.info("following file", file=path_text(path), inode=follower.ino, offset=offset,
                 size=size, start=origin, **({"unproven": unproven} if unproven else {}))
        if proven is not None and proven.exact:
            # What the database says was committed, so that status shows no lag for a file
            # read to its end before a restart.
            self.stats.files.setdefault(key, (path, offset, ""))
        elif origin == "end" or proven is not None:
            # Record the starting point now (start_position = "end": lines written while the
            # daemon is stopped are read at the next start; a copy: its own checkpoint).
            await self.queue.put(Chunk(key, path, offset, [], [], 0, 0, time.time(),
                                       follower.tail))

    def _skip_compressed(self, follower: Follower, name: str, st: os.stat_result) -> None:
        """A compressed file under a followed name (a custom ``compressext``): its bytes are
        not lines. Closed and parked (looked at again only if it changes), with a warning."""
        if _repeats.allow(("compressed", follower.path)):
            log.warning("compressed file skipped: add its name to exclude, and read it with"
                        " lmod-tracker ingest", file=path_text(follower.path), format=name)
        self._release(follower, parked=(st.st_size, st.st_mtime))

    def _close_incomplete(self, follower: Follower, size: int) -> None:
        """A file gone from the directory for ``rotate_wait`` without one complete line: no
        writer is left to complete it and there is nothing to read, so its descriptor is
        released (held, every quiet rotation of an empty file would keep one for good)."""
        if size:
            log.warning("file left the directory with only an incomplete first line, not"
                        " stored; closing", file=path_text(follower.path), bytes=size)
        else:
            log.info("empty file gone from the directory, closing",
                     file=path_text(follower.path))
        self.unreadable.pop(follower.path, None)
        self._release(follower)

    # -- reading ---------------------------------------------------------------------------

    async def read_available(self, stop: asyncio.Event, *, full: bool = True) -> None:
        """Read every follower up to its end, a fair share at a time, into the queue.

        Unless ``full``, a follower whose size is what it has read is skipped without a look
        at its content.
        """
        progress = True
        while progress and not stop.is_set():
            progress = False
            for follower in list(self.followers.values()):
                if not follower.resolved:
                    continue
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
                self._maybe_drop(follower)

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

    def _maybe_drop(self, follower: Follower) -> None:
        if follower.present or not follower.resolved or not self._expired(follower):
            return
        try:
            size = os.fstat(follower.fd).st_size
        except OSError:
            size = follower.offset
        if size <= follower.offset:
            log.info("file fully read, closing", file=path_text(follower.path),
                     offset=follower.offset)
            self._release(follower)

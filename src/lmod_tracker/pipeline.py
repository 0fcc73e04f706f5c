"""The writer side: batches chunks from the bounded queue and commits them.

Readers ``await queue.put(chunk)``; when the database is slow or down the queue fills and the
readers wait, so memory is bounded by ``queue_chunks`` x ``read_block_bytes`` whatever the
backlog. A batch is committed whole (rows, rejects, checkpoints) or not at all.

This is the one place where each class of database failure (errors.py) is handled:

* transient: the same batch is retried with exponential backoff and jitter, until it commits
  or the caller gives up (``max_attempts``; the daemon never does);
* permanent: retried too, slowly (``retry_max``), logged as an error, the daemon degraded
  until an operator fixes it;
* data: the rows the server refuses are found by bisecting the batch and kept as rejects with
  the server's message; every other row commits. Sub-batches commit in their own transactions
  with no checkpoint, the checkpoints with the last one: a crash in between re-reads rows the
  natural key already holds, so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field

from lmod_tracker import faults, logs
from lmod_tracker.errors import DataError, Kind, PermanentError, StoreError
from lmod_tracker.events import Chunk, FileKey, LoadEvent, Rejected
from lmod_tracker.files import path_text
from lmod_tracker.store.base import Batch, CommitResult, Store, cut

log = logs.get("lmod_tracker.writer")

#: Put into the queue by the reader side to say "nothing more will come".
END: None = None


@dataclass
class Stats:
    """Counters for the status endpoint, the summary log line and ``ingest``'s report."""

    events: int = 0          # rows inserted
    duplicates: int = 0      # valid lines already in the database
    rejected: int = 0        # lines with our tag that could not be parsed
    foreign: int = 0         # lines of other programs
    batches: int = 0
    retries: int = 0
    bytes: int = 0
    last_commit: float = 0.0  # time.time()
    last_error: str = ""
    last_error_kind: Kind | None = None
    degraded: bool = False
    poisoned: int = 0        # valid-looking rows the database refused, kept as rejects
    garbage_bytes: int = 0   # NUL bytes skipped (holes left by copytruncate or a crash)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    #: per file content: (path, committed offset, time of its last committed event)
    files: dict[FileKey, tuple[str, int, str]] = field(default_factory=dict)

    def fail(self, exc: StoreError) -> None:
        self.last_error = str(exc)
        self.last_error_kind = exc.kind
        self.degraded = True

    def add(self, result: CommitResult, batch: Batch, poisoned: int = 0) -> None:
        self.events += result.inserted
        self.duplicates += result.duplicates
        self.rejected += len(batch.rejects) + poisoned
        self.poisoned += poisoned
        self.foreign += batch.foreign
        self.bytes += batch.nbytes
        self.batches += 1
        self.last_commit = time.time()
        if batch.first_read_at:
            self.latencies.append(self.last_commit - batch.first_read_at)
        for key, (path, offset, _tail) in batch.checkpoints.items():
            last = batch.last_event.get(key) or self.files.get(key, ("", 0, ""))[2]
            self.files.pop(key, None)
            self.files[key] = (path, offset, last)
        if len(self.files) > 1024:  # keep the newest; followers of old rotations are gone
            for key in list(self.files)[:-512]:
                del self.files[key]


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): doubling from ``initial``
    up to ``maximum``, with jitter so that many daemons do not retry in step. Any number of
    attempts (an outage of days) stays at ``maximum``."""
    return min(maximum, initial * 2.0 ** min(attempt - 1, 64)) * random.uniform(0.5, 1.0)


class GaveUp(Exception):
    """The writer stopped retrying (only when a maximum number of attempts was set)."""


class Writer:
    """Takes chunks from ``queue`` until :data:`END`, commits them in batches."""

    def __init__(self, store: Store, instance: str, queue: asyncio.Queue[Chunk | None], *,
                 batch_size: int, batch_timeout: float, retry_initial: float = 0.5,
                 retry_max: float = 30.0, max_attempts: int | None = None,
                 stats: Stats | None = None) -> None:
        self.store = store
        self.instance = instance
        self.queue = queue
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.stats = stats if stats is not None else Stats()
        self._reject_log = logs.RateLimit(burst=20, period=60.0)
        self._permanent_log = logs.RateLimit(burst=1, period=300.0)
        #: a batch is being committed or retried (the idle probe leaves the database alone)
        self.busy = False

    async def run(self) -> None:
        """Commit batches until END has been taken from the queue and everything before it.

        Two batches overlap: while one commits (the database busy), the next is collected and
        its rows prepared (Python busy). Commits still happen one at a time, in order.
        """
        committing: asyncio.Task[None] | None = None
        try:
            done = False
            while not done:
                batch, done = await self._collect()
                prepared = self.store.prepare(batch) if batch.events else None
                if committing is not None:
                    await committing
                    committing = None
                if batch.checkpoints:
                    committing = asyncio.create_task(self._commit(batch, prepared))
            if committing is not None:
                await committing
        finally:
            if committing is not None and not committing.done():
                committing.cancel()

    async def _collect(self) -> tuple[Batch, bool]:
        batch = Batch()
        chunk = await self.queue.get()
        if chunk is END:
            return batch, True
        batch.add(chunk)
        deadline = time.monotonic() + self.batch_timeout
        while len(batch) < self.batch_size:
            try:
                chunk = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    chunk = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if chunk is END:
                return batch, True
            batch.add(chunk)
        return batch, False

    async def _commit(self, batch: Batch, prepared: object | None) -> None:
        self.busy = True
        try:
            try:
                result = await self._commit_retrying(batch, prepared)
                faults.point("commit")
                poisoned: list[tuple[FileKey, str, Rejected]] = []
            except DataError as exc:
                result, poisoned = await self._isolate(batch, exc)
        finally:
            self.busy = False
        if self.stats.degraded:
            log.info("database reachable again")
            self.stats.degraded = False
        self.stats.add(result, batch, len(poisoned))
        for key, path, rej in [*batch.rejects, *poisoned]:
            if self._reject_log.allow():
                log.warning("rejected line", file=path_text(path), offset=rej.offset,
                            reason=rej.reason, fingerprint=key.fingerprint)

    async def _commit_retrying(self, batch: Batch, prepared: object | None = None
                               ) -> CommitResult:
        """Commit ``batch``, retrying transient and permanent failures; DataError passes."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.store.commit(self.instance, batch, prepared)
            except DataError:
                raise
            except StoreError as exc:
                self.stats.retries += 1
                self.stats.fail(exc)
                permanent = isinstance(exc, PermanentError)
                if self.max_attempts is not None:  # a one-shot run: no operator to wait for
                    if permanent:
                        raise
                    if attempt >= self.max_attempts:
                        raise GaveUp(str(exc)) from None
                delay = backoff(attempt, self.retry_max if permanent else self.retry_initial,
                                self.retry_max)
                if permanent:
                    if self._permanent_log.allow():
                        log.error("the database refuses the writes; fix it and they resume",
                                  error=str(exc), retry_in=round(delay, 2))
                else:
                    log.warning("commit failed, will retry", error=str(exc), attempt=attempt,
                                retry_in=round(delay, 2), lines=len(batch) + len(batch.rejects))
                await self.store.reset()
                await asyncio.sleep(delay)
                prepared = None  # ids may be stale after a failure: resolve them again

    async def _isolate(self, batch: Batch, first: DataError
                       ) -> tuple[CommitResult, list[tuple[FileKey, str, Rejected]]]:
        """Commit every row of ``batch`` the database takes; the others become rejects."""
        log.warning("the database refused a value; isolating the rows it refuses",
                    error=str(first), lines=len(batch))
        inserted = duplicates = 0
        poisoned: list[tuple[FileKey, str, Rejected]] = []

        async def part(lo: int, hi: int, retried: bool = False) -> None:
            nonlocal inserted, duplicates
            try:
                r = await self._commit_retrying(Batch(events=batch.events[lo:hi]))
            except DataError as exc:
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    await part(lo, mid)
                    await part(mid, hi)
                elif not retried:  # a racing writer's duplicate key resolves on a retry
                    await part(lo, hi, retried=True)
                else:
                    poisoned.append(_poison(batch, lo, exc))
                return
            inserted += r.inserted
            duplicates += r.duplicates

        if batch.events:
            await part(0, len(batch.events))
        rest = Batch(rejects=[*batch.rejects, *poisoned], checkpoints=batch.checkpoints)
        try:
            r = await self._commit_retrying(rest)
        except DataError as exc:  # our own reject rows refused: keep the positions at least
            log.error("rejected lines could not be stored; committing the checkpoints alone",
                      error=str(exc), lines=len(rest.rejects))
            r = await self._commit_retrying(Batch(checkpoints=batch.checkpoints))
        return CommitResult(inserted, duplicates, r.rejected), poisoned


def _poison(batch: Batch, index: int, exc: DataError) -> tuple[FileKey, str, Rejected]:
    """A reject for ``batch.events[index]``, which the database refused.

    Its offset is the start of the chunk it was read in plus its index there, which is unique
    per file content and the same each time the chunk is read again.
    """
    key, path, start = batch.origin(index)
    first = max(i for i, *_ in batch.spans if i <= index)
    e: LoadEvent = batch.events[index]
    raw = (f"user={e.user} module={e.package}/{e.version} path={e.path or ''} host={e.host}"
           f" jobid={e.jobid or ''} load_time={e.load_time}")
    reason = cut(f"refused by the database: {exc}", "reason")
    return key, path, Rejected(start + index - first, reason,
                               raw.encode("utf-8", "backslashreplace")[:4096])

"""Parsing in a child process, beside the database work of the main process.

A catch-up spends about a third of its CPU parsing. Python threads take turns on one core (the
GIL), so a parser thread cannot run while the main thread builds rows and packs them for the
database; a child process can, on the other core. The main process still reads and cuts lines
(cheap, and where the rules about partial and damaged lines live: follow.py); the child only
turns runs of complete lines into events, exactly as :meth:`Parser.parse_block` does in process.

The protocol, over the child's stdin and stdout: each message is an 8-byte little-endian
length and a payload. The first request is the pickled :class:`~lmod_tracker.parse.Parser`
(the child parses with the very same settings); each later request is a ``marshal``-ed list of
``(offset, bytes)`` runs, answered in order by a ``marshal``-ed
``(events as tuples, rejects as tuples, foreign)``. When the child cannot be started or dies,
parsing goes on in process (a warning says so): never a lost or stuck line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import marshal
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Iterable
from typing import BinaryIO

from lmod_tracker import logs
from lmod_tracker.events import LoadEvent, Rejected
from lmod_tracker.follow import Cut, parse_cuts
from lmod_tracker.parse import ParsedBlock, Parser

log = logs.get("lmod_tracker.parse")

_LEN = struct.Struct("<Q")
#: A parse request that takes longer than this means the child is hung: parse in process.
_TIMEOUT = 60.0
_event = functools.partial(tuple.__new__, LoadEvent)
_reject = functools.partial(tuple.__new__, Rejected)


class ParseProcess:
    """Parses runs of complete lines in a child process (or in process as a fallback).

    Several requests may be in flight; answers come back in the order asked.
    """

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self._proc: asyncio.subprocess.Process | None = None
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one writer of requests at a time

    @property
    def running(self) -> bool:
        return self._proc is not None

    async def start(self) -> None:
        """Start the child; on failure, log it and parse in process."""
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lmod_tracker.parseproc",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=1 << 20)
            assert proc.stdin is not None
            payload = pickle.dumps(self.parser)
            proc.stdin.write(_LEN.pack(len(payload)) + payload)
            await proc.stdin.drain()
        except (OSError, pickle.PicklingError) as exc:
            log.warning("parsing in a child process unavailable; parsing in process",
                        error=str(exc))
            return
        self._proc = proc
        self._reader = asyncio.create_task(self._read_answers(), name="parse-answers")

    async def parse_cuts(self, cuts: list[Cut]) -> ParsedBlock:
        """:func:`lmod_tracker.follow.parse_cuts`, with the parsing done by the child."""
        runs = [run for cut in cuts for run in cut.lines]
        if self._proc is None or not runs:
            return await asyncio.to_thread(parse_cuts, self.parser, cuts)
        try:
            answer = await asyncio.wait_for(self._ask(marshal.dumps(runs)), _TIMEOUT)
        except (OSError, EOFError, ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                ValueError) as exc:
            await self._give_up(exc)
            return await asyncio.to_thread(parse_cuts, self.parser, cuts)
        events, rejects, foreign = marshal.loads(answer)
        parsed = ParsedBlock(list(map(_event, events)), list(map(_reject, rejects)), foreign)
        return _merge(cuts, parsed)

    async def _ask(self, payload: bytes) -> bytes:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise EOFError("the parse process is gone")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        async with self._lock:
            self._waiting.append(future)
            proc.stdin.write(_LEN.pack(len(payload)) + payload)
            await proc.stdin.drain()
        return await future

    async def _read_answers(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        try:
            while True:
                (n,) = _LEN.unpack(await out.readexactly(_LEN.size))
                answer = await out.readexactly(n)
                if self._waiting:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(answer)
        except (asyncio.IncompleteReadError, OSError) as exc:
            while self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(EOFError(f"the parse process ended: {exc}"))

    async def _give_up(self, exc: BaseException) -> None:
        if self._proc is not None:
            log.warning("the parse process failed; parsing in process from now on",
                        error=str(exc) or type(exc).__name__)
        await self.close()

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


def _merge(cuts: Iterable[Cut], parsed: ParsedBlock) -> ParsedBlock:
    """The child's parse of the runs of ``cuts``, with the cutter's own rejects and foreign
    lines merged in, in file order (as :func:`lmod_tracker.follow.parse_cuts`)."""
    rejects = parsed.rejects
    foreign = parsed.foreign
    extra = False
    for cut in cuts:
        if cut.rejects:
            rejects = [*rejects, *cut.rejects]
            extra = True
        foreign += cut.foreign
    if extra:
        rejects.sort(key=lambda r: r.offset)
    return ParsedBlock(parsed.events, rejects, foreign)


# -- the child -----------------------------------------------------------------------------


def _read_message(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    return data if len(data) == n else None


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    first = _read_message(stdin)
    if first is None:
        return
    parser: Parser = pickle.loads(first)
    while (request := _read_message(stdin)) is not None:
        events: list[tuple[object, ...]] = []
        rejects: list[tuple[object, ...]] = []
        foreign = 0
        for at, block in marshal.loads(request):
            parsed = parser.parse_block(block, at)
            # (equal values are one object each: marshal sends them once, see parse_block)
            events.extend(map(tuple, parsed.events))
            rejects.extend(map(tuple, parsed.rejects))
            foreign += parsed.foreign
        answer = marshal.dumps((events, rejects, foreign))
        stdout.write(_LEN.pack(len(answer)) + answer)
        stdout.flush()


def main() -> None:
    # The parent decides when this process ends (end of its stdin); a Ctrl-C or a systemd
    # stop reaches the parent, which drains and then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)


if __name__ == "__main__":
    main()

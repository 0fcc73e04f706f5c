"""Model test of the reader side, after Vector's file-source model tests: random sequences of
writes, rotations (rename with a late reopen, rename out of the followed names, copytruncate),
partial lines and crashes, run against the real Tailer, Writer and SQLite store on real files.
Whatever the sequence, the database must end up with every complete line exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmod_tracker.events import Chunk
from lmod_tracker.parse import Parser
from lmod_tracker.pipeline import END, Writer
from lmod_tracker.store.sqlite import SQLiteStore
from lmod_tracker.watch import Selection, Tailer

LINE = "Apr 27 03:22:57 n1 ModuleUsageTracking: user=u{n} module=m/1 host=h time={n}.5\n"

_POLL = st.tuples(st.just("poll"), st.just(0))
_COMMON = [
    st.tuples(st.just("append"), st.integers(1, 30)),
    st.tuples(st.just("partial"), st.just(0)),
    _POLL, _POLL, _POLL,  # the daemon looks often
    st.tuples(st.just("rename"), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0)),
    st.tuples(st.just("copytruncate"), st.just(0)),
]
# A file renamed out of the followed names can only be finished by the process that has it
# open, so crashes are combined with the other rotations only (see README, rotations).
ops = st.one_of(
    st.lists(st.one_of(*_COMMON, st.tuples(st.just("crash"), st.just(0))),
             min_size=1, max_size=40),
    st.lists(st.one_of(*_COMMON, st.tuples(st.just("rename_away"), st.just(0))),
             min_size=1, max_size=40),
)


class Model:
    """The log writer (an O_APPEND descriptor, like rsyslog) and the lines it completed."""

    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "lmod.log"
        self.fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.next = 1
        self.complete = 0
        self.partial = ""
        self.rotations = 0
        self.in_file = 0  # complete lines in the file the descriptor points to

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.in_file = 0

    def write(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def append(self, n: int) -> None:
        for _ in range(n):
            line = LINE.format(n=self.next)
            self.next += 1
            if self.partial:  # finish the half-written line first
                self.write(self.partial)
                self.partial = ""
                self.complete += 1
                self.in_file += 1
            self.write(line)
            self.complete += 1
            self.in_file += 1

    def start_partial(self) -> None:
        if self.partial:
            return
        line = LINE.format(n=self.next)
        self.next += 1
        half = len(line) // 2
        self.write(line[:half])
        self.partial = line[half:]


async def _scenario(root: Path, steps: list[tuple[str, int]]) -> tuple[int, int]:
    log_dir = root / "log"
    log_dir.mkdir()
    model = Model(log_dir)
    store = SQLiteStore(root / "t.db")
    await store.open()
    await store.init_schema()

    def start() -> tuple[Tailer, asyncio.Task[None], asyncio.Queue[Chunk | None]]:
        queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=4)
        tailer = Tailer(Selection(log_dir, "lmod.log*", ("*.gz",)), store, "model", Parser(),
                        queue, block_bytes=4096, poll_interval=0.0, rotate_wait=3600.0)
        writer = Writer(store, "model", queue, batch_size=50, batch_timeout=0.01)
        return tailer, asyncio.create_task(writer.run()), queue

    async def poll(tailer: Tailer) -> None:
        never = asyncio.Event()
        await tailer.scan()
        await tailer.read_available(never)

    tailer, task, queue = start()
    try:
        for op, n in steps:
            if op == "append":
                model.append(n)
            elif op == "partial":
                model.start_partial()
            elif op == "poll":
                await poll(tailer)
            elif op in ("rename", "rename_away"):
                # The daemon has seen the file before it is rotated (it follows it); the writer
                # keeps writing to the old inode until "reopen". A file leaving the followed
                # names must have been seen with a complete first line to be followed at all.
                if op == "rename_away" and model.partial:
                    model.append(1)
                await poll(tailer)
                model.rotations += 1
                name = f"lmod.log-{model.rotations}" if op == "rename" else \
                    f"old-{model.rotations}"
                if model.log.exists():
                    os.rename(model.log, log_dir / name)
                    if op == "rename_away" and model.in_file == 0:
                        model.reopen()  # nobody could have followed it: write elsewhere
            elif op == "reopen":
                if model.partial:  # rsyslog never leaves half a line behind on reopen
                    model.append(1)
                model.reopen()
            elif op == "copytruncate":
                if model.partial:
                    model.append(1)
                if model.log.exists():
                    model.rotations += 1
                    shutil.copyfile(model.log, log_dir / f"lmod.log-{model.rotations}")
                    os.truncate(model.log, 0)
                    model.in_file = 0
            elif op == "crash":
                task.cancel()  # whatever is queued or uncommitted is lost with the process
                await asyncio.gather(task, return_exceptions=True)
                tailer.close()
                tailer, task, queue = start()
        if model.partial:
            model.append(1)
        tailer.rotate_wait = 0.0  # the writer is done: vanished files may be closed now
        for _ in range(4):  # settle: read everything, expire vanished files
            await poll(tailer)
            await asyncio.sleep(0.02)
        await queue.put(END)
        await task
        tailer.close()
        rows = await store._run(lambda: store._connect().execute(
            "SELECT COUNT(*), COUNT(DISTINCT load_time) FROM module_usage").fetchone())
    finally:
        os.close(model.fd)
        if not task.done():
            task.cancel()
        await store.close()
    assert rows[0] == rows[1]
    return model.complete, rows[0]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops)
# Cases worth keeping whatever the random draw: a truncated file seen empty, then refilled;
# a rename while a line is half written; a crash between a rotation and the reopen.
@example([("append", 5), ("poll", 0), ("copytruncate", 0), ("poll", 0), ("append", 5)])
@example([("append", 3), ("poll", 0), ("partial", 0), ("rename", 0), ("append", 2),
          ("reopen", 0), ("append", 2)])
@example([("append", 4), ("rename", 0), ("append", 3), ("crash", 0), ("reopen", 0),
          ("append", 1), ("copytruncate", 0), ("crash", 0), ("append", 2)])
def test_every_complete_line_once_whatever_happens(steps: list[tuple[str, int]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="lt-model-"))
    try:
        written, stored = asyncio.run(_scenario(root, steps))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert stored == written, steps

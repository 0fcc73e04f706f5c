"""Parsing in a child process gives exactly what parsing in process gives, and a child that
dies costs nothing but speed."""

from __future__ import annotations

import json
import marshal
import os
import random
import signal
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from lmod_tracker.follow import LineCutter, parse_cuts
from lmod_tracker.parse import Parser
from lmod_tracker.parseproc import ParseProcess
from tests.support.databases import sqlite_handle
from tests.support.loggen import write_log


def _cuts(data: bytes, parser: Parser, block: int) -> list[list]:  # type: ignore[type-arg]
    """The file cut as the daemon cuts it, block by block."""
    cutter = LineCutter(parser.max_line_bytes, parser.is_ours)
    out, pos, carry = [], 0, b""
    for i in range(0, len(data) + 1, block):
        piece = carry + data[i:i + block]
        cut = cutter.cut(piece, pos, final=i + block >= len(data))
        carry = piece[cut.consumed:]
        pos += cut.consumed
        out.append([cut])
    return out


async def test_same_result_as_in_process(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    write_log(log, 20_000, seed=5)
    rng = random.Random(5)
    data = bytearray(log.read_bytes())
    for _ in range(40):  # damage: NUL runs, invalid UTF-8, over-long lines
        at = rng.randrange(len(data))
        data[at:at] = rng.choice([b"\0" * 300, b"\xff\xfe", b"x" * 9000 + b"\n"])
    parser = Parser(["ModuleUsageTracking", "OldTag"])
    proc = ParseProcess(parser)
    await proc.start()
    assert proc.running
    try:
        for cuts in _cuts(bytes(data), parser, 65536):
            assert await proc.parse_cuts(cuts) == parse_cuts(parser, cuts)
    finally:
        await proc.close()


async def test_a_dead_child_falls_back_to_parsing_in_process(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    write_log(log, 3000, seed=6)
    parser = Parser()
    proc = ParseProcess(parser)
    await proc.start()
    assert proc._proc is not None
    batches = _cuts(log.read_bytes(), parser, 32768)
    try:
        assert await proc.parse_cuts(batches[0]) == parse_cuts(parser, batches[0])
        os.kill(proc._proc.pid, signal.SIGKILL)
        for cuts in batches[1:]:
            assert await proc.parse_cuts(cuts) == parse_cuts(parser, cuts)
        assert not proc.running
    finally:
        await proc.close()


def test_no_child_left_behind(tmp_path: Path) -> None:
    """`run --once` ends its parse process with itself (children are found by a marker in
    their environment: other lmod-tracker processes may run on the machine)."""
    from tests.support.daemon import cli
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    counts = write_log(log_dir / "lmod.log", 5000, seed=7)
    marker = f"LMT_PARSEPROC_TEST={os.getpid()}-{tmp_path.name}"
    env = {"HOME": str(tmp_path), "LMOD_TRACKER_SQLITE_PATH": str(tmp_path / "t.db"),
           marker.split("=")[0]: marker.split("=")[1]}
    proc = cli(env, "run", "--once", "--log-dir", str(log_dir))
    assert proc.stdout.startswith(f"{counts.valid} events committed")
    assert not _processes_with(marker)


def _processes_with(marker: str) -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in environ:
            found.add(int(pid))
    return found


async def test_repeated_values_cross_the_pipe_once_and_are_shared(tmp_path: Path) -> None:
    """The child sends each distinct user, module, host, path and cluster once per answer:
    the parent's events share those strings (half the memory of a batch)."""
    log = tmp_path / "lmod.log"
    write_log(log, 5000, seed=7)
    parser = Parser()
    proc = ParseProcess(parser)
    await proc.start()
    try:
        cuts = _cuts(log.read_bytes(), parser, 1 << 20)[0]
        parsed = await proc.parse_cuts(cuts)
    finally:
        await proc.close()
    assert parsed == parse_cuts(parser, cuts)
    events = parsed.events
    for field in ("user", "package", "version", "host", "path"):
        values = [getattr(e, field) for e in events]
        objects = {id(v) for v in values}
        assert len(objects) == len(set(values)) < len(values), field
    assert len({id(e.load_time) for e in events}) == len(events)  # unique values: not shared


def test_shared_values_halve_what_the_parent_holds(tmp_path: Path) -> None:
    """parse_block gives equal values as one object: the events of a 128 KiB block (as the
    daemon reads) hold at most 60 % of the memory of the same events with a string per field,
    and their answer from the child is at most 70 % of the size."""
    log = tmp_path / "lmod.log"
    write_log(log, 5000, seed=8)
    data = log.read_bytes()[:128 * 1024]
    events = Parser().parse_block(data[:data.rfind(b"\n") + 1], 0).events
    shared = marshal.dumps([tuple(e) for e in events])
    copied = marshal.dumps([tuple(_copy(v) for v in e) for e in events])
    assert len(shared) < 0.7 * len(copied)
    assert _bytes_held(lambda: marshal.loads(shared)) <= 0.6 * _bytes_held(
        lambda: marshal.loads(copied))


def _copy(value: object) -> object:
    return (value + ".")[:-1] if isinstance(value, str) else value


def _bytes_held(make: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        kept = make()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return size


@pytest.mark.parametrize(("setting", "ncpus", "where"), [
    ("auto", 1, "in process"),     # one CPU to run on: no child
    ("auto", 2, "child process"),
    ("on", 1, "child process"),
    ("off", 2, "in process"),
])
def test_parse_process_setting(tmp_path: Path, setting: str, ncpus: int, where: str) -> None:
    """parse_process decides, and auto counts the CPUs the daemon may run on (its affinity),
    not those of the machine; every load is committed either way."""
    from tests.support.daemon import cli
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        pytest.fail("this test needs two CPUs to run on")
    cpus = set(mine[:ncpus])
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    counts = write_log(log_dir / "lmod.log", 3000, seed=9)
    env = {"HOME": str(tmp_path), "LMOD_TRACKER_SQLITE_PATH": str(tmp_path / "t.db"),
           "LMOD_TRACKER_PARSE_PROCESS": setting, "LMOD_TRACKER_LOG_FORMAT": "json"}
    proc = cli(env, "run", "--once", "--log-dir", str(log_dir), cpus=cpus)
    assert proc.stdout.startswith(f"{counts.valid} events committed")
    assert sqlite_handle(tmp_path / "t.db").scalar(
        "SELECT COUNT(*) FROM module_usage") == counts.valid
    running = [json.loads(line) for line in proc.stderr.splitlines()
               if '"running"' in line]
    assert [r["parsing"] for r in running] == [where]

"""Named torture scenarios, one bug each, against the real daemon (and ``ingest``).

Each test is written to fail on the bug its name states; the letters follow the list of the
black-box torture run that found them. Lines are those of tests/support/torture.py (each with a
unique id), so a failure says how many lines were lost, doubled or stored as a phantom.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from tests.support.daemon import cli, wait_until
from tests.support.torture import (
    Rig,
    TortureDaemon,
    World,
    gzip_file,
    judge,
    settle,
    stored_rows,
    valid_line,
    wait_exact,
)

pytestmark = pytest.mark.slow

REJECTS = "SELECT COUNT(*) FROM rejected_line"


def start(rig: Rig, **kw: object) -> TortureDaemon:
    d = rig.daemon(**kw).start()  # type: ignore[arg-type]
    d.wait_ready()
    return d


def exactly_all(w: World, rig: Rig, d: TortureDaemon, timeout: float = 20.0) -> None:
    """Every line written whole is stored once (whatever the daemon held open: these
    scenarios give it every chance to); half lines never finished are not stored."""
    wait_exact(rig.db, d, lambda: w.written - w.split, lambda: set(w.written), w.forbidden,
               timeout=timeout, context=lambda: "\n".join(w.log))


def checkpoints(rig: Rig, ino: int) -> list[int]:
    return [int(r[0]) for r in rig.db.rows(
        "SELECT byte_offset FROM file_checkpoint WHERE ino = %s", (ino,))]


# -- (a) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["running", "stopped"])
@pytest.mark.parametrize("old", ["renamed", "deleted"])
def test_a_identical_first_lines_do_not_share_a_checkpoint(rig: Rig, when: str,
                                                           old: str) -> None:
    """A new file whose first line is byte-identical to another file's (a header) is read
    from its start, not from the other file's checkpoint. ``deleted`` with the daemon stopped
    usually gives the new file the old one's inode too (ext4 reuses it at once)."""
    w = World(rig.log_dir, header=1, first_id=100, malformed_every=0)
    w.append(60)
    d = start(rig)
    settle(w, rig.db, d)
    if when == "stopped":
        assert d.stop() == 0
        w.forget_held()
    first = w.cur
    if old == "renamed":
        w.rotate_create(header=1)
    else:
        w.recreate(1)
    w.append(90)  # the new file grows past the old one's checkpoint
    w.note(f"old inode {first.ino}, new inode {w.cur.ino}")
    if when == "stopped":
        d = start(rig)
    exactly_all(w, rig, d)


# -- (b) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["running", "stopped"])
@pytest.mark.parametrize("size", ["equal", "longer"])
def test_b_file_rewritten_in_place_at_least_as_long(rig: Rig, when: str, size: str) -> None:
    """lmod.log rewritten in place (same inode, same first line) with other lines, as long as
    before or longer: every new line is read."""
    w = World(rig.log_dir, header=1, first_id=10, malformed_every=0, foreign_every=0)
    w.append(30)  # ids 10..39: every line the same length
    d = start(rig)
    settle(w, rig.db, d)
    before = os.path.getsize(w.live)
    if when == "stopped":
        assert d.stop() == 0
    w.rewrite(30 if size == "equal" else 40)  # ids 40..: the same length again
    if size == "equal":
        assert os.path.getsize(w.live) == before
    if when == "stopped":
        d = start(rig)
    exactly_all(w, rig, d)


# -- (c) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_c_checkpoint_moves_back_after_truncation(rig: Rig, when: str) -> None:
    """A file truncated and refilled shorter (same first line): its checkpoint must move back
    to what was read of the new content, or a clean restart after it grows past the old
    checkpoint resumes there and loses the lines in between."""
    w = World(rig.log_dir, header=1, first_id=100, malformed_every=0)
    w.append(60)
    d = start(rig)
    settle(w, rig.db, d)
    if when == "stopped":
        assert d.stop() == 0
    w.rewrite(10)
    if when == "stopped":
        d = start(rig)
    exactly_all(w, rig, d)
    size = os.path.getsize(w.live)
    wait_until(lambda: max(checkpoints(rig, w.cur.ino), default=-1) == size, 10,
               f"the checkpoint of lmod.log to move back to its size {size}",
               on_timeout=lambda: f"checkpoints: {checkpoints(rig, w.cur.ino)}")
    assert d.stop() == 0
    w.append(80)  # past the old checkpoint
    d = start(rig)
    exactly_all(w, rig, d)


# -- (d) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["running", "stopped"])
@pytest.mark.parametrize("keep", ["zero", "first", "half"])
@pytest.mark.parametrize("header", [0, 1])
def test_d_truncated_below_the_offset_and_regrown_past_it(rig: Rig, when: str, keep: str,
                                                          header: int) -> None:
    """Truncated below the read offset and written past it again before the daemon looks
    (running: within microseconds; stopped: while it is down)."""
    w = World(rig.log_dir, header=header, first_id=100, malformed_every=0)
    w.append(40)
    d = start(rig)
    settle(w, rig.db, d)
    if when == "stopped":
        assert d.stop() == 0
    w.truncate_regrow(keep, 10)
    if when == "stopped":
        d = start(rig)
    exactly_all(w, rig, d)


# -- (e) ---------------------------------------------------------------------------------


def _wait_reject(rig: Rig, fragment: bytes, timeout: float = 10.0) -> None:
    def found() -> bool:
        return any(bytes(r[0]) == fragment for r in rig.db.rows("SELECT raw FROM rejected_line"))
    wait_until(found, timeout, f"a reject holding the fragment {fragment[-30:]!r}",
               on_timeout=lambda: repr(rig.db.rows("SELECT byte_offset, reason, raw FROM"
                                                   " rejected_line")))


@pytest.mark.parametrize("away", ["renamed", "deleted"])
def test_e_half_line_never_finished_when_the_file_leaves(rig: Rig, away: str) -> None:
    """The writer dies mid-line (the half line ends inside ``time=``, so it parses as a valid
    load at another time) and the file leaves the followed names: the fragment must never be
    stored as a load; it is kept as a reject."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    w.append(10)
    n = w.start_partial(len(valid_line(w.next_id)) - 5)  # "...time=1750000101.0" etc.
    fragment = valid_line(n)[:len(valid_line(n)) - 5]
    d = start(rig)
    settle(w, rig.db, d)
    if away == "renamed":
        w.rename_away("archive.1", abandon=True)
    else:
        w.recreate(0, abandon=True)
    w.append(5)
    time.sleep(1.0)  # past rotate_wait: the half line is given up
    exactly_all(w, rig, d)
    _wait_reject(rig, fragment)


def test_e_half_line_finished_after_the_file_left(rig: Rig) -> None:
    """The writer still holds the renamed-away file and finishes its line: stored once,
    whole."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    w.append(10)
    w.start_partial(len(valid_line(w.next_id)) - 5)
    d = start(rig)
    settle(w, rig.db, d)
    w.rename_current("archive.1")
    time.sleep(0.2)
    w.finish_partial()  # the writer still has the old file open
    w.append(2)
    w.reopen()
    w.append(3)
    exactly_all(w, rig, d)


def test_e_ingest_of_a_file_ending_mid_line(rig: Rig) -> None:
    """``ingest`` of a plain file ending mid-line holds the half line back (it is stored once
    the line is finished and the file ingested again); of a gzip file, keeps it as a
    reject. Never the fragment as a load."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    w.append(20)
    w.start_partial(len(valid_line(w.next_id)) - 5)
    env = rig.env
    cli(env, "ingest", str(w.live))
    _check_once(rig, w, lambda: w.written - w.split)
    w.finish_partial()
    w.append(5)
    cli(env, "ingest", str(w.live))
    _check_once(rig, w, lambda: w.written - w.split)
    # the same, gzipped, never to be finished: a reject
    gz_dir = rig.tmp / "gz"
    gz_dir.mkdir()
    w2 = World(gz_dir, first_id=1000, malformed_every=0)
    w2.append(10)
    n2 = w2.start_partial(len(valid_line(w2.next_id)) - 5)
    fragment = valid_line(n2)[:len(valid_line(n2)) - 5]
    w2.close()
    gzip_file(w2.live, gz_dir / "lmod.log-1.gz")
    w2.abandon_partial()
    cli(env, "ingest", str(gz_dir / "lmod.log-1.gz"))
    both = lambda: (w.written - w.split) | w2.written  # noqa: E731
    _check_once(rig, w, both, forbidden=w2.abandoned | w.forbidden())
    _wait_reject(rig, fragment, timeout=1)


def _check_once(rig: Rig, w: World, required: Callable[[], set[int]],
                forbidden: set[int] | None = None) -> None:
    req = required()
    v = judge(stored_rows(rig.db), req, req, w.forbidden() if forbidden is None else forbidden)
    assert v.ok, v.summary()


# -- (f) ---------------------------------------------------------------------------------


def test_f_rotated_and_compressed_while_the_database_is_down(rig: Rig) -> None:
    """logrotate ``create`` + ``compress`` without delaycompress, four times, while the
    database is unreachable (the daemon running and given a second to see each new file):
    every line is read once the database is back."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    w.append(20)
    d = start(rig)
    settle(w, rig.db, d)
    rig.down()
    try:
        for _ in range(4):
            w.append(30)
            time.sleep(1.0)
            w.rotate_create(compress="now")
        w.append(10)
        time.sleep(1.0)
    finally:
        rig.up()
    exactly_all(w, rig, d, timeout=30)


# -- (g) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["start", "middle"])
@pytest.mark.parametrize("when", ["before", "running"])
def test_g_nul_run_longer_than_a_line_then_a_valid_line(rig: Rig, where: str,
                                                        when: str) -> None:
    """A run of NULs longer than max_line_bytes (8192), at the start of the file or after
    some lines: the valid lines after it are stored; the NULs are no reject."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    d = None
    if when == "running":
        w.append(3)
        d = start(rig)
        settle(w, rig.db, d)
    if where == "middle" or when == "running":
        w.append(10)
    w.nul_run(20_000)
    w.append(10)
    if d is None:
        d = start(rig)
    exactly_all(w, rig, d)
    assert rig.db.scalar(REJECTS) == 0


@pytest.mark.parametrize("how", ["whole", "streamed"])
def test_g_ten_mib_line_without_our_tag_is_foreign(rig: Rig, how: str) -> None:
    """A 10 MiB line without our tag is one foreign line, not a reject; the lines around it
    are stored."""
    w = World(rig.log_dir, first_id=100, malformed_every=0, foreign_every=0)
    w.append(5)
    d = start(rig)
    settle(w, rig.db, d)
    body = b"Jun 15 12:00:00 node1 kernel: " + b"x" * (10 << 20)
    if how == "whole":
        w.raw(body + b"\n")
    else:
        for i in range(0, len(body), 1 << 20):
            os.write(w.fd, body[i:i + (1 << 20)])
            time.sleep(0.05)
        w.raw(b"\n")
    w.append(5)
    exactly_all(w, rig, d, timeout=30)
    assert rig.db.scalar(REJECTS) == 0, rig.db.rows("SELECT reason, byte_offset FROM"
                                                    " rejected_line")
    doc = d.status()
    assert doc is not None and doc["totals"]["foreign"] >= 1, doc and doc["totals"]


# -- (h) ---------------------------------------------------------------------------------


FILES = 100
NOFILE = 40


def test_h_more_rotated_files_than_descriptors(rig: Rig) -> None:
    """``ulimit -n 40`` and 100 rotated files (about 25 descriptors left for files): every
    file is read in the end, none starved."""
    w = World(rig.log_dir, first_id=1000, malformed_every=0, foreign_every=0)
    for _ in range(FILES):
        w.append(3)
        w.rotate_create()
    w.append(3)
    d = start(rig, nofile=NOFILE)
    exactly_all(w, rig, d, timeout=60)


@pytest.mark.parametrize("how", ["rewritten", "replaced"])
def test_h_file_closed_to_make_room_then_rewritten_with_the_same_size(rig: Rig,
                                                                      how: str) -> None:
    """With more files than descriptors, files read to their end are closed to make room.
    Such a file rewritten in place (same inode, same first line) or deleted and created again
    under its name (same inode on ext4), with exactly as many bytes as before: its new lines
    are read all the same."""
    w = World(rig.log_dir, header=1, first_id=1000, malformed_every=0, foreign_every=0)
    for _ in range(30):  # ids of four digits: every line, every file the same length
        w.append(3)
        w.rotate_create(header=1)
    w.append(3)
    d = start(rig, nofile=NOFILE)
    settle(w, rig.db, d, timeout=60)
    open_now = d.followed() or set()
    closed = [f for f in w.rotated() if (f.dev, f.ino) not in open_now]
    assert closed, "no file was closed to make room"
    size = os.path.getsize(rig.log_dir / str(closed[0].name))
    if how == "rewritten":
        w.rewrite_rotated(closed[0], 3)
    else:
        w.replace_rotated(closed[0], 3)
    assert os.path.getsize(rig.log_dir / str(closed[0].name or w.files[-1].name)) == size
    exactly_all(w, rig, d, timeout=30)


# -- (i) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["empty", "partial"])
def test_i_incomplete_first_line_then_rotated_and_compressed_at_once(rig: Rig,
                                                                     first: str) -> None:
    """A new lmod.log seen while its first line is incomplete (empty, or half a line); then,
    within milliseconds, it gets its lines, is rotated and compressed (no delaycompress):
    the daemon saw the file, so its lines must be read."""
    w = World(rig.log_dir, first_id=100, malformed_every=0)
    w.append(10)
    d = start(rig)
    settle(w, rig.db, d)
    w.rotate_create()
    if first == "partial":
        w.start_partial(30)
    time.sleep(1.0)  # several polls: the daemon has looked at the new file
    w.append(50)
    w.rotate_create(compress="now")
    w.append(5)
    exactly_all(w, rig, d)


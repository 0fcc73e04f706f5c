"""Model-based torture of the real daemon, after Vector's file-source model tests.

Hypothesis drives random sequences of what happens to a log directory -- appends, half lines,
logrotate ``create`` (with and without compression, with and without delaycompress),
``copytruncate`` (with lines in its window, with a writer that leaves a NUL hole), deleting and
compressing rotated files, a new file whose first line is byte-identical to an earlier one's,
truncation below the read offset regrown past it at once, NUL runs, SIGTERM restarts, SIGKILL,
database outages -- against ``lmod-tracker run`` as a separate process, on SQLite and on
MariaDB (outages: a FaultProxy cut for MariaDB, another connection's exclusive lock for
SQLite). At every settle (and at the end) the rows in the database must be exactly the lines
the model says (tests/support/torture.py): none lost, none doubled, no phantom made of a
fragment.

CI mode (default) runs 30 derandomized sequences of up to 16 steps per backend, about a minute
and a half each; failures are reported unshrunk (the steps are printed).

Long mode: at least 10,000 random sequences of up to 30 steps, half on each backend, run in
parallel shards of 50 by tests/torture/long.py (its docstring and the README's "Reliability"
say how long it takes)::

    .venv/bin/python -m tests.torture.long --sequences 10000 --jobs 8

``LMT_TORTURE_LONG=1`` runs 10,000 sequences per backend in this one process, one at a
time (about a day).

Knobs: ``LMT_TORTURE_EXAMPLES`` (sequences per backend), ``LMT_TORTURE_STEPS`` (steps per
sequence), ``LMT_TORTURE_SHRINK=1`` (shrink a failure to a minimal sequence: up to 5 more
minutes), ``LMT_TORTURE_RANDOM=1`` (a new random draw instead of the fixed one).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.databases import (
    DbHandle,
    MysqlServer,
    create_mysql_database,
    drop_mysql_database,
    mysql_handle,
    sqlite_handle,
)
from tests.support.proxy import FaultProxy
from tests.support.torture import FAST_ENV, SqliteLock, TortureDaemon, World, settle

LONG = os.environ.get("LMT_TORTURE_LONG", "") == "1"
EXAMPLES = int(os.environ.get("LMT_TORTURE_EXAMPLES", "10000" if LONG else "30"))
STEPS = int(os.environ.get("LMT_TORTURE_STEPS", "30" if LONG else "16"))
VERBOSE = os.environ.get("LMT_TORTURE_VERBOSE", "") == "1"
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("LMT_TORTURE_SHRINK", "") == "1":
    PHASES.append(Phase.shrink)

pytestmark = pytest.mark.slow

SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=os.environ.get("LMT_TORTURE_RANDOM", "") != "1",
    database=None,
    phases=PHASES,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


@dataclass
class Ctx:
    backend: str
    root: Path
    server: MysqlServer | None = None
    examples: int = 0
    started: float = 0.0


class DaemonModel(RuleBasedStateMachine):
    """One sequence: a log directory, a database, the daemon, and the model."""

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        ctx.examples += 1
        self.ctx = ctx
        self.base = ctx.root / f"seq{ctx.examples}"
        self.log_dir = self.base / "log"
        self.log_dir.mkdir(parents=True)
        self.proxy: FaultProxy | None = None
        self.dbname = ""
        if ctx.server is None:
            self.db: DbHandle = sqlite_handle(self.base / "lmod.db")
            env = dict(self.db.env)
        else:
            self.dbname = create_mysql_database(ctx.server)
            self.db = mysql_handle(ctx.server, self.dbname)
            self.proxy = FaultProxy(ctx.server.host, ctx.server.port).start()
            env = {**self.db.env, "DB_HOST": "127.0.0.1", "DB_PORT": str(self.proxy.port)}
        self.daemon = TortureDaemon({**env, **FAST_ENV}, self.log_dir, self.base / "daemon.log")
        self.world: World | None = None
        self.lock: SqliteLock | None = None
        self.down = False
        self.broken = False
        self.steps: list[str] = []

    # -- plumbing --------------------------------------------------------------------------

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    def _step(self, text: str) -> None:
        self.steps.append(text)
        self.broken = True  # until the step returns

    def _done(self) -> None:
        self.broken = False

    def _context(self) -> str:
        lines = self.steps[-40:]
        notes = self.w.log[-15:]
        return ("steps (last 40):\n  " + "\n  ".join(lines)
                + "\nnotes:\n  " + "\n  ".join(notes))

    # -- setup -----------------------------------------------------------------------------

    @initialize(header=st.integers(0, 2), first=st.integers(0, 5))
    def start(self, header: int, first: int) -> None:
        self._step(f"start(header={header}, first={first})")
        self.world = World(self.log_dir, header=header)
        self.w.append(first)
        self.daemon.start()
        self._done()

    # -- writing ---------------------------------------------------------------------------

    @rule(k=st.integers(1, 40))
    def append(self, k: int) -> None:
        self._step(f"append({k})")
        self.w.append(k)
        self._done()

    @rule(cut=st.one_of(st.integers(1, 160), st.just(10_000)))
    def partial(self, cut: int) -> None:
        self._step(f"partial(cut={cut})")
        self.w.start_partial(cut)
        self._done()

    @precondition(lambda self: self.world is not None and self.world.partial is not None)
    @rule()
    def finish_partial(self) -> None:
        self._step("finish_partial()")
        self.w.finish_partial()
        self._done()

    @rule(length=st.sampled_from([1, 64, 9000, 70_000]))
    def nul_run(self, length: int) -> None:
        self._step(f"nul_run({length})")
        self.w.nul_run(length)
        self.w.append(2)
        self._done()

    # -- rotations -------------------------------------------------------------------------

    @rule(before=st.integers(0, 4), abandon=st.booleans(),
          compress=st.sampled_from(["none", "now", "delay"]), header=st.integers(0, 2),
          after=st.integers(0, 8), caught_up=st.booleans())
    def rotate_create(self, before: int, abandon: bool, compress: str, header: int,
                      after: int, caught_up: bool) -> None:
        self._step(f"rotate_create(before={before}, abandon={abandon}, compress={compress!r},"
                   f" header={header}, after={after}, caught_up={caught_up})")
        self._catch_up(caught_up)
        self.w.rotate_create(before_reopen=before, abandon=abandon, compress=compress,
                             header=header)
        self.w.append(after)
        self._done()

    @rule(between=st.sampled_from([0, 0, 1, 3]), hole=st.booleans(), after=st.integers(0, 8),
          caught_up=st.booleans())
    def copytruncate(self, between: int, hole: bool, after: int, caught_up: bool) -> None:
        self._step(f"copytruncate(between={between}, hole={hole}, after={after},"
                   f" caught_up={caught_up})")
        self._catch_up(caught_up)
        self.w.copytruncate(between=between, hole=hole)
        self.w.append(after)
        self._done()

    @precondition(lambda self: self.world is not None and bool(self.world.rotated()))
    @rule()
    def compress_oldest(self) -> None:
        self._step("compress_oldest()")
        self.w.compress_oldest()
        self._done()

    @precondition(lambda self: self.world is not None and bool(self.world.rotated()))
    @rule()
    def delete_oldest(self) -> None:
        self._step("delete_oldest()")
        self.w.delete_oldest()
        self._done()

    @rule(header=st.integers(1, 2), abandon=st.booleans(), after=st.integers(0, 60),
          caught_up=st.booleans())
    def recreate(self, header: int, abandon: bool, after: int, caught_up: bool) -> None:
        self._step(f"recreate(header={header}, abandon={abandon}, after={after},"
                   f" caught_up={caught_up})")
        self._catch_up(caught_up)
        self.w.recreate(header, abandon=abandon)
        self.w.append(after)
        self._done()

    @rule(keep=st.sampled_from(["zero", "first", "half"]), grow=st.integers(1, 20),
          caught_up=st.booleans())
    def truncate_regrow(self, keep: str, grow: int, caught_up: bool) -> None:
        self._step(f"truncate_regrow(keep={keep!r}, grow={grow}, caught_up={caught_up})")
        self._catch_up(caught_up)
        self.w.truncate_regrow(keep, grow)
        self._done()

    # -- the daemon and the database -------------------------------------------------------

    @rule()
    def restart(self) -> None:
        self._step("restart()")
        code = self.daemon.stop(timeout=30)
        self.w.forget_held()
        # -15: SIGTERM came before the daemon installed its handler (just after a start)
        assert code in (0, -15), f"SIGTERM: exit {code}\n{self.daemon.tail()}"
        self.daemon.start()
        self._done()

    @rule()
    def kill(self) -> None:
        self._step("kill()")
        self.daemon.kill()
        self.w.forget_held()
        self.daemon.start()
        self._done()

    @precondition(lambda self: not self.down)
    @rule(pause=st.sampled_from([0.0, 0.3, 1.0]))
    def db_down(self, pause: float) -> None:
        self._step(f"db_down(pause={pause})")
        if self.proxy is not None:
            self.proxy.cut()
        else:
            self.lock = SqliteLock(self.base / "lmod.db").acquire()
        self.down = True
        time.sleep(pause)
        self._done()

    @precondition(lambda self: self.down)
    @rule()
    def db_up(self) -> None:
        self._step("db_up()")
        self._restore()
        self._done()

    def _restore(self) -> None:
        if not self.down:
            return
        if self.proxy is not None:
            self.proxy.restore()
        elif self.lock is not None:
            self.lock.release()
            self.lock = None
        self.down = False

    @rule()
    def settle(self) -> None:
        self._step("settle()")
        self._restore()
        settle(self.w, self.db, self.daemon, context=self._context)
        self._done()

    @rule(seconds=st.sampled_from([0.05, 0.3]))
    def pause(self, seconds: float) -> None:
        """Time passes: the daemon looks at the files (or retries, if the database is down)."""
        self._step(f"pause({seconds})")
        time.sleep(seconds)
        held = self.daemon.followed()
        if held is not None:  # what it has open now, it can read to the end whatever happens
            self.w.mark_held(held)
        self._done()

    def _catch_up(self, wanted: bool) -> None:
        """Before a rotation: let the daemon read and commit everything first (so that what
        follows happens below its offsets), unless the database is down."""
        if wanted and not self.down:
            settle(self.w, self.db, self.daemon, quiet=0.2, context=self._context)

    # -- the end ---------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.world is not None and not self.broken:
                self._restore()
                self.steps.append("final settle")
                settle(self.w, self.db, self.daemon, context=self._context)
        finally:
            try:
                self._restore()
            finally:
                self.daemon.ensure_stopped()
                if self.world is not None:
                    self.world.close()
                if self.proxy is not None:
                    self.proxy.close()
                if self.ctx.server is not None and self.dbname:
                    drop_mysql_database(self.ctx.server, self.dbname)
                if VERBOSE:
                    print(f"seq{self.ctx.examples}: " + "; ".join(self.steps))


def _run(ctx: Ctx) -> None:
    ctx.started = time.monotonic()
    try:
        run_state_machine_as_test(lambda: DaemonModel(ctx), settings=SETTINGS)
    finally:
        print(f"\n{ctx.backend}: {ctx.examples} sequences in"
              f" {time.monotonic() - ctx.started:.0f} s")


def test_model_sqlite(tmp_path: Path) -> None:
    _run(Ctx("sqlite", tmp_path))


def test_model_mysql(tmp_path: Path, mysql_server: dict[str, Any]) -> None:
    _run(Ctx("mysql", tmp_path, MysqlServer(**mysql_server)))

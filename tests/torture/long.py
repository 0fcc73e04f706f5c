"""The long mode of the model-based torture (test_model_daemon.py), in parallel shards.

One sequence is a few seconds of mostly waiting (for the daemon to notice, to settle, to come
back after a kill), so sequences run side by side: ``--jobs`` pytest processes at a time, each
running one *shard*: ``--shard-size`` random sequences of up to 30 steps on one backend, drawn
from its own seed (``--hypothesis-seed``), so any shard can be run again alone::

    .venv/bin/python -m tests.torture.long --sequences 10000 --jobs 8 --out /var/tmp/lmt-torture

Half the shards run on SQLite, half on MariaDB (the server the tests use, see tests/conftest.py).
Each finished shard is one line of ``OUT/results.jsonl``: backend, seed, sequences, seconds,
exit code, and the git ids of what the result depends on (``src/``, ``tests/support/``, the
model test and both conftests). A failed shard's output is kept in ``OUT/logs/``. Run again
with the same ``--out``, shards that already passed on the same ids are not run again, so a
long run can be spread over several sittings; a change to the daemon or to the torture
harness starts the count from zero.

The table at the end counts sequences per backend; the exit code is 0 only when every shard
passed and at least ``--sequences`` ran on the current ids. To replay a failed shard::

    LMT_TORTURE_RANDOM=1 LMT_TORTURE_EXAMPLES=50 LMT_TORTURE_STEPS=30 .venv/bin/pytest \\
        -p no:cacheprovider -s tests/torture/test_model_daemon.py -k sqlite --hypothesis-seed=SEED
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
TREES = ("src", "tests/support", "tests/conftest.py", "tests/torture/conftest.py",
         "tests/torture/test_model_daemon.py")
BACKENDS = ("sqlite", "mysql")
#: What test_model_daemon.py prints at the end of a run.
DONE = re.compile(r"^(sqlite|mysql): (\d+) sequences in (\d+) s$", re.MULTILINE)


@dataclass(frozen=True)
class Shard:
    backend: str
    seed: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.seed}"


def trees() -> str:
    """The git ids of what a result depends on; ``+dirty`` when they differ from HEAD."""
    ids = [subprocess.run(["git", "rev-parse", f"HEAD:{t}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()[:12] for t in TREES]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *TREES], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.strip()
    return "/".join(ids) + ("+dirty" if dirty else "")


def shards(total: int, size: int, first_seed: int) -> Iterator[Shard]:
    """Shards of ``size`` sequences, backends taking turns, until ``total`` sequences."""
    n = -(-total // size)
    for i in range(n):
        yield Shard(BACKENDS[i % 2], first_seed + i, size)


def load(results: Path, tree: str) -> dict[Shard, dict[str, object]]:
    """Shards that passed on ``tree`` in an earlier sitting."""
    done: dict[Shard, dict[str, object]] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            if rec["tree"] == tree and rec["rc"] == 0:
                done[Shard(rec["backend"], rec["seed"], rec["size"])] = rec
    return done


def command(shard: Shard, steps: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "LMT_TORTURE_RANDOM": "1", "LMT_TORTURE_EXAMPLES": str(shard.size),
           "LMT_TORTURE_STEPS": str(steps)}
    env.pop("LMT_TORTURE_LONG", None)
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
            "-o", "timeout=7200", f"--hypothesis-seed={shard.seed}",
            "tests/torture/test_model_daemon.py", "-k", f"test_model_{shard.backend}"]
    return argv, env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=10_000, help="in all, both backends")
    p.add_argument("--jobs", type=int, default=8, help="shards running at once")
    p.add_argument("--shard-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=30, help="steps per sequence, at most")
    p.add_argument("--seed", type=int, default=1, help="seed of the first shard")
    p.add_argument("--out", type=Path, default=Path("/var/tmp/lmt-torture"))
    args = p.parse_args(argv)

    out: Path = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    tree = trees()
    console = Console(stderr=True)
    done = load(out / "results.jsonl", tree)
    todo = [s for s in shards(args.sequences, args.shard_size, args.seed) if s not in done]
    console.print(f"trees {tree}: {len(done)} shards passed earlier, {len(todo)} to run,"
                  f" {args.jobs} at a time")
    running: dict[Shard, tuple[subprocess.Popen[bytes], float, Path]] = {}
    failed: list[Shard] = []
    started = time.monotonic()
    with (out / "results.jsonl").open("a") as results:
        while todo or running:
            while todo and len(running) < args.jobs:
                shard = todo.pop(0)
                argv_, env = command(shard, args.steps)
                log = out / "logs" / f"{shard.name}.log"
                with log.open("wb") as fh:
                    proc = subprocess.Popen(argv_, cwd=ROOT, env=env, stdout=fh,
                                            stderr=subprocess.STDOUT)
                running[shard] = (proc, time.monotonic(), log)
            time.sleep(1.0)
            for shard, (proc, t0, log) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[shard]
                text = log.read_text(errors="replace")
                m = DONE.search(text)
                ran = int(m.group(2)) if m else 0
                rec = {"backend": shard.backend, "seed": shard.seed, "size": shard.size,
                       "sequences": ran, "seconds": round(time.monotonic() - t0, 1),
                       "rc": rc, "tree": tree, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
                if rc == 0 and ran >= shard.size:
                    log.unlink()
                else:
                    rec["rc"] = rc or 1
                    failed.append(shard)
                    console.print(f"[red]shard {shard.name} FAILED[/] (exit {rc}): {log}")
                results.write(json.dumps(rec) + "\n")
                results.flush()
                done[shard] = rec if rec["rc"] == 0 else done.get(shard, rec)
                passed = sum(1 for r in done.values() if r["rc"] == 0)
                console.print(f"{rec['at']} {shard.name}: {ran} sequences,"
                              f" {rec['seconds']} s; {passed} shards passed, {len(failed)}"
                              f" failed, {len(todo)} waiting")

    table = Table(title=f"Model-based torture, long mode (trees {tree})")
    for col in ("backend", "shards passed", "sequences", "machines run", "failed shards",
                "shard seconds"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    total = 0
    for backend in BACKENDS:
        ok = [r for s, r in done.items() if s.backend == backend and r["rc"] == 0]
        # Hypothesis's examples (``size`` a shard); it may build a few more machines whose
        # draw it then discards, after running their steps: "machines run" counts those too.
        seqs = sum(min(int(str(r["sequences"])), int(str(r["size"]))) for r in ok)
        total += seqs
        table.add_row(backend, str(len(ok)), str(seqs),
                      str(sum(int(str(r["sequences"])) for r in ok)),
                      str(sum(1 for s in failed if s.backend == backend)),
                      f"{sum(float(str(r['seconds'])) for r in ok):.0f}")
    Console().print(table)
    print(f"{total} sequences passed on these trees; {len(failed)} shards failed this sitting;"
          f" wall time this sitting {time.monotonic() - started:.0f} s")
    return 0 if not failed and total >= args.sequences else 1


if __name__ == "__main__":
    sys.exit(main())

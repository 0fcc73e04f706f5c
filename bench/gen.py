"""Realistic Lmod tracking logs for the benchmark, generated fast and memory-bounded.

Valid lines have exactly the shape of ``tests/support/loggen.py``'s::

    Nov 14 18:13:20 node342 ModuleUsageTracking: user=usr561 module=valgrind/6.3.0 \
path=/opt/modulefiles/valgrind/6.3.0.lua host=node342.cluster.example.org time=1700000000.000137

The population: ~2000 users and ~800 packages (several versions each; some
``category/name/version``, some without a version) with Zipf-like popularity (weight
``1/rank**1.1``), ~300 hosts; loads come in bursts (a job loading its modules), 1% of lines are
foreign (other programs), 0.1% carry our tag but cannot be parsed. ``time=`` is strictly
increasing over everything one generator produces, so every valid line's natural key is unique.

Also a command line, used by the benchmark to write from a separate process::

    python bench/gen.py file OUT --lines N [--seed S]
    python bench/gen.py steady OUT --rate R --seconds S --record REC [--seed S] [--after-us T]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from bisect import bisect_right
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.loggen import (
    FIRST_NAMES,
    FOREIGN_TEMPLATES,
    MALFORMED_KINDS,
    PACKAGE_NAMES,
    Counts,
    random_version,
)

TAG = "ModuleUsageTracking"
START_EPOCH = 1_700_000_000
#: The syslog header shows local time of the simulated log server (UTC-4), like loggen.py.
SYSLOG_OFFSET_S = -4 * 3600
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_REAL_PACKAGES = (*PACKAGE_NAMES, "StdEnv", "nixpkgs", "arch")
_CATEGORIES = ("bio", "chem", "phys", "tools", "math", "viz")
_LIB_PREFIXES = ("py-", "r-", "perl-", "lib", "")
_SYLLABLES = (
    "ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "qi", "ro", "sa", "tu",
    "ve", "wi", "xo", "ya", "ze", "blast", "seq", "mol", "grid", "flux", "tensor", "vec",
)


def _zipf_cum(n: int, s: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank ** s) for rank in range(1, n + 1)))


def build_modules(rng: random.Random, packages: int) -> list[str]:
    """``packages`` package names, each with 1-6 versions; ~10% have no version."""
    names: list[str] = list(_REAL_PACKAGES[:packages])
    seen = set(names)
    while len(names) < packages:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randrange(2, 4)))
        name = rng.choice(_LIB_PREFIXES) + stem
        if rng.random() < 0.15:
            name = f"{rng.choice(_CATEGORIES)}/{name}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    modules: list[str] = []
    for name in names:
        if rng.random() < 0.10:
            modules.append(name)
            continue
        versions = sorted({random_version(rng) for _ in range(rng.randrange(1, 7))})
        modules.extend(f"{name}/{v}" for v in versions)
    rng.shuffle(modules)  # popularity rank is independent of the name
    return modules


def build_users(rng: random.Random, n: int) -> list[str]:
    users: set[str] = set()
    while len(users) < n:
        style = rng.randrange(3)
        if style == 0:
            users.add(f"usr{rng.randrange(10_000):04d}")
        elif style == 1:
            users.add(f"{rng.choice(FIRST_NAMES)}{rng.randrange(1000)}")
        else:
            users.add(f"{rng.choice(FIRST_NAMES)[0]}{rng.choice(FIRST_NAMES)}{rng.randrange(50)}")
    out = sorted(users)
    rng.shuffle(out)
    return out


def build_hosts(n: int) -> list[str]:
    hosts = ["login1", "login2"]
    gpus = max(1, n // 10)
    bigmem = max(1, n // 40)
    hosts += [f"gpu{i:02d}" for i in range(1, gpus + 1)]
    hosts += [f"bigmem{i:02d}" for i in range(1, bigmem + 1)]
    hosts += [f"node{i:03d}" for i in range(1, n - len(hosts) + 1)]
    return hosts[:n]


class LogGen:
    """Deterministic from ``seed``: the same calls give the same bytes.

    :meth:`chunk` advances a simulated clock (bursts of loads separated by gaps);
    :meth:`chunk_at` stamps lines with a given wall-clock time instead (the steady-state writer).
    """

    def __init__(self, seed: int = 1, *, users: int = 2000, packages: int = 800,
                 hosts: int = 300, start_epoch: int = START_EPOCH, tag: str = TAG,
                 foreign_rate: float = 0.01, malformed_rate: float = 0.001) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.tag = tag
        self.modules = build_modules(rng, packages)
        self.users = build_users(rng, users)
        self.hosts = build_hosts(hosts)
        self._module_cum = _zipf_cum(len(self.modules))
        self._user_cum = _zipf_cum(len(self.users))
        self._module_text = [f"module={m} path=/opt/modulefiles/{m}.lua" for m in self.modules]
        self._host_prefix = [f" {h} {tag}: " for h in self.hosts]
        self._host_fqdn = [f"{h}.cluster.example.org" for h in self.hosts]
        self._user_text = [f"user={u}" for u in self.users]
        self._compute = [i for i, h in enumerate(self.hosts) if not h.startswith("login")]
        self._login = [i for i, h in enumerate(self.hosts) if h.startswith("login")]
        self.foreign_rate = foreign_rate
        self.malformed_rate = malformed_rate
        self.clock_us = start_epoch * 1_000_000
        self._stamp_sec = -1
        self._stamp = ""
        self._job = 1_000_000
        self._malformed_n = 0  # sequence numbers, to cycle through the kinds
        self._foreign_n = 0

    def _header(self, t_us: int) -> str:
        sec = t_us // 1_000_000
        if sec != self._stamp_sec:
            tm = time.gmtime(sec + SYSLOG_OFFSET_S)
            self._stamp = (f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
                           f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
            self._stamp_sec = sec
        return self._stamp

    def chunk(self, n: int) -> tuple[bytes, Counts]:
        """The next ``n`` lines on the simulated clock."""
        return self._lines(n, None)

    def chunk_at(self, n: int, now_us: int) -> tuple[bytes, Counts]:
        """``n`` lines stamped ``now_us``, ``now_us + 1``, ... (never before earlier lines)."""
        self.clock_us = max(self.clock_us, now_us - 1)
        return self._lines(n, 1)

    def _lines(self, n: int, step: int | None) -> tuple[bytes, Counts]:
        rng = self.rng
        rand = rng.random
        out: list[str] = []
        append = out.append
        counts = Counts()
        t = self.clock_us
        header = self._header
        mod_idx = range(len(self.modules))
        mod_cum = self._module_cum
        mod_text = self._module_text
        user_text = self._user_text
        host_prefix = self._host_prefix
        host_fqdn = self._host_fqdn
        odd = self.foreign_rate + self.malformed_rate
        valid = 0
        malformed = 0
        # Module popularity for the whole chunk in one call (the costliest draw).
        all_mods = rng.choices(mod_idx, cum_weights=mod_cum, k=n)
        user_cum = self._user_cum
        user_total = user_cum[-1]
        last_user = len(user_cum) - 1
        compute, login = self._compute, self._login
        n_compute, n_login = len(compute), len(login)
        used = 0
        while used < n:
            # One burst: a user loading modules on one host, inside a job or interactively.
            k = min(n - used, 1 + int(rng.expovariate(0.35)))
            mods = all_mods[used:used + k]
            used += k
            user = min(bisect_right(user_cum, rand() * user_total), last_user)
            roll = rand()
            if roll < 0.15:
                host = login[int(rand() * n_login)]
                job = ""
            else:
                host = compute[int(rand() * n_compute)]
                if roll < 0.85:
                    self._job += 1 + int(rand() * 40)
                    job = f" jobid={self._job}"
                else:
                    job = " jobid=nil"
            if step is None:
                t += int(rng.expovariate(1 / 40_000)) + 1  # gap between bursts, mean 40 ms
            pre = host_prefix[host]
            tail = f" host={host_fqdn[host]} time="
            first = user_text[user] + job + " "
            for m in mods:
                t += step if step is not None else 80 + int(rand() * 2420)
                if rand() < odd:
                    bad = rand() < self.malformed_rate / odd
                    malformed += bad
                    append(self._odd(t, bad))
                    continue
                valid += 1
                append(f"{header(t)}{pre}{first}{mod_text[m]}{tail}"
                       f"{t // 1_000_000}.{t % 1_000_000:06d}\n")
        self.clock_us = t
        counts.valid = valid
        counts.malformed = malformed
        counts.foreign = len(out) - valid - malformed
        data = "".join(out).encode("utf-8", "surrogateescape")
        return data, counts

    def _odd(self, t: int, malformed: bool) -> str:
        rng = self.rng
        host = rng.choice(self.hosts)
        user = rng.choice(self.users)
        stamp = self._header(t)
        if not malformed:
            self._foreign_n += 1
            template = FOREIGN_TEMPLATES[self._foreign_n % len(FOREIGN_TEMPLATES)]
            msg = template.format(pid=rng.randrange(100, 99_999), user=user,
                                  a=rng.randrange(256), b=rng.randrange(256),
                                  port=rng.randrange(1024, 65_535))
            return f"{stamp} {host} {msg}\n"
        kind = MALFORMED_KINDS[self._malformed_n % len(MALFORMED_KINDS)]
        self._malformed_n += 1
        module = rng.choice(self.modules)
        fields = {
            "user": user,
            "module": module,
            "path": f"/opt/modulefiles/{module}.lua",
            "host": f"{host}.cluster.example.org",
            "time": f"{t // 1_000_000}.{t % 1_000_000:06d}",
        }
        if kind == "missing_user":
            del fields["user"]
        elif kind == "missing_module":
            del fields["module"]
            del fields["path"]
        elif kind == "missing_time":
            del fields["time"]
        elif kind == "bad_time":
            fields["time"] = "notanumber"
        elif kind == "bad_utf8":
            fields["user"] = "\udcff\udcfe" + user  # encoded as the bytes ff fe
        elif kind == "empty":
            return f"{stamp} {host} {self.tag}:\n"
        body = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{stamp} {host} {self.tag}: {body}\n"


def write_file(path: Path, lines: int, *, seed: int = 1, chunk_lines: int = 50_000,
               gen: LogGen | None = None) -> Counts:
    """Write ``lines`` lines to ``path`` in chunks (memory does not depend on ``lines``)."""
    gen = gen or LogGen(seed)
    total = Counts()
    with open(path, "wb", buffering=0) as out:
        left = lines
        while left > 0:
            data, counts = gen.chunk(min(chunk_lines, left))
            out.write(data)
            total += counts
            left -= counts.total
    return total


def steady(path: Path, rate: float, seconds: float, *, seed: int, after_us: int = 0,
           burst_s: float = 0.01) -> tuple[Counts, list[tuple[float, int]]]:
    """Append to ``path`` at ``rate`` lines/s for ``seconds``, a burst every ``burst_s``.

    Each line's ``time=`` is the wall clock of its write. Returns the counts and, per burst,
    ``(wall time just after the write, valid lines written so far)``.
    """
    gen = LogGen(seed)
    gen.clock_us = after_us
    total = Counts()
    record: list[tuple[float, int]] = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        written = 0
        tick = 0
        while True:
            tick += 1
            target = start + tick * burst_s
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elapsed = min(time.monotonic() - start, seconds)
            due = int(rate * elapsed) - written
            if due > 0:
                data, counts = gen.chunk_at(due, time.time_ns() // 1000)
                os.write(fd, data)
                record.append((time.time(), total.valid + counts.valid))
                total += counts
                written += counts.total
            if elapsed >= seconds:
                break
    finally:
        os.close(fd)
    return total, record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("file", help="write a log file")
    f.add_argument("out", type=Path)
    f.add_argument("--lines", type=int, required=True)
    f.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("steady", help="append at a fixed rate, stamped with the wall clock")
    s.add_argument("out", type=Path)
    s.add_argument("--rate", type=float, required=True, help="lines per second")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--record", type=Path, required=True, help="JSON file of per-burst times")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--after-us", type=int, default=0, help="time= stays above this")
    args = ap.parse_args(argv)
    if args.cmd == "file":
        counts = write_file(args.out, args.lines, seed=args.seed)
        print(json.dumps(asdict(counts)))
        return 0
    counts, record = steady(args.out, args.rate, args.seconds, seed=args.seed,
                            after_us=args.after_us)
    args.record.write_text(json.dumps({"counts": asdict(counts), "bursts": record}))
    print(json.dumps(asdict(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

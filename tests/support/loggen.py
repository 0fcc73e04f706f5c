"""Deterministic generator of Lmod module-load syslog lines.

Lines look like what rsyslog writes for the ``ModuleUsageTracking`` messages emitted by
Lmod's ``SitePackage.lua``::

    Apr 27 03:22:57 node1 ModuleUsageTracking: user=usr123 module=gcc/5.4.0 \
path=/opt/modulefiles/gcc/5.4.0.lua host=node1.cluster.example.org time=1682580177.622180

Every generated line (valid, foreign or malformed) advances a private clock by a fixed
number of microseconds, so the ``time=`` value of valid lines is strictly increasing and the
natural key ``(time, host, user, module)`` is unique for every ``valid()`` call of a factory.
"""

from __future__ import annotations

import gzip as gzip_module
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = [
    "FIRST_NAMES",
    "FOREIGN_TEMPLATES",
    "MALFORMED_KINDS",
    "PACKAGE_NAMES",
    "Counts",
    "LineFactory",
    "LineKind",
    "natural_key",
    "random_version",
    "write_log",
]

LineKind = Literal["valid", "foreign", "malformed"]

TICK_US = 137
"""Microseconds the factory clock advances per generated line."""

SYSLOG_TZ = timezone(timedelta(hours=-4))
"""Local time zone of the simulated syslog host (used only for the syslog header)."""
_ISO_OFFSET = "-04:00"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

PACKAGE_NAMES = (
    "gcc", "intel", "openmpi", "mpich", "mvapich2", "cuda", "cudnn", "python", "R", "julia",
    "perl", "ruby", "go", "rust", "java", "cmake", "make", "autoconf", "automake", "git",
    "boost", "fftw", "hdf5", "netcdf", "netcdf-fortran", "openblas", "lapack", "scalapack",
    "mkl", "petsc", "slepc", "trilinos", "eigen", "gsl", "zlib", "bzip2", "xz", "curl",
    "openssl", "sqlite", "tmux", "vim", "emacs", "valgrind", "gdb", "ddt", "paraview", "visit",
    "matlab", "mathematica", "ansys", "abaqus", "comsol", "lammps", "gromacs", "namd", "amber",
    "cp2k", "quantum-espresso", "vasp", "orca", "gaussian", "nwchem", "py-numpy", "py-scipy",
    "py-mpi4py", "anaconda3", "miniconda3", "singularity", "apptainer", "nextflow",
    "snakemake", "ffmpeg", "imagemagick", "gnuplot", "texlive", "pandoc", "nodejs",
    "intel-oneapi-mkl",
)
_CATEGORY_PACKAGES = {
    "bio": ("samtools", "bcftools", "bwa", "bowtie2", "blast+", "hisat2", "star", "gatk"),
    "chem": ("cp2k", "orca", "xtb"),
    "tools": ("htop", "parallel", "rclone"),
}
FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yuki",
)
FOREIGN_TEMPLATES = (
    "sshd[{pid}]: Accepted publickey for {user} from 10.1.{a}.{b} port {port} ssh2: ED25519",
    "sshd[{pid}]: pam_unix(sshd:session): session closed for user {user}",
    "systemd[1]: Started session-{pid}.scope - Session {pid} of User {user}.",
    "CRON[{pid}]: (root) CMD (/usr/lib/sa/sa1 1 1)",
    "kernel: [{a}{b}.{port}] nfs: server storage{a} not responding, still trying",
    "slurmd[{pid}]: launch task StepId={port}.0 request from UID:{pid} GID:{pid} HOST:10.1.{a}.{b}",
    "sudo: {user} : TTY=pts/{a} ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/true",
    "OtherTracker: user={user} module=gcc/12.2.0 host=node.example time=1700000000.000001",
    "ModuleUsage: user={user} module=gcc/12.2.0 time=1700000000.000001",
)
MALFORMED_KINDS = (
    "missing_user",
    "missing_module",
    "missing_time",
    "bad_time",
    "bad_utf8",
    "empty",
)

_KEY_RE = re.compile(rb"(?:^|\s)(user|module|host|time)=(\S+)")


@dataclass
class Counts:
    """How many lines of each kind were generated."""

    valid: int = 0
    foreign: int = 0
    malformed: int = 0

    @property
    def total(self) -> int:
        return self.valid + self.foreign + self.malformed

    def add(self, kind: LineKind) -> None:
        setattr(self, kind, getattr(self, kind) + 1)

    def __add__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(
            valid=self.valid + other.valid,
            foreign=self.foreign + other.foreign,
            malformed=self.malformed + other.malformed,
        )


def _build_users(rng: random.Random, n: int = 200) -> list[str]:
    users: set[str] = set()
    while len(users) < n:
        style = rng.randrange(3)
        if style == 0:
            users.add(f"usr{rng.randrange(1000):03d}")
        elif style == 1:
            users.add(f"{rng.choice(FIRST_NAMES)}{rng.randrange(100)}")
        else:
            users.add(f"{rng.choice(FIRST_NAMES)[0]}{rng.choice(FIRST_NAMES)}")
    return sorted(users)


def random_version(rng: random.Random) -> str:
    """A plausible module version: x.y, year.month, toolchain-suffixed x.y.z, or x.y.z."""
    shape = rng.randrange(6)
    if shape == 0:
        return f"{rng.randrange(1, 13)}.{rng.randrange(10)}"
    if shape == 1:
        return f"{rng.randrange(2015, 2026)}.{rng.randrange(1, 13):02d}"
    if shape == 2:
        return f"{rng.randrange(1, 5)}.{rng.randrange(20)}.{rng.randrange(10)}-gcc-12.2.0"
    if shape == 3:
        return f"{rng.randrange(1, 5)}.{rng.randrange(20)}.{rng.randrange(10)}-foss-2023a"
    return f"{rng.randrange(1, 13)}.{rng.randrange(10)}.{rng.randrange(10)}"


def _build_modules(rng: random.Random) -> list[str]:
    modules: list[str] = []
    for name in PACKAGE_NAMES:
        versions = {random_version(rng) for _ in range(rng.randrange(2, 6))}
        modules.extend(f"{name}/{v}" for v in sorted(versions))
        if rng.random() < 0.25:
            modules.append(name)
    for category, names in _CATEGORY_PACKAGES.items():
        for name in names:
            versions = {random_version(rng) for _ in range(rng.randrange(2, 4))}
            modules.extend(f"{category}/{name}/{v}" for v in sorted(versions))
    return modules


def _build_hosts(rng: random.Random, n: int = 30) -> list[str]:
    hosts: set[str] = {"login1", "login2"}
    while len(hosts) < n:
        prefix = rng.choice(("node", "node", "node", "gpu", "bigmem"))
        hosts.add(f"{prefix}{rng.randrange(1, 400):03d}")
    return sorted(hosts)


@dataclass
class LineFactory:
    """Produces syslog lines (bytes ending in ``b"\\n"``) deterministically from ``seed``.

    The same seed and the same sequence of calls always yield the same lines.
    """

    seed: int = 0
    tag: str = "ModuleUsageTracking"
    style: str = "traditional"
    start_epoch: int = 1_700_000_000
    _rng: random.Random = field(init=False, repr=False)
    _users: list[str] = field(init=False, repr=False)
    _modules: list[str] = field(init=False, repr=False)
    _hosts: list[str] = field(init=False, repr=False)
    _tick: int = field(init=False, default=0, repr=False)
    _valid_n: int = field(init=False, default=0, repr=False)
    _foreign_n: int = field(init=False, default=0, repr=False)
    _malformed_n: int = field(init=False, default=0, repr=False)
    _header_cache: tuple[int, str] = field(init=False, default=(-1, ""), repr=False)

    def __post_init__(self) -> None:
        if self.style not in ("traditional", "iso"):
            raise ValueError(f"unknown style {self.style!r}; use 'traditional' or 'iso'")
        self._rng = random.Random(self.seed)
        self._users = _build_users(self._rng)
        self._modules = _build_modules(self._rng)
        self._hosts = _build_hosts(self._rng)

    @property
    def users(self) -> list[str]:
        return list(self._users)

    @property
    def modules(self) -> list[str]:
        return list(self._modules)

    @property
    def hosts(self) -> list[str]:
        return list(self._hosts)

    def _next_time_us(self) -> int:
        self._tick += 1
        return self.start_epoch * 1_000_000 + self._tick * TICK_US

    def _stamp(self, time_us: int) -> str:
        seconds, micros = divmod(time_us, 1_000_000)
        cached_second, cached = self._header_cache
        if cached_second != seconds:
            local = datetime.fromtimestamp(seconds, SYSLOG_TZ)
            if self.style == "iso":
                cached = local.strftime("%Y-%m-%dT%H:%M:%S.{micros:06d}") + _ISO_OFFSET
            else:
                cached = f"{_MONTHS[local.month - 1]} {local.day:2d} {local:%H:%M:%S}"
            self._header_cache = (seconds, cached)
        if self.style == "iso":
            return cached.format(micros=micros)
        return cached

    def _prefix(self, time_us: int, host: str, program: str) -> str:
        return f"{self._stamp(time_us)} {host} {program}"

    def valid(self) -> bytes:
        """A parseable load line with a natural key never produced before by this factory."""
        rng = self._rng
        time_us = self._next_time_us()
        n = self._valid_n
        self._valid_n += 1
        user = rng.choice(self._users)
        module = rng.choice(self._modules)
        host = rng.choice(self._hosts)
        seconds, micros = divmod(time_us, 1_000_000)
        pairs = [
            ("user", user),
            ("module", module),
            ("path", f"/opt/modulefiles/{module}.lua"),
            ("host", f"{host}.cluster.example.org"),
            ("time", f"{seconds}.{micros:06d}"),
        ]
        roll = rng.random()
        if roll < 0.3:
            pairs.insert(1, ("jobid", str(rng.randrange(10_000, 9_999_999))))
        elif roll < 0.45:
            pairs.insert(1, ("jobid", "nil"))
        if n % 7 == 6:
            variant = (n // 7) % 3
            if variant == 0:
                pairs.insert(0, pairs.pop())
            elif variant == 1:
                pairs.append(("foo", "bar"))
            else:
                pairs.reverse()
                pairs.insert(2, ("foo", "bar"))
        message = " ".join(f"{k}={v}" for k, v in pairs)
        return f"{self._prefix(time_us, host, self.tag)}: {message}\n".encode()

    def foreign(self) -> bytes:
        """A line from another syslog program; it never contains this factory's tag."""
        rng = self._rng
        time_us = self._next_time_us()
        template = FOREIGN_TEMPLATES[self._foreign_n % len(FOREIGN_TEMPLATES)]
        self._foreign_n += 1
        message = template.format(
            pid=rng.randrange(100, 99_999),
            user=rng.choice(self._users),
            a=rng.randrange(256),
            b=rng.randrange(256),
            port=rng.randrange(1024, 65_535),
        )
        line = f"{self._prefix(time_us, rng.choice(self._hosts), message)}\n"
        if self.tag in line:
            line = line.replace(self.tag, "x" * len(self.tag))
        return line.encode()

    def malformed(self) -> bytes:
        """A line carrying ``<tag>:`` whose message cannot be parsed into a load record."""
        rng = self._rng
        time_us = self._next_time_us()
        kind = MALFORMED_KINDS[self._malformed_n % len(MALFORMED_KINDS)]
        self._malformed_n += 1
        host = rng.choice(self._hosts)
        user = rng.choice(self._users)
        module = rng.choice(self._modules)
        seconds, micros = divmod(time_us, 1_000_000)
        fields = {
            "user": user.encode(),
            "module": module.encode(),
            "path": f"/opt/modulefiles/{module}.lua".encode(),
            "host": f"{host}.cluster.example.org".encode(),
            "time": f"{seconds}.{micros:06d}".encode(),
        }
        if kind == "missing_user":
            del fields["user"]
        elif kind == "missing_module":
            del fields["module"]
            del fields["path"]
        elif kind == "missing_time":
            del fields["time"]
        elif kind == "bad_time":
            fields["time"] = b"notanumber"
        elif kind == "bad_utf8":
            fields["user"] = b"\xff\xfe" + user.encode()
        prefix = self._prefix(time_us, host, self.tag).encode() + b":"
        if kind == "empty":
            return prefix + b"\n"
        return prefix + b" " + b" ".join(k.encode() + b"=" + v for k, v in fields.items()) + b"\n"

    def line(self, kind: LineKind) -> bytes:
        if kind == "valid":
            return self.valid()
        if kind == "foreign":
            return self.foreign()
        return self.malformed()

    def iter_mixed(
        self,
        n: int,
        foreign_every: int = 100,
        malformed_every: int = 250,
        counts: Counts | None = None,
    ) -> Iterator[bytes]:
        """Yield ``n`` lines: every ``malformed_every``-th is malformed, every
        ``foreign_every``-th (not already malformed) is foreign, the rest valid.
        A value of 0 disables that kind. ``counts`` is updated as lines are yielded."""
        for i in range(1, n + 1):
            kind: LineKind
            if malformed_every and i % malformed_every == 0:
                kind = "malformed"
            elif foreign_every and i % foreign_every == 0:
                kind = "foreign"
            else:
                kind = "valid"
            if counts is not None:
                counts.add(kind)
            yield self.line(kind)

    def mixed(
        self, n: int, foreign_every: int = 100, malformed_every: int = 250
    ) -> tuple[list[bytes], Counts]:
        """``n`` lines in total (see ``iter_mixed``) and how many of each kind."""
        counts = Counts()
        lines = list(self.iter_mixed(n, foreign_every, malformed_every, counts))
        return lines, counts


def natural_key(line: bytes) -> tuple[str, str, str, str] | None:
    """``(time, host, user, module)`` of a valid generated line, or None if incomplete."""
    _, sep, message = line.partition(b": ")
    if not sep:
        return None
    found = {m.group(1): m.group(2) for m in _KEY_RE.finditer(message)}
    try:
        return (
            found[b"time"].decode(),
            found[b"host"].decode(),
            found[b"user"].decode(),
            found[b"module"].decode(),
        )
    except (KeyError, UnicodeDecodeError):
        return None


_CHUNK_LINES = 8192


def write_log(
    path: Path,
    n: int,
    *,
    seed: int = 0,
    foreign_every: int = 100,
    malformed_every: int = 250,
    style: str = "traditional",
    gzip: bool = False,
    append: bool = False,
    factory: LineFactory | None = None,
) -> Counts:
    """Write ``n`` mixed lines to ``path`` in bounded chunks and return the counts.

    Pass ``factory`` to continue an existing stream (keys stay unique across files, e.g.
    for rotation tests); ``seed`` and ``style`` are then ignored. ``append`` opens the file
    in append mode (a gzip file then gets a new gzip member).
    """
    if factory is None:
        factory = LineFactory(seed=seed, style=style)
    counts = Counts()
    mode = "ab" if append else "wb"
    lines = factory.iter_mixed(n, foreign_every, malformed_every, counts)
    with _open(Path(path), mode, gzip) as out:
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= _CHUNK_LINES:
                out.write(b"".join(chunk))
                chunk.clear()
        if chunk:
            out.write(b"".join(chunk))
    return counts


def _open(path: Path, mode: str, gz: bool) -> BinaryIO:
    if gz:
        return gzip_module.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)

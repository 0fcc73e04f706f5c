"""The Lmod tracking line format: pure functions from bytes to records.

A line as rsyslog writes it::

    Apr 27 03:22:57 node1 ModuleUsageTracking: user=u1 module=gcc/5.4.0 path=/m/gcc/5.4.0.lua \
host=node1.example.org time=1682580177.622180

or with rsyslog's high-precision timestamp (``2023-04-27T03:22:57.622180-04:00 node1 ...``).
Lines without our tag in the program position are *foreign*; lines with it that cannot be
turned into a :class:`LoadEvent` are *rejected* with a reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from lmod_tracker.events import LoadEvent, Rejected

#: Longest value accepted per field, in characters; the schema's columns have the same sizes.
FIELD_LIMITS: dict[str, int] = {
    "user": 64,
    "package": 255,
    "version": 128,
    "host": 255,
    "path": 768,
    "jobid": 64,
}

#: The program name must lie within this many bytes from the start of a line.
HEADER_BYTES = 1024
#: Longest reject reason, in characters, whatever the input.
MAX_REASON = 200
#: Values quoted in a reject reason are cut to this many characters.
QUOTE_CHARS = 40

_TIME_RX = re.compile(r"([0-9]{1,12})(?:\.([0-9]+))?\Z")
#: A whole line as rsyslog writes the usual hook's message (both timestamp styles). Lines that
#: match take the fast path; every other line with our tag takes the general key=value path,
#: which gives the same result for lines both accept.
_FAST_LINE = (
    r"(?:[A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d|\d{{4}}-\d\d-\d\dT\S+) \S+ {tag}(?:\[\d+\])?:"
    r" user=(\S+) (?:jobid=(\S+) )?module=(\S+) path=(\S+) host=(\S+)"
    r" time=([0-9]{{1,12}})(?:\.([0-9]{{1,6}}))?\s*\Z")
_new = tuple.__new__
#: 9999-12-31 23:59:59 UTC, the last second a DATETIME column can hold.
_MAX_EPOCH = 253402300799
_NO_JOB = frozenset(("", "nil", "none", "null"))

Split = Literal["last", "first"]


def quote(value: str) -> str:
    """``value`` for a reject reason: quoted, and cut to :data:`QUOTE_CHARS` characters."""
    if len(value) > QUOTE_CHARS:
        return repr(value[:QUOTE_CHARS]) + "..."
    return repr(value)


def bounded(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON` characters."""
    if len(reason) <= MAX_REASON:
        return reason
    return reason[:MAX_REASON - 3] + "..."


def epoch_to_text(value: str, _cache: dict[int, str] = {}) -> str:  # noqa: B006
    """``'1682580177.62218'`` -> ``'2023-04-27 07:22:57.622180'`` (UTC), without floats.

    Digits past the sixth decimal are truncated. Raises ``ValueError`` (with a short message)
    for anything that is not a non-negative decimal number within the DATETIME range.
    """
    m = _TIME_RX.match(value)
    if m is None:
        raise ValueError(f"time={quote(value)} is not a decimal Unix time")
    return _utc_text(m.group(1), m.group(2), _cache)


def _utc_text(whole: str, frac: str | None, _cache: dict[int, str]) -> str:
    seconds = int(whole)
    if seconds > _MAX_EPOCH:
        raise ValueError(f"time={quote(whole + ('.' + frac if frac else ''))} is beyond year 9999")
    frac = (frac or "")[:6].ljust(6, "0")
    minute, second = divmod(seconds, 60)
    prefix = _cache.get(minute)
    if prefix is None:
        if len(_cache) > 4096:
            _cache.clear()
        prefix = time.strftime("%Y-%m-%d %H:%M:", time.gmtime(minute * 60))
        _cache[minute] = prefix
    return f"{prefix}{second:02d}.{frac}"


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    """The outcome of parsing a block of complete lines."""

    events: list[LoadEvent] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    foreign: int = 0


class Parser:
    """Parses Lmod tracking lines for one syslog tag.

    ``split`` says where ``module=`` splits into package and version: at the ``last`` slash
    (``bio/samtools/1.9`` -> ``bio/samtools`` + ``1.9``) or the ``first`` one.
    """

    def __init__(self, tag: str = "ModuleUsageTracking", split: Split = "last",
                 max_line_bytes: int = 8192) -> None:
        if not tag or any(c.isspace() for c in tag) or ":" in tag:
            raise ValueError("the syslog tag must be a non-empty word without spaces or ':'")
        self.tag = tag
        self.split = split
        self.max_line_bytes = max_line_bytes
        self._tag_b = tag.encode()
        self._needle = b" " + self._tag_b
        self._minutes: dict[int, str] = {}
        self._seconds: dict[str, str] = {}
        self._fast = re.compile(_FAST_LINE.format(tag=re.escape(tag)))

    def is_ours(self, line: bytes) -> bool:
        """Whether ``line`` carries our tag in the program position (the header alone decides).

        Cheap, and it reads at most the first :data:`HEADER_BYTES` bytes, so a prefix of a huge
        line gives the same answer as the whole line: a line cutter uses it to count a line too
        long to parse as rejected (ours) or foreign. ``parse_line`` returns ``None`` exactly
        when this is false.
        """
        return self._locate(line[:HEADER_BYTES]) is not None

    def _locate(self, line: bytes) -> tuple[int, bytes] | None:
        """Where the message starts and the syslog host, or ``None`` if the line is foreign."""
        i = line.find(self._needle)
        if i < 0:
            return None
        j = i + len(self._needle)
        rest = line[j:j + 1]
        if rest == b"[":
            close = line.find(b"]:", j)
            if close < 0:
                return None
            msg_start = close + 2
        elif rest == b":":
            msg_start = j + 1
        else:
            return None
        header = line[:i].split()
        if len(header) not in (2, 4):  # ISO stamp + host, or "Mon dd hh:mm:ss" + host
            return None
        return msg_start, header[-1]

    def parse_line(self, line: bytes) -> LoadEvent | str | None:
        """One line without its newline -> event, reject reason, or ``None`` if foreign.

        A reject reason is at most :data:`MAX_REASON` characters long.
        """
        where = self._locate(line[:HEADER_BYTES])
        if where is None:
            return None
        msg_start, host = where
        if len(line) > self.max_line_bytes:
            return f"line longer than {self.max_line_bytes} bytes"
        try:
            message = line[msg_start:].decode("utf-8")
            syslog_host = host.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 at byte {exc.start + msg_start}"
        result = self._message(message, syslog_host)
        return bounded(result) if isinstance(result, str) else result

    def _message(self, message: str, syslog_host: str) -> LoadEvent | str:
        fields: dict[str, str] = {}
        for token in message.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        user = fields.get("user")
        module = fields.get("module")
        stamp = fields.get("time")
        if not user:
            return "missing user="
        if not module:
            return "missing module="
        if not stamp:
            return "missing time="
        try:
            load_time = epoch_to_text(stamp)
        except ValueError as exc:
            return str(exc)
        if self.split == "last":
            package, _, version = module.rpartition("/")
            if not package:
                package, version = version, ""
        else:
            package, _, version = module.partition("/")
        host = fields.get("host") or syslog_host
        path = fields.get("path") or None
        jobid: str | None = fields.get("jobid")
        if jobid is not None and jobid.lower() in _NO_JOB:
            jobid = None
        for name, value in (("user", user), ("package", package), ("version", version),
                            ("host", host), ("path", path), ("jobid", jobid)):
            if value is not None and len(value) > FIELD_LIMITS[name]:
                return f"{name} longer than {FIELD_LIMITS[name]} characters"
        return LoadEvent(load_time, user, package, version, host, path, jobid)

    def _second(self, whole: str) -> str:
        """``'1682580177'`` -> ``'2023-04-27 07:22:57.'`` (cached), or '' if out of range."""
        try:
            text = _utc_text(whole, None, self._minutes)[:-6]
        except ValueError:
            return ""
        if len(self._seconds) > 4096:
            self._seconds.clear()
        self._seconds[whole] = text
        return text

    def parse_block(self, block: bytes, base_offset: int) -> ParsedBlock:
        """Parse complete lines (``block`` ends with a newline, or is one final line).

        ``base_offset`` is the file offset of ``block[0]``; rejects carry their own offsets.
        """
        out = ParsedBlock()
        events = out.events
        rejects = out.rejects
        foreign = 0
        needle = self._tag_b
        parse = self.parse_line
        fast = self._fast.match
        seconds = self._seconds
        last = self.split == "last"
        pos = base_offset
        for line in _lines(block):
            n = len(line) + 1
            if needle not in line:
                foreign += 1
                pos += n
                continue
            m = None
            if n <= self.max_line_bytes:
                try:  # noqa: SIM105 - a with-block costs more on this hot path
                    m = fast(line.decode())
                except UnicodeDecodeError:
                    pass
            if m is not None:
                user, jobid, module, path, host, whole, frac = m.groups()
                if last:
                    package, _, version = module.rpartition("/")
                    if not package:
                        package, version = version, ""
                else:
                    package, _, version = module.partition("/")
                if jobid is not None and jobid.lower() in _NO_JOB:
                    jobid = None
                second = seconds.get(whole)
                if second is None:
                    second = self._second(whole)
                if (second and len(user) <= 64 and len(package) <= 255
                        and len(version) <= 128 and len(host) <= 255 and len(path) <= 768
                        and (jobid is None or len(jobid) <= 64)):
                    events.append(_new(LoadEvent, (
                        second + (frac.ljust(6, "0") if frac else "000000"), user, package,
                        version, host, path, jobid)))
                    pos += n
                    continue
            result = parse(line.rstrip(b"\r"))
            if result is None:
                foreign += 1
            elif type(result) is str:
                rejects.append(Rejected(pos, result, line[:4096]))
            else:
                events.append(result)  # type: ignore[arg-type]
            pos += n
        return ParsedBlock(events, rejects, foreign)


def _lines(block: bytes) -> Iterator[bytes]:
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return iter(lines)

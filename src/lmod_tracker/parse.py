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

_TIME_RX = re.compile(r"(\d{1,12})(?:\.(\d+))?\Z")
#: 9999-12-31 23:59:59 UTC, the last second a DATETIME column can hold.
_MAX_EPOCH = 253402300799
_NO_JOB = frozenset(("", "nil", "none", "null"))

Split = Literal["last", "first"]


def epoch_to_text(value: str, _cache: dict[int, str] = {}) -> str:  # noqa: B006
    """``'1682580177.62218'`` -> ``'2023-04-27 07:22:57.622180'`` (UTC), without floats.

    Digits past the sixth decimal are truncated. Raises ``ValueError`` for anything that is not a
    non-negative decimal number within the DATETIME range.
    """
    m = _TIME_RX.match(value)
    if m is None:
        raise ValueError(f"time={value[:40]!r} is not a decimal Unix time")
    seconds = int(m.group(1))
    if seconds > _MAX_EPOCH:
        raise ValueError(f"time={value[:40]!r} is beyond year 9999")
    frac = (m.group(2) or "")[:6].ljust(6, "0")
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

    def parse_line(self, line: bytes) -> LoadEvent | str | None:
        """One line without its newline -> event, rejection reason, or ``None`` if foreign."""
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
        if len(line) > self.max_line_bytes:
            return f"line longer than {self.max_line_bytes} bytes"
        try:
            message = line[msg_start:].decode("utf-8")
            syslog_host = header[-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 at byte {exc.start + msg_start}"
        return self._message(message, syslog_host)

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
        pos = base_offset
        for line in _lines(block):
            n = len(line) + 1
            if needle not in line:
                foreign += 1
            else:
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

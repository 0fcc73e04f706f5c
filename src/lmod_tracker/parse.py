"""The Lmod tracking line format: pure functions from bytes to records.

A line as rsyslog writes it by default::

    Apr 27 03:22:57 node1 ModuleUsageTracking: user=u1 module=gcc/5.4.0 path=/m/gcc/5.4.0.lua \
host=node1.example.org time=1682580177.622180

A line is *ours* when its syslog program name (the tag Lmod's hook logs with) stands in the
program position of the header, whatever the header looks like. Lines that are ours but cannot be
turned into a :class:`LoadEvent` are *rejected* with a short reason; every other line is
*foreign*. The program position is found like this:

* **RFC 5424** (rsyslog's ``RSYSLOG_SyslogProtocol23Format``:
  ``<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - - user=...``): the line
  starts with ``[<PRI>]VERSION TIMESTAMP``; the program is APP-NAME, the fourth field. After it
  come PROCID, MSGID and the structured data (``-`` or ``[id k="v"]...``), then the message.
* **Everything else** (traditional ``Apr 27 03:22:57``, with a year in front, with fractions of
  a second as ``journalctl -o short-precise`` writes them, RFC 3339 as in ``RSYSLOG_FileFormat``
  or ``journalctl -o short-iso``, ``journalctl -o short-full``/``short-unix``/
  ``short-monotonic``, a ``<PRI>`` in front, a relay's stamp and host in front of the
  original's, no host at all): the header is a run of *header words* from the start of the line,
  and the program is the first word that is not one. A header word holds only characters of
  timestamps, host names and addresses (letters, digits, non-ASCII bytes and ``- . : / % @ + ,
  _``), has a letter or digit, and does not end in ``:``. The program word is the tag, followed
  by nothing, ``:`` or ``[pid]`` and an optional ``:``.

So another program's line that quotes our tag in its message stays foreign: its own program word
(``sshd[812]:``, ``sudo:``) ends the header before our tag is reached. The one thing no syslog
header can tell apart is a relay host from a program name logged without a colon
(``relay1 node1 ModuleUsageTracking: ...`` vs. ``node1 myprog ModuleUsageTracking: ...``);
such a line counts as ours, and is rejected unless its message is a valid load record.

Everything here is linear in the line length and reads only the first :data:`HEADER_BYTES`
bytes to decide whether a line is ours (at most 24 header words come before the program), so a
hostile line of any size costs little. The host that counts is the message's ``host=`` key; the
header word just before the program (when it is a host, not part of a timestamp) is only the
fallback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lmod_tracker.events import LoadEvent, Rejected

#: Longest value accepted per field, in characters; the schema's columns have the same sizes.
FIELD_LIMITS: dict[str, int] = {
    "user": 64,
    "package": 255,
    "version": 128,
    "host": 255,
    "path": 768,
    "jobid": 64,
    "cluster": 64,
}

#: The program name must end within this many bytes from the start of a line. A prefix of a
#: line longer than this is enough for :meth:`Parser.is_ours`.
HEADER_BYTES = 1024
#: Longest reject reason, in characters, whatever the input.
MAX_REASON = 200
#: Values quoted in a reject reason are cut to this many characters.
QUOTE_CHARS = 40

#: At most this many header words (timestamp parts, hosts) come before the program name: room
#: for the stamps and hosts of four relays in front of the origin's header.
_MAX_HEADER_WORDS = 24

_TIME_RX = re.compile(r"([0-9]{1,12})(?:\.([0-9]+))?\Z")
#: A whole line as rsyslog writes the usual hook's message (traditional or RFC 3339 stamp, one
#: host, the tag with or without a pid). Lines that match take the fast path; every other line
#: takes the general path, which gives the same result for every line both accept (its header
#: rules accept everything this pattern does).
_FAST_LINE = (
    r"(?:[A-Z][a-z]{{2}} [ 0-9][0-9] [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}"
    r"|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9:.+Z-]{{0,24}}(?<!:))"
    r" [A-Za-z0-9][A-Za-z0-9_./%@+,-]{{0,254}} (?:{tags})(?:\[[0-9]{{1,10}}\])?:"
    r" user=({v}) (?:jobid=({v}) )?module=({v}) path=({v}) host=({v})"
    r" time=([0-9]{{1,12}})(?:\.([0-9]{{1,6}}))?\s*\Z")
#: A value the fast pattern takes as it is, the same in :func:`message_fields`: it does not
#: start with a quote (a quoted value) or end with a comma (a ``key=value, `` separator).
#: Values with rsyslog's ``#011`` (an escaped tab) are left to the general path by the caller.
_FAST_VALUE = r'[^\s"]\S*(?<!,)'

#: The usual header (a traditional or RFC 3339 stamp, one host, the program word), found with one
#: match; it finds the program word where the word-by-word scan would (``Parser`` checks the
#: rest: that the host word is not itself our tag, and that no tag looks like a stamp word).
_QUICK_HEAD = (
    rb"(?:<[0-9]{1,3}>)?(?:[A-Z][a-z]{2} [ 0-9]?[0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}"
    rb"(?:\.[0-9]{1,9})?|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+Z-]*[0-9Z])"
    rb" +([A-Za-z0-9][-\w./%@+,]*) +(?:<tags>)(?:\[[^\]\s]*\])?:?(?=\s|\Z)")
#: Tags that could be mistaken for a word of the stamps above (no quick header for them).
_STAMPISH_TAG = re.compile(r"[A-Z][a-z]{2}|[0-9]+|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}")
#: The fast pattern's header (stamp, host, pid) is at most this long, so its program word ends
#: within HEADER_BYTES for tags up to _FAST_TAG_BYTES bytes (longer tags: no fast path).
_FAST_TAG_BYTES = HEADER_BYTES - 320
_NEVER = re.compile(r"(?!)")
#: One header word (and the white space before it).
_WORD = re.compile(rb"\s*(\S+)")
#: A header word: characters of stamps, hosts and addresses, at least one letter or digit.
_HEADER_WORD = re.compile(rb"[-.:/%@+,_]*[A-Za-z0-9\x80-\xff][-\w.:/%@+,\x80-\xff]*")
#: A header word with a colon: a time, an RFC 3339 stamp, a UTC offset or an IPv6 address (not
#: ``prog:text``, a program word glued to its message).
_COLON_WORD = re.compile(
    rb"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%[-\w.]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.,+Z-]*"
    rb"|[+-]?[0-9][0-9:.,]*")
#: A header word that is part of a timestamp, so not the host before the program name.
_TIME_WORD = re.compile(
    rb"(?:[0-9]+(?:[.,][0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T\S*)?"
    rb"|[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?(?:[.,][0-9]+)?|[A-Z][a-z]{2}|[A-Z]{1,5}"
    rb"|[+-][0-9]{2}:?[0-9]{2})")
_PRI = re.compile(rb"<[0-9]{1,3}>")
#: ``journalctl -o short-monotonic`` / ``short-delta`` stamps: ``[  123.456789]``.
_MONOTONIC = re.compile(rb"\[[ 0-9.<>]{1,48}\]")
#: RFC 5424 up to APP-NAME: ``[<PRI>]VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME``.
_RFC5424 = re.compile(rb"(?:<[0-9]{1,3}>)?[1-9][0-9]{0,2} (?:[0-9]{4}-[0-9]{2}-[0-9]{2}T\S*|-)"
                      rb" (\S+) (\S+)")
#: RFC 5424 after APP-NAME: `` PROCID MSGID `` (structured data follows).
_RFC5424_IDS = re.compile(rb" \S+ \S+ ")
#: RFC 5424 structured data: one or more ``[id name="value" ...]`` (values may escape ``\\"``).
_SD = re.compile(rb'(?:\[[^\s\]"=]+(?: [^\s\]"=]+="(?:[^"\\]|\\.)*")*\])+')
_BOM = "\ufeff"
#: An IPv4 or IPv6 address in place of a host name.
_IP = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\S+)?")
#: One ``key=value`` of a message: a double-quoted value keeps its spaces (Lmod's own tools
#: read ``key="a b"``), an unquoted one ends at white space. A key starts a word (linear time
#: on any line).
_FIELD = re.compile(r'(?<![^\s,])([^\s=,]+)=(?:"([^"]*)"(?=[\s,]|\Z)|(\S*))')
#: rsyslog's ``$RepeatedMsgReduction``: ``message repeated 3 times: [ user=...]``.
_REPEATED = re.compile(r"\s*message repeated [0-9]+ times: \[(.*)\]\s*\Z", re.S)

_new = tuple.__new__
#: 9999-12-31 23:59:59 UTC, the last second a DATETIME column can hold.
_MAX_EPOCH = 253402300799
#: ``jobid=`` values that mean "not in a job" (compared without case), stored as NULL.
NO_JOB_TOKENS: tuple[str, ...] = ("nil", "none", "null", "interactive", "na", "n/a", "-", "")
#: ``userload=`` values (compared without case): 1 the user asked for the module, 0 it was
#: loaded as a dependency; any other value is stored as NULL (not logged).
_USERLOAD = {"yes": 1, "1": 1, "true": 1, "no": 0, "0": 0, "false": 0}
#: The ``cluster_from_host`` rule of Lmod's default ``syshost``: the second label of the host.
SECOND_LABEL = "second-label"

Split = Literal["last", "first"]
#: Where a line of ours has its message: (start of what follows the program name, the syslog
#: host or ``None``, whether RFC 5424 fields still stand between the two).
_Where = tuple[int, bytes | None, bool]


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


def _tags(tag: str | Sequence[str]) -> tuple[str, ...]:
    tags = (tag,) if isinstance(tag, str) else tuple(dict.fromkeys(tag))
    if not tags:
        raise ValueError("at least one syslog tag is needed")
    for t in tags:
        if (not isinstance(t, str) or not t or any(c.isspace() for c in t)
                or any(c in t for c in ":[]")):
            raise ValueError(
                f"syslog tag {t!r}: must be a non-empty word without spaces, ':', '[' or ']'")
    return tags


def _after_program(word: bytes, name_len: int, start: int) -> int:
    """Where the message starts after the program word ``word`` (at ``start``) of a line.

    The word is the tag (``name_len`` bytes), then nothing, ``:`` or ``[pid]`` and an optional
    ``:``; anything glued on after that already belongs to the message.
    """
    if name_len == len(word):
        return start + name_len
    if word[name_len] == 0x3A:  # ':'
        return start + name_len + 1
    close = word.find(b"]", name_len)
    if close < 0:
        return start + len(word)
    end = close + 1
    if word[end:end + 1] == b":":
        end += 1
    return start + end


def _fallback_host(word: bytes | None) -> bytes | None:
    """The header word before the program as the syslog host, unless it is part of a stamp."""
    if word is None or _TIME_WORD.fullmatch(word) is not None:
        return None
    return word


def _rfc5424_message(line: bytes, pos: int) -> int | str:
    """Where the message starts in an RFC 5424 line whose APP-NAME ends at ``pos``."""
    ids = _RFC5424_IDS.match(line, pos)
    if ids is None:
        return "RFC 5424 header ends before its structured data"
    pos = ids.end()
    if line[pos:pos + 1] == b"-":
        pos += 1
    else:
        sd = _SD.match(line, pos)
        if sd is None:
            return "malformed RFC 5424 structured data"
        pos = sd.end()
    if pos == len(line):
        return pos
    if line[pos] != 0x20:
        return "malformed RFC 5424 structured data"
    return pos + 1


def message_fields(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of a message (the last of a repeated key wins).

    As sites' hooks and rsyslog write them: separated by white space, by rsyslog's ``#011``
    (an escaped tab) or by ``, `` (``user=a, module=gcc/12``); a value may be double-quoted
    (``path="/home/a/My Modules/x.lua"``). rsyslog's ``message repeated N times: [...]`` is the
    message in the brackets: the same load again, stored once by its natural key.
    """
    repeated = _REPEATED.match(message)
    if repeated is not None:
        message = repeated.group(1)
    if "#011" in message:
        message = message.replace("#011", " ")
    fields: dict[str, str] = {}
    for m in _FIELD.finditer(message):
        quoted, plain = m.group(2), m.group(3)
        if quoted is not None:
            fields[m.group(1)] = quoted
        else:
            fields[m.group(1)] = plain[:-1] if plain[-1:] == "," else plain
    return fields


class _SecondLabel:
    """Lmod's default syshost: the second label of the host name (none for an IP address)."""

    def __call__(self, host: str) -> str | None:
        if _IP.fullmatch(host):
            return None
        labels = host.split(".")
        return labels[1] or None if len(labels) > 1 else None


class _HostGroup:
    """The one group of a regular expression searched in the host name."""

    def __init__(self, rx: re.Pattern[str]) -> None:
        self.rx = rx

    def __call__(self, host: str) -> str | None:
        m = self.rx.search(host)
        return m.group(1) or None if m is not None else None


def host_rule(rule: str | None) -> Callable[[str], str | None] | None:
    """The function that derives a cluster from a ``host=`` value, or None for no rule.

    ``rule`` is :data:`SECOND_LABEL` (``login1.frontera.tacc.utexas.edu`` -> ``frontera``,
    a host with one label has none) or a regular expression with one group, searched in the
    host name (no match: no cluster). Raises ``ValueError`` for anything else. The function can
    be pickled with the parser (for a parsing child process).
    """
    if rule is None or rule == "":
        return None
    if rule == SECOND_LABEL:
        return _SecondLabel()
    try:
        rx = re.compile(rule)
    except re.error as exc:
        raise ValueError(f"cluster_from_host {rule!r} is not a regular expression: {exc}"
                         ) from None
    if rx.groups != 1:
        raise ValueError(f"cluster_from_host {rule!r} must have exactly one group"
                         f" (it has {rx.groups}), or be {SECOND_LABEL!r}")
    return _HostGroup(rx)


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    """The outcome of parsing a block of complete lines."""

    events: list[LoadEvent] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    foreign: int = 0


class Parser:
    """Parses Lmod tracking lines logged under one syslog tag or several.

    ``tag`` is one tag or a sequence of them (a site that renamed its tag keeps old files with
    the old one). ``split`` says where ``module=`` splits into package and version: at the
    ``last`` slash (``bio/samtools/1.9`` -> ``bio/samtools`` + ``1.9``) or the ``first`` one.
    Lines longer than ``max_line_bytes`` are rejected.

    The cluster of a load is the line's ``cluster=`` (or ``syshost=``) value; else ``cluster``
    (this daemon's setting); else what ``cluster_from_host`` (see :func:`host_rule`) derives
    from ``host=``; else None. ``jobid=`` values in ``no_job_tokens`` (without case) are None.
    """

    def __init__(self, tag: str | Sequence[str] = "ModuleUsageTracking", split: Split = "last",
                 max_line_bytes: int = 8192, *, cluster: str | None = None,
                 cluster_from_host: str | None = None,
                 no_job_tokens: Sequence[str] = NO_JOB_TOKENS) -> None:
        self.cluster = cluster or None
        if self.cluster is not None and (len(self.cluster) > FIELD_LIMITS["cluster"]
                                         or any(c.isspace() for c in self.cluster)):
            raise ValueError(f"cluster {cluster!r}: at most {FIELD_LIMITS['cluster']}"
                             " characters, no spaces")
        self._host_rule = host_rule(cluster_from_host)
        self._clusters: dict[str, str | None] = {}
        self.no_job = frozenset(t.lower() for t in no_job_tokens) | {""}
        self.tags = _tags(tag)
        #: The first (current) tag.
        self.tag = self.tags[0]
        self.split = split
        self.max_line_bytes = max_line_bytes
        self._tag_bytes = tuple(t.encode() for t in self.tags)
        self._tag_set = frozenset(self._tag_bytes)
        self._minutes: dict[int, str] = {}
        self._seconds: dict[str, str] = {}
        alternatives = "|".join(re.escape(t) for t in self.tags)
        self._fast = re.compile(_FAST_LINE.format(tags=alternatives, v=_FAST_VALUE))
        if max(map(len, self._tag_bytes)) > _FAST_TAG_BYTES:
            self._fast = _NEVER
        self._quick: Callable[[bytes, int, int], re.Match[bytes] | None] | None = None
        if not any(_STAMPISH_TAG.fullmatch(t) for t in self.tags):
            self._quick = re.compile(
                _QUICK_HEAD.replace(b"<tags>", alternatives.encode())).match

    @classmethod
    def from_settings(cls, settings: Any) -> Parser:
        """The parser a daemon with these settings (config.Settings) uses."""
        return cls(settings.syslog_tag, settings.module_split, settings.max_line_bytes,
                   cluster=settings.cluster, cluster_from_host=settings.cluster_from_host,
                   no_job_tokens=settings.no_job_tokens)

    def cluster_of(self, host: str) -> str | None:
        """The cluster of a line without ``cluster=``: the setting, else the host rule."""
        if self.cluster is not None or self._host_rule is None:
            return self.cluster
        try:
            return self._clusters[host]
        except KeyError:
            pass
        found = self._host_rule(host)
        if found is not None and len(found) > FIELD_LIMITS["cluster"]:
            found = None
        if len(self._clusters) > 4096:
            self._clusters.clear()
        self._clusters[host] = found
        return found

    def is_ours(self, line: bytes) -> bool:
        """Whether ``line`` carries our tag in the program position (the header alone decides).

        Cheap, and it reads at most the first :data:`HEADER_BYTES` bytes: any prefix longer
        than that gives the same answer as the whole line, so a line cutter can ask about a line
        too long to parse (rejected if ours, else foreign). ``parse_line`` returns ``None``
        exactly when this is false.
        """
        return self._locate(line) is not None

    def _locate(self, line: bytes) -> _Where | None:
        """Where the message of a line of ours starts (see the module docs), else ``None``."""
        cut = len(line) > HEADER_BYTES  # then a word running up to HEADER_BYTES is incomplete
        tags = self._tag_set
        if self._quick is not None:
            q = self._quick(line, 0, HEADER_BYTES)
            if q is not None and not (cut and q.end() == HEADER_BYTES):
                host = q.group(1)
                if host not in tags:
                    return q.end(), _fallback_host(host), False
        head = line[:HEADER_BYTES]
        m = _RFC5424.match(head)
        if m is not None:
            app = m.group(2)
            if app in tags and not (cut and m.end() == len(head)):
                host = m.group(1)
                return m.end(), (None if host == b"-" else host), True
            if app.partition(b":")[0].partition(b"[")[0] not in tags:
                return None  # another program's (or, cut at HEADER_BYTES, an unknown one's)
            # Our tag with ":" or "[": not an APP-NAME, so not RFC 5424 after all.
        pos = 0
        if head[:1] == b"<":
            pri = _PRI.match(head)
            pos = 0 if pri is None else pri.end()
        if head[pos:pos + 1] == b"[":
            mono = _MONOTONIC.match(head, pos)
            if mono is None:
                return None
            pos = mono.end()
        elif head[pos:pos + 1].isspace():
            return None  # a continuation line, never a header
        prev: bytes | None = None
        for _ in range(_MAX_HEADER_WORDS + 1):
            w = _WORD.match(head, pos)
            if w is None:
                return None
            word = w.group(1)
            start = w.start(1)
            whole = not cut or w.end() < len(head)  # else the word may go on past the header
            if word[:1] == b"<":
                pri = _PRI.match(word)
                if pri is not None:
                    start += pri.end()
                    word = word[pri.end():]
            name = word.partition(b":")[0].partition(b"[")[0]
            if name in tags and (whole or len(name) < len(word)):
                return _after_program(word, len(name), start), _fallback_host(prev), False
            if (not whole or word[-1:] == b":" or _HEADER_WORD.fullmatch(word) is None
                    or (b":" in word and _COLON_WORD.fullmatch(word) is None)):
                return None
            prev = word
            pos = w.end()
        return None

    def _split_module(self, module: str) -> tuple[str, str]:
        """``module=`` as (package, version), at the last or the first slash
        (``module_split``); a module without a slash is a package without a version. Empty
        parts (``gcc//12``, ``bio/samtools/1.9/``) are dropped first: Lmod names have none."""
        if "//" in module or module[:1] == "/" or module[-1:] == "/":
            module = "/".join(part for part in module.split("/") if part)
        if self.split == "last":
            package, _, version = module.rpartition("/")
            if not package:
                return version, ""
            return package, version
        package, _, version = module.partition("/")
        return package, version

    def parse_line(self, line: bytes) -> LoadEvent | str | None:
        """One line without its newline -> event, reject reason, or ``None`` if foreign.

        A reject reason is at most :data:`MAX_REASON` characters long.
        """
        where = self._locate(line)
        if where is None:
            return None
        if len(line) > self.max_line_bytes:
            return f"line longer than {self.max_line_bytes} bytes"
        start, syslog_host, rfc5424 = where
        if rfc5424:
            found = _rfc5424_message(line, start)
            if isinstance(found, str):
                return found
            start = found
        try:
            message = line[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 at byte {exc.start + start}"
        if rfc5424 and message.startswith(_BOM):
            message = message[1:]
        result = self._message(message, syslog_host)
        return bounded(result) if isinstance(result, str) else result

    def _message(self, message: str, syslog_host: bytes | None) -> LoadEvent | str:
        fields: dict[str, str] = {}
        fields = message_fields(message)
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
        package, version = self._split_module(module)
        if not package:
            return f"module={quote(module)} names no package"
        host = fields.get("host")
        if not host:
            if syslog_host is None:
                return "missing host= (and no syslog host in the header)"
            try:
                host = syslog_host.decode("utf-8")
            except UnicodeDecodeError:
                return "missing host= (and the syslog host is not UTF-8)"
        path = fields.get("path") or None
        jobid: str | None = fields.get("jobid")
        if jobid is not None and jobid.lower() in self.no_job:
            jobid = None
        cluster = fields.get("cluster") or fields.get("syshost") or self.cluster_of(host)
        userload = fields.get("userload")
        flag = None if userload is None else _USERLOAD.get(userload.lower())
        checks: tuple[tuple[str, str | None], ...] = (
            ("user", user), ("package", package), ("version", version), ("host", host),
            ("path", path), ("jobid", jobid), ("cluster", cluster))
        for name, text in checks:
            if text is not None and len(text) > FIELD_LIMITS[name]:
                return f"{name} longer than {FIELD_LIMITS[name]} characters"
        return LoadEvent(load_time, user, package, version, host, path, jobid, cluster, flag)

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
        Every line is counted once: as an event, a reject or a foreign line.
        """
        out = ParsedBlock()
        events = out.events
        rejects = out.rejects
        foreign = 0
        needle = self._tag_bytes[0]
        more_tags = self._tag_bytes[1:]
        parse = self.parse_line
        fast = self._fast.match
        seconds = self._seconds
        max_line = self.max_line_bytes
        no_job = self.no_job
        fixed = self.cluster
        by_rule = fixed is None and self._host_rule is not None
        clusters = self._clusters
        # Equal values of the block's events are one object each: a batch of events holds
        # about half the memory (users, modules, hosts and paths repeat from line to line),
        # and marshal sends each once to the parent (parseproc). A module is split once.
        modules: dict[str, tuple[str, str]] = {}
        share = {}.setdefault
        pos = base_offset
        escaped = b"#011" in block  # rsyslog's escaped tab: a separator (message_fields)
        for line in _lines(block):
            n = len(line) + 1
            if needle not in line and not (more_tags and _has_any(line, more_tags)):
                foreign += 1
                pos += n
                continue
            m = None
            if n <= max_line and not (escaped and b"#011" in line):
                try:  # noqa: SIM105 - a with-block costs more on this hot path
                    m = fast(line.decode())
                except UnicodeDecodeError:
                    pass
            if m is not None:
                user, jobid, module, path, host, whole, frac = m.groups()
                split = modules.get(module)
                if split is None:
                    package, version = self._split_module(module)
                    split = modules[module] = (share(package, package),
                                               share(version, version))
                package, version = split
                if jobid is not None and jobid.lower() in no_job:
                    jobid = None
                second = seconds.get(whole)
                if second is None:
                    second = self._second(whole)
                if (second and package and len(user) <= 64 and len(package) <= 255
                        and len(version) <= 128 and len(host) <= 255 and len(path) <= 768
                        and (jobid is None or len(jobid) <= 64)):
                    events.append(_new(LoadEvent, (
                        second + (frac.ljust(6, "0") if frac else "000000"), share(user, user),
                        package, version, share(host, host), share(path, path), jobid,
                        clusters.get(host) or self.cluster_of(host) if by_rule else fixed,
                        None)))
                    pos += n
                    continue
            result = parse(line.rstrip(b"\r"))
            if result is None:
                foreign += 1
            elif type(result) is str:
                rejects.append(Rejected(pos, result, line[:4096]))
            else:
                t, user, package, version, host, path, jobid, cluster, flag = result
                events.append(_new(LoadEvent, (
                    t, share(user, user), share(package, package), share(version, version),
                    share(host, host), share(path, path), jobid, share(cluster, cluster),
                    flag)))
            pos += n
        return ParsedBlock(events, rejects, foreign)


def _has_any(line: bytes, tags: tuple[bytes, ...]) -> bool:
    return any(t in line for t in tags)


def _lines(block: bytes) -> Iterator[bytes]:
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return iter(lines)

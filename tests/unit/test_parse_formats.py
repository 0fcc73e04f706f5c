"""Header styles: which lines are ours (event or reject) and which are foreign, whatever the header.

One table row per header style, each a line as the named writer produces it; then the lines that
only quote our tag in another program's message; then properties over generated headers and
random bytes, and hostile lines of 1 MiB.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lmod_tracker.events import LoadEvent
from lmod_tracker.parse import HEADER_BYTES, MAX_REASON, Parser

TAG = b"ModuleUsageTracking"
MSG = (b"user=usr123 module=gcc/12.2.0 path=/apps/gcc/12.2.0.lua host=node1.example.org"
       b" time=1682580177.622180")
#: The same load without ``host=``: the syslog host from the header is the fallback.
NO_HOST = b"user=usr123 module=gcc/12.2.0 path=/apps/gcc/12.2.0.lua time=1682580177.622180"


def event(host: str) -> LoadEvent:
    return LoadEvent("2023-04-27 07:22:57.622180", "usr123", "gcc", "12.2.0", host,
                     "/apps/gcc/12.2.0.lua", None)


#: (header in front of the message, the syslog host it names or None), one row per style.
STYLES = [
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="rsyslog-traditional"),
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTracking[4242]: ", "node1",
                 id="rsyslog-traditional-pid"),
    pytest.param(b"Apr  7 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="rsyslog-traditional-day-padded"),
    pytest.param(b"2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking: ", "node1",
                 id="rsyslog-FileFormat-rfc3339"),
    pytest.param(b"2023-04-27T07:22:57.622180Z node1 ModuleUsageTracking[4242]: ", "node1",
                 id="rfc3339-utc"),
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTracking ", "node1",
                 id="tag-without-colon"),
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTracking:", "node1",
                 id="tag-glued-to-message"),
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTracking[12345 ", "node1",
                 id="tag-cut-at-32-chars"),
    pytest.param(b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - - ",
                 "node1", id="rfc5424-SyslogProtocol23Format"),
    pytest.param(b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking 4242 - - ",
                 "node1", id="rfc5424-procid"),
    pytest.param(b'<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - '
                 b'[x@1 a="b"] ', "node1", id="rfc5424-structured-data"),
    pytest.param(b'<134>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking 4242 ID47 '
                 b'[x@1 a="b\\"] c" d="e"][origin@2 ip="10.0.0.1"] \xef\xbb\xbf', "node1",
                 id="rfc5424-escaped-sd-and-bom"),
    pytest.param(b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - -  ",
                 "node1", id="rfc5424-legacy-message-leading-space"),
    pytest.param(b"<14>1 - - ModuleUsageTracking - - - ", None, id="rfc5424-nil-values"),
    pytest.param(b"1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - - ", "node1",
                 id="rfc5424-rawmsg-after-pri"),
    pytest.param(b"2023-04-27T03:22:57-0400 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-iso"),
    pytest.param(b"2023-04-27T03:22:57-04:00 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-iso-newer"),
    pytest.param(b"2023-04-27T03:22:57.622180-0400 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-iso-precise"),
    pytest.param(b"Apr 07 03:22:57 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short"),
    pytest.param(b"Apr 27 03:22:57.622180 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-precise"),
    pytest.param(b"Thu 2023-04-27 03:22:57 EDT node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-full"),
    pytest.param(b"1682580177.622180 node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-unix"),
    pytest.param(b"[  123.456789] node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-monotonic"),
    pytest.param(b"[  123.456789 <    0.000041>] node1 ModuleUsageTracking[123]: ", "node1",
                 id="journalctl-short-delta"),
    pytest.param(b"Apr 27 03:22:57 ModuleUsageTracking[123]: ", None,
                 id="journalctl-no-hostname"),
    pytest.param(b"Apr 27 03:22:57 relay1 node1 ModuleUsageTracking: ", "node1",
                 id="relay-and-origin-host"),
    pytest.param(b"Apr 27 03:22:57 10.1.2.3 node1 ModuleUsageTracking: ", "node1",
                 id="relay-ip-and-origin-host"),
    pytest.param(b"Apr 27 03:22:58 relay1 Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="relay-double-header"),
    pytest.param(b"Apr 27 03:22:58 Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="timegenerated-rawmsg-after-pri"),
    pytest.param(b"Apr 27 03:23:00 relay3 Apr 27 03:22:59 relay2 Apr 27 03:22:58 relay1"
                 b" Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="three-relays-16-header-words"),
    pytest.param(b"Apr 27 03:22:58 relay1 <14>Apr 27 03:22:57 node1 ModuleUsageTracking: ",
                 "node1", id="relay-rawmsg-with-pri"),
    pytest.param(b"Apr 27 03:22:58 relay1 1 2023-04-27T03:22:57.622180-04:00 node1 "
                 b"ModuleUsageTracking - - - ", "node1", id="relay-rfc5424-rawmsg"),
    pytest.param(b"<14>Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="rsyslog-TraditionalForwardFormat-pri"),
    pytest.param(b"<14>2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking: ", "node1",
                 id="rsyslog-ForwardFormat-pri"),
    pytest.param(b"2023 Apr 27 03:22:57 node1 ModuleUsageTracking: ", "node1",
                 id="year-prefixed-traditional"),
    pytest.param(b"Apr 27 03:22:57 node1/relay1 ModuleUsageTracking: ", "node1/relay1",
                 id="syslog-ng-chained-hostnames"),
    pytest.param(b"Apr 27 03:22:57 fe80::1%eth0 ModuleUsageTracking: ", "fe80::1%eth0",
                 id="ipv6-host"),
    pytest.param("Apr 27 03:22:57 nœud1 ModuleUsageTracking: ".encode(), "nœud1",
                 id="non-ascii-host"),
    pytest.param(b"node1 ModuleUsageTracking: ", "node1", id="no-timestamp"),
    pytest.param(b"ModuleUsageTracking: ", None, id="tag-and-message-only"),
]


@pytest.mark.parametrize(("header", "syslog_host"), STYLES)
def test_every_header_style_is_ours(header: bytes, syslog_host: str | None) -> None:
    p = Parser()
    line = header + MSG
    assert p.is_ours(line)
    assert p.parse_line(line) == event("node1.example.org")  # host= wins over the header
    block = p.parse_block(line + b"\n", 0)
    assert (block.events, block.rejects, block.foreign) == ([event("node1.example.org")], [], 0)


@pytest.mark.parametrize(("header", "syslog_host"), STYLES)
def test_syslog_host_is_the_fallback(header: bytes, syslog_host: str | None) -> None:
    result = Parser().parse_line(header + NO_HOST)
    if syslog_host is None:
        assert result == "missing host= (and no syslog host in the header)"
    else:
        assert result == event(syslog_host)


@pytest.mark.parametrize(("header", "syslog_host"), STYLES)
def test_every_header_style_with_a_bad_message_is_rejected(header: bytes,
                                                           syslog_host: str | None) -> None:
    p = Parser()
    for message in (b"", b"user=a module=gcc time=soon", b"user=\xff module=gcc time=1",
                    b"\x00" * 10, b"x" * 10_000):
        line = header + message
        result = p.parse_line(line)
        assert isinstance(result, str), line
        assert len(result) <= MAX_REASON
        assert p.is_ours(line)


@pytest.mark.parametrize("line", [
    pytest.param(b"Apr 27 03:22:57 node1 sshd[812]: ModuleUsageTracking: " + MSG, id="sshd"),
    pytest.param(b"Apr 27 03:22:57 node1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ;"
                 b" USER=root ; COMMAND=/usr/bin/logger -t ModuleUsageTracking " + MSG,
                 id="sudo-command-line"),
    pytest.param(b"Apr 27 03:22:57 node1 logger: ModuleUsageTracking " + MSG, id="logger"),
    pytest.param(b"Apr 27 03:22:57 node1 CRON[99]: (root) CMD (ModuleUsageTracking: " + MSG
                 + b")", id="cron"),
    pytest.param(b"Apr 27 03:22:57 node1 kernel: [ 12.345] ModuleUsageTracking: " + MSG,
                 id="kernel"),
    pytest.param(b"Apr 27 03:22:57 node1 ModuleUsageTrackingX: " + MSG, id="longer-tag"),
    pytest.param(b"Apr 27 03:22:57 node1 XModuleUsageTracking: " + MSG, id="tag-suffix"),
    pytest.param(b"Apr 27 03:22:57 node1 lmod-ModuleUsageTracking[1]: " + MSG, id="tag-infix"),
    pytest.param(b"2023-04-27T03:22:57.622180-04:00 node1 systemd[1]: Started "
                 b"ModuleUsageTracking: " + MSG, id="rfc3339-systemd"),
    pytest.param(b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 myapp - - - "
                 b"ModuleUsageTracking: " + MSG, id="rfc5424-other-app"),
    pytest.param(b'<14>1 2023-04-27T03:22:57.622180-04:00 node1 myapp 77 ID1 [x@1 a="b"] '
                 b"ModuleUsageTracking " + MSG, id="rfc5424-other-app-sd"),
    pytest.param(b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 - - - - ModuleUsageTracking "
                 + MSG, id="rfc5424-nil-app"),
    pytest.param(b"Apr 27 03:22:58 relay1 1 2023-04-27T03:22:57.622180-04:00 node1 myapp - - - "
                 b"ModuleUsageTracking " + MSG, id="relay-rfc5424-other-app"),
    pytest.param(b"                              ModuleUsageTracking: " + MSG,
                 id="journalctl-continuation-line"),
    pytest.param(b"-- Boot 0123456789abcdef0123456789abcdef --", id="journalctl-boot-marker"),
    pytest.param(b"Apr 27 03:22:57 " + b"h" * HEADER_BYTES + b" ModuleUsageTracking: " + MSG,
                 id="tag-beyond-the-header-bytes"),
    pytest.param(b"Apr 27 03:22:57 " + b"w " * 24 + b"ModuleUsageTracking: " + MSG,
                 id="more-than-24-header-words"),
    pytest.param(b"Apr 27 03:22:57 node1 \"ModuleUsageTracking\": " + MSG, id="quoted-tag"),
    pytest.param(b"Apr 27 03:22:57 node1 user=x ModuleUsageTracking: " + MSG, id="key-value"),
])
def test_our_tag_in_another_programs_message_is_foreign(line: bytes) -> None:
    p = Parser()
    assert not p.is_ours(line)
    assert p.parse_line(line) is None
    assert p.parse_block(line + b"\n", 0).foreign == 1


@pytest.mark.parametrize(("line", "reason"), [
    (b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking",
     "RFC 5424 header ends before its structured data"),
    (b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - [x@1 a=\"b] " + MSG,
     "malformed RFC 5424 structured data"),
    (b"<14>1 2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking - - -x " + MSG,
     "malformed RFC 5424 structured data"),
    (b"Apr 27 03:22:57 ModuleUsageTracking: " + NO_HOST,
     "missing host= (and no syslog host in the header)"),
    (b"Apr 27 03:22:57 n\xff1 ModuleUsageTracking: " + NO_HOST,
     "missing host= (and the syslog host is not UTF-8)"),
    (b"Apr 27 03:22:57 node1 ModuleUsageTracking: user=a module=b time=999999999999."
     + b"0" * 250, "is beyond year 9999"),
    (b"Apr 27 03:22:57 node1 ModuleUsageTracking: user=a module=b time=" + b"9" * 300,
     "is not a decimal Unix time"),
    (b"Apr 27 03:22:57 node1 ModuleUsageTracking: user=a module=b time=\xef\xbc\x91",
     "is not a decimal Unix time"),  # a fullwidth digit is not a decimal digit here
])
def test_ours_but_unparseable_is_rejected_in_one_short_line(line: bytes, reason: str) -> None:
    result = Parser().parse_line(line)
    assert isinstance(result, str)
    assert reason in result
    assert len(result) <= MAX_REASON
    assert "\n" not in result


# --- properties --------------------------------------------------------------------------------

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_host = st.one_of(
    st.builds(lambda name, n, domain: f"{name}{n}{domain}",
              st.sampled_from(["node", "gpu-", "login", "c", "relay", "log"]),
              st.integers(0, 99999), st.sampled_from(["", ".example.org", ".hpc.local"])),
    st.builds(lambda a, b: f"10.{a}.{b}.1", st.integers(0, 255), st.integers(0, 255)),
    st.text(_LOWER, min_size=1, max_size=12),
)
_month = st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                          "Nov", "Dec"])


@st.composite
def _stamp(draw: st.DrawFn) -> str:
    day = draw(st.integers(1, 31))
    hms = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:" \
          f"{draw(st.integers(0, 59)):02d}"
    frac = draw(st.sampled_from(["", ".622180", ".5"]))
    offset = draw(st.sampled_from(["Z", "-04:00", "+0530", "-0400", ""]))
    month = draw(_month)
    date = f"2023-{draw(st.integers(1, 12)):02d}-{day:02d}"
    return draw(st.sampled_from([
        f"{month} {day:2d} {hms}",                      # rsyslog traditional
        f"{month} {day:02d} {hms}{frac}",                # journalctl short / short-precise
        f"{draw(st.integers(1970, 2100))} {month} {day:2d} {hms}",  # year in front
        f"{date}T{hms}{frac}{offset}",                   # RFC 3339 / short-iso
        f"Thu {date} {hms} EDT",                         # journalctl short-full
        f"{draw(st.integers(10**8, 10**10))}.{draw(st.integers(0, 999999)):06d}",  # short-unix
        f"[{draw(st.integers(0, 10**6)):8d}.{draw(st.integers(0, 999999)):06d}]",  # monotonic
    ]))


@st.composite
def _program(draw: st.DrawFn, name: str) -> str:
    pid = draw(st.integers(1, 4_194_304))
    return draw(st.sampled_from([f"{name}:", f"{name}[{pid}]:", name, f"{name}[{pid}]"]))


@st.composite
def _traditional_header(draw: st.DrawFn, program: str) -> str:
    """``[<PRI>]STAMP [relay [STAMP]] [HOST] PROGRAM`` in every combination."""
    pri = draw(st.sampled_from(["", f"<{draw(st.integers(0, 191))}>"]))
    words = [pri + draw(_stamp())]
    if draw(st.booleans()):  # forwarded: the relay in front of the original header
        words.append(draw(_host))
        if draw(st.booleans()):
            words.append(draw(_stamp()).lstrip("["))  # the original's stamp (not bracketed)
            words[-1] = words[-1].rstrip("]")
    if draw(st.integers(0, 9)):  # usually a host, sometimes none
        words.append(draw(_host))
    # A bare name needs a separator after it (else it is another name); ":" or "]" does not.
    end = draw(st.sampled_from([" ", "  "] if program[-1:].isalnum() else [" ", "  ", ""]))
    return " ".join([*words, program]) + end


@st.composite
def _rfc5424_header(draw: st.DrawFn, app: str) -> str:
    pri = draw(st.sampled_from(["", f"<{draw(st.integers(0, 191))}>"]))
    stamp = draw(st.sampled_from(["-", "2023-04-27T03:22:57.622180-04:00", "2023-04-27T07:22:57Z"]))
    procid = draw(st.sampled_from(["-", str(draw(st.integers(1, 99999)))]))
    msgid = draw(st.sampled_from(["-", "ID47"]))
    sd = draw(st.sampled_from(["-", '[x@1 a="b"]', '[x@1 a="b\\"]" c="d"][y@2]']))
    return f"{pri}1 {stamp} {draw(_host)} {app} {procid} {msgid} {sd} "


def _header(program: str, rfc5424_app: str) -> st.SearchStrategy[str]:
    return st.one_of(_traditional_header(program), _rfc5424_header(rfc5424_app))


_valid_message = st.builds(
    lambda user, module, host, t: f"user={user} module={module} host={host} time={t}".encode(),
    st.text(_LOWER + "0123456789", min_size=1, max_size=10),
    st.builds(lambda name, versions: "/".join([name, *versions]), st.text(_LOWER, min_size=1,
              max_size=8), st.lists(st.text("0123456789.", min_size=1, max_size=6), max_size=2)),
    _host, st.integers(0, 2**33).map(str))
_message = st.one_of(
    _valid_message,
    st.binary(max_size=300),
    st.binary(max_size=50).map(lambda b: b"user=" + b + b" module=x time=1"),
    st.sampled_from([b"", b"\x00\x00", b"\xff\xfe\xfd", b"user=\xc3( module=a time=1",
                     b"time=999999999999." + b"0" * 250, b"user=a module=b time=1 " * 500]),
)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), _message)
def test_our_tag_in_the_program_position_is_never_foreign(data: st.DataObject,
                                                          message: bytes) -> None:
    p = Parser(max_line_bytes=4096)
    header = data.draw(_header(data.draw(_program("ModuleUsageTracking")), "ModuleUsageTracking"))
    line = header.encode() + message
    assume(b"\n" not in line)
    result = p.parse_line(line)
    assert result is not None
    if isinstance(result, str):
        assert len(result) <= MAX_REASON
    assert p.is_ours(line)
    out = p.parse_block(line + b"\n", 0)
    assert out.foreign == 0
    assert len(out.events) + len(out.rejects) == 1


@settings(max_examples=1000)
@given(st.data(), _message)
def test_another_program_quoting_our_tag_is_foreign(data: st.DataObject, message: bytes) -> None:
    p = Parser()
    name = data.draw(st.builds(str.__add__, st.sampled_from(_LOWER + _LOWER.upper()),
                               st.text(_LOWER + "XYZ0123456789_.-", max_size=15)))
    assume(name != "ModuleUsageTracking")
    pid = data.draw(st.integers(1, 99999))
    program = data.draw(st.sampled_from([f"{name}:", f"{name}[{pid}]:"]))
    quoted = data.draw(st.sampled_from(["ModuleUsageTracking: ", "ModuleUsageTracking ",
                                        "ModuleUsageTracking[1]: ", "x ModuleUsageTracking: "]))
    header = data.draw(_header(program, name))
    line = header.encode() + quoted.encode() + message
    assume(b"\n" not in line)
    assert p.parse_line(line) is None
    assert not p.is_ours(line)


@settings(max_examples=1000)
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda h, m: h.encode() + m,
              _header("ModuleUsageTracking:", "ModuleUsageTracking"), _message),
    st.builds(lambda a, b: a + TAG + b, st.binary(max_size=60), st.binary(max_size=60)),
), max_size=20))
@example([b"\x00" * 10, b"Apr 27 03:22:57 node1 ModuleUsageTracking:\x00" + MSG, b"\r", b""])
def test_parse_block_never_raises_and_counts_every_line(lines: list[bytes]) -> None:
    p = Parser(max_line_bytes=512)
    lines = [b for line in lines for b in line.split(b"\n")] or [b""]
    block = b"\n".join(lines) + b"\n"
    out = p.parse_block(block, 1000)
    assert len(out.events) + len(out.rejects) + out.foreign == len(lines)
    for reject in out.rejects:
        assert len(reject.reason) <= MAX_REASON
    # One line at a time agrees with the block (the fast path gives what the general path gives).
    singles = [p.parse_line(line.rstrip(b"\r")) for line in lines]
    assert [r for r in singles if isinstance(r, LoadEvent)] == out.events
    assert [r for r in singles if isinstance(r, str)] == [r.reason for r in out.rejects]
    assert singles.count(None) == out.foreign
    for line, single in zip(lines, singles, strict=True):
        assert p.is_ours(line.rstrip(b"\r")) == (single is not None)


@settings(max_examples=500)
@given(st.one_of(st.binary(min_size=HEADER_BYTES + 1, max_size=3 * HEADER_BYTES),
                 st.builds(lambda h, pad: h.encode() + pad,
                           _header("ModuleUsageTracking:", "ModuleUsageTracking"),
                           st.binary(min_size=HEADER_BYTES + 1, max_size=2 * HEADER_BYTES))),
       st.integers(1, 2 * HEADER_BYTES))
def test_is_ours_needs_only_a_prefix_longer_than_the_header(line: bytes, extra: int) -> None:
    p = Parser()
    assert p.is_ours(line[:HEADER_BYTES + extra]) == p.is_ours(line)


@settings(max_examples=300)
@given(st.lists(_valid_message, min_size=1, max_size=5), st.sampled_from([
    b"Apr 27 03:22:57 node1 ModuleUsageTracking: ",
    b"Apr  7 03:22:57 node1 ModuleUsageTracking[42]: ",
    b"2023-04-27T03:22:57.622180-04:00 node-1.example.org ModuleUsageTracking: ",
]))
def test_fast_path_and_general_path_agree(messages: list[bytes], header: bytes) -> None:
    p = Parser()
    lines = [header + b"user=u jobid=1 module=m/1 path=/p host=h time=" + m.rsplit(b"=", 1)[1]
             for m in messages] + [header + m for m in messages]
    out = p.parse_block(b"\n".join(lines) + b"\n", 0)
    assert out.events == [p.parse_line(line) for line in lines]


# --- hostile input ------------------------------------------------------------------------------

MIB = 1 << 20


@pytest.mark.parametrize("line", [
    pytest.param(b"Apr 27 03:22:57 node1 " + b"a " * (MIB // 2), id="header-words"),
    pytest.param(b" " * MIB + TAG + b":", id="spaces"),
    pytest.param(b"Apr 27 03:22:57 " + b"a" * MIB + b" " + TAG + b":", id="huge-host"),
    pytest.param(b"[" * MIB + TAG, id="brackets"),
    pytest.param(b"<1>" * (MIB // 3) + TAG, id="pris"),
    pytest.param(b"Apr 27 03:22:57 node1 " + TAG + b"[" + b"1" * MIB, id="unclosed-pid"),
    pytest.param(b"<14>1 2023-04-27T03:22:57Z node1 " + TAG + b" - - [x@1 a=\""
                 + b"\\\\" * (MIB // 2), id="rfc5424-unclosed-sd-value"),
    pytest.param(b"<14>1 2023-04-27T03:22:57Z node1 " + TAG + b" - - "
                 + b'[x@1 a="b" c="d"' * (MIB // 16), id="rfc5424-unclosed-sd-elements"),
    pytest.param(b"<14>1 2023-04-27T03:22:57Z node1 " + TAG + b" - - " + b"[x@1]" * (MIB // 5)
                 + b"x", id="rfc5424-sd-then-garbage"),
    pytest.param(b"Apr 27 03:22:57 node1 " + TAG + b": " + b"user=" * (MIB // 5), id="keys"),
    pytest.param(b"Apr 27 03:22:57 node1 " + TAG + b": user=a module=b time=" + b"1" * MIB,
                 id="long-time"),
    pytest.param(b"Apr 27 03:22:57 node1 " + TAG + b": user=a module=b time=1." + b"0" * MIB,
                 id="long-fraction"),
    pytest.param(b"Apr 27 03:22:57 node1 " + TAG + b": " + b"\xff" * MIB, id="invalid-utf8"),
    pytest.param(b"Apr 27 03:22:57 node1 sshd[1]: " + (TAG + b" ") * (MIB // 20), id="tags"),
])
def test_hostile_mebibyte_lines_are_cheap(line: bytes) -> None:
    for p in (Parser(), Parser(max_line_bytes=4 * MIB)):  # cut short, and read to the end
        t0 = time.perf_counter()
        result = p.parse_line(line)
        ours = p.is_ours(line)
        out = p.parse_block(line + b"\n" + line, 0)
        elapsed = time.perf_counter() - t0
        assert ours == (result is not None)
        assert len(out.events) + len(out.rejects) + out.foreign == 2
        if isinstance(result, str):
            assert len(result) <= MAX_REASON
        assert elapsed < 2.0, f"{elapsed:.2f}s"

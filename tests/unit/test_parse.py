"""The line format: table-driven cases and properties."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmod_tracker.events import LoadEvent
from lmod_tracker.parse import FIELD_LIMITS, MAX_REASON, Parser, epoch_to_text

TRAD = b"Apr 27 03:22:57 node1 ModuleUsageTracking: "
ISO = b"2023-04-27T03:22:57.622180-04:00 node1 ModuleUsageTracking: "
MSG = (b"user=usr123 module=gcc/5.4.0 path=/modules/gcc/5.4.0.lua host=node1.domain.com"
       b" time=1682580177.622180")
EXPECTED = LoadEvent("2023-04-27 07:22:57.622180", "usr123", "gcc", "5.4.0",
                     "node1.domain.com", "/modules/gcc/5.4.0.lua", None)


@pytest.mark.parametrize("line", [TRAD + MSG, ISO + MSG,
                                  b"Apr 27 03:22:57 node1 ModuleUsageTracking[4242]: " + MSG,
                                  TRAD + MSG + b"\r"])
def test_both_timestamp_styles_and_pid(line: bytes) -> None:
    assert Parser().parse_line(line.rstrip(b"\r")) == EXPECTED


@pytest.mark.parametrize(("message", "package", "version", "jobid"), [
    (b"user=a module=bio/samtools/1.9 time=1", "bio/samtools", "1.9", None),
    (b"user=a module=openmpi time=1", "openmpi", "", None),
    (b"user=a jobid=12345 module=gcc/12 time=1", "gcc", "12", "12345"),
    (b"user=a jobid=nil module=gcc/12 time=1", "gcc", "12", None),
    (b"time=1 module=gcc/12 extra=yes user=a jobid=7", "gcc", "12", "7"),
])
def test_fields_in_any_order_and_module_split(message: bytes, package: str, version: str,
                                              jobid: str | None) -> None:
    event = Parser().parse_line(TRAD + message)
    assert isinstance(event, LoadEvent)
    assert (event.package, event.version, event.jobid, event.user) == (package, version, jobid, "a")
    assert event.host == "node1"  # no host= falls back to the syslog host


def test_split_first() -> None:
    event = Parser(split="first").parse_line(TRAD + b"user=a module=python/3.11/gpu time=1")
    assert isinstance(event, LoadEvent)
    assert (event.package, event.version) == ("python", "3.11/gpu")


@pytest.mark.parametrize(("split", "module", "expected"), [
    ("last", "bio/samtools/1.9", ("bio/samtools", "1.9")),
    ("first", "bio/samtools/1.9", ("bio", "samtools/1.9")),
    ("last", "gcc", ("gcc", "")), ("first", "gcc", ("gcc", "")),
    ("last", "gcc/", ("gcc", "")), ("first", "gcc/", ("gcc", "")),
    ("last", ".hidden/1.0", (".hidden", "1.0")),
    # empty parts are dropped (Lmod names have none)
    ("last", "a//b", ("a", "b")), ("first", "a//b", ("a", "b")),
    ("last", "bio/samtools/1.9/", ("bio/samtools", "1.9")),
    ("first", "/bio/samtools/1.9", ("bio", "samtools/1.9")),
    ("last", "/gcc", ("gcc", "")), ("first", "/gcc", ("gcc", "")),
    ("last", "/", None), ("first", "/", None), ("last", "//", None), ("first", "//", None),
])
def test_block_and_line_split_modules_alike(split: str, module: str,
                                            expected: tuple[str, str] | None) -> None:
    """The block fast path and the line path split ``module=`` by one rule; a module that
    names no package is a reject on both."""
    parser = Parser(split=split)  # type: ignore[arg-type]
    line = TRAD + b"user=a module=" + module.encode() + b" path=/m.lua host=h time=1"
    by_line = parser.parse_line(line)
    block = parser.parse_block(line + b"\n", 0)
    if expected is None:
        assert by_line == f"module={module!r} names no package"
        assert [r.reason for r in block.rejects] == [by_line] and not block.events
    else:
        assert isinstance(by_line, LoadEvent)
        assert (by_line.package, by_line.version) == expected
        assert block.events == [by_line] and not block.rejects


@pytest.mark.parametrize(("message", "reason"), [
    (b"module=gcc/1 time=1", "missing user="),
    (b"user=a time=1", "missing module="),
    (b"user=a module=gcc/1", "missing time="),
    (b"user=a module=gcc/1 time=abc", "not a decimal Unix time"),
    (b"user=a module=gcc/1 time=-5", "not a decimal Unix time"),
    (b"user=a module=gcc/1 time=999999999999", "beyond year 9999"),
    (b"user=\xff\xfe module=gcc/1 time=1", "invalid UTF-8"),
    (b"", "missing user="),
    (b"user=" + b"u" * 65 + b" module=gcc/1 time=1", "user longer than 64"),
])
def test_rejects_say_why(message: bytes, reason: str) -> None:
    result = Parser().parse_line(TRAD + message)
    assert isinstance(result, str)
    assert reason in result


@pytest.mark.parametrize("line", [
    b"Apr 27 03:22:57 node1 sshd[12]: Accepted publickey for root",
    b"Apr 27 03:22:57 node1 sudo: user ran ModuleUsageTracking: user=a module=b time=1",
    b"Apr 27 03:22:57 node1 ModuleUsageTrackingX: user=a module=b time=1",
    b"",
    b"garbage",
])
def test_foreign_lines(line: bytes) -> None:
    assert Parser().parse_line(line) is None


def test_other_tag() -> None:
    p = Parser(tag="lmod")
    assert isinstance(p.parse_line(b"Apr 27 03:22:57 n lmod: user=a module=b/1 time=1"), LoadEvent)
    assert p.parse_line(TRAD + MSG) is None


def test_long_line_rejected() -> None:
    p = Parser(max_line_bytes=300)
    assert p.parse_line(TRAD + MSG + b" pad=" + b"x" * 300) == "line longer than 300 bytes"


def test_parse_block_offsets_and_counts() -> None:
    lines = [TRAD + MSG, b"Apr 27 03:22:57 node1 cron[1]: x", TRAD + b"user=a", TRAD + MSG]
    block = b"\n".join(lines) + b"\n"
    out = Parser().parse_block(block, 1000)
    assert len(out.events) == 2
    assert out.foreign == 1
    assert [(r.offset, r.reason) for r in out.rejects] == [
        (1000 + len(lines[0]) + len(lines[1]) + 2, "missing module=")]
    assert out.rejects[0].raw == lines[2]


def test_parse_block_last_line_without_newline() -> None:
    assert len(Parser().parse_block(TRAD + MSG, 0).events) == 1


@given(st.integers(min_value=0, max_value=253402300799),
       st.text(alphabet="0123456789", max_size=9))
def test_epoch_text_matches_exact_decimal(seconds: int, frac: str) -> None:
    value = f"{seconds}.{frac}" if frac else str(seconds)
    text = epoch_to_text(value)
    micro = int((Decimal(value) * 1_000_000).to_integral_value(rounding="ROUND_DOWN"))
    expected = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=micro)
    assert text == expected.strftime("%Y-%m-%d %H:%M:%S.%f")


@given(st.dictionaries(st.sampled_from(["user", "module", "time", "host", "path", "jobid", "x"]),
                       st.text(alphabet=st.characters(blacklist_categories=("Z", "C")),
                               max_size=80)))
def test_any_message_parses_or_rejects(fields: dict[str, str]) -> None:
    message = " ".join(f"{k}={v}" for k, v in fields.items()).encode()
    result = Parser().parse_line(TRAD + message)
    assert result is not None  # never foreign: it carries our tag
    if isinstance(result, LoadEvent):
        for name, limit in FIELD_LIMITS.items():
            value = getattr(result, name)
            assert value is None or len(value) <= limit


@pytest.mark.parametrize("line", [
    TRAD + MSG, ISO + MSG, TRAD + b"user=a", TRAD + MSG + b" pad=" + b"x" * 100_000,
    b"Apr 27 03:22:57 node1 sshd[12]: ModuleUsageTracking: user=a module=b time=1",
    b"garbage", b"",
])
def test_is_ours_agrees_with_parse_line(line: bytes) -> None:
    p = Parser()
    assert p.is_ours(line) == (p.parse_line(line) is not None)
    assert p.is_ours(line[:4096]) == p.is_ours(line)


@pytest.mark.parametrize("message", [
    b"user=a module=b time=999999999999." + b"0" * 250,
    b"user=a module=b time=" + b"7" * 5000,
    b"user=a module=b time=" + "\u00e9".encode() * 3000,
    b"user=" + b"u" * 5000 + b" module=b time=1",
])
def test_reject_reasons_stay_short(message: bytes) -> None:
    result = Parser(max_line_bytes=1 << 20).parse_line(TRAD + message)
    assert isinstance(result, str)
    assert len(result) <= MAX_REASON


def test_values_in_reasons_are_cut() -> None:
    result = Parser().parse_line(TRAD + b"user=a module=b time=999999999999." + b"0" * 250)
    assert result == "time='999999999999.000000000000000000000000000'... is beyond year 9999"
    result = Parser().parse_line(TRAD + b"user=a module=b time=\xef\xbc\x91")
    assert result == "time='\uff11' is not a decimal Unix time"  # fullwidth digit: not decimal


@given(st.binary(max_size=600))
def test_any_reason_is_short(message: bytes) -> None:
    result = Parser().parse_line(TRAD + b"user=a module=b time=" + message)
    assert result is not None
    if isinstance(result, str):
        assert len(result) <= MAX_REASON


def test_several_tags_at_once() -> None:
    p = Parser(["ModuleUsageTracking", "lmod"])
    assert (p.tag, p.tags) == ("ModuleUsageTracking", ("ModuleUsageTracking", "lmod"))
    old = b"Apr 27 03:22:57 node1 lmod[7]: " + MSG
    assert p.parse_line(TRAD + MSG) == p.parse_line(old) == EXPECTED
    foreign = b"Apr 27 03:22:57 n1 cron: lmod x"
    out = p.parse_block(b"\n".join([TRAD + MSG, old, foreign]) + b"\n", 0)
    assert (out.events, out.rejects, out.foreign) == ([EXPECTED, EXPECTED], [], 1)
    assert Parser(("lmod",)).parse_line(TRAD + MSG) is None


def test_tag_positional_and_keyword_signature() -> None:
    p = Parser("lmod", "first", 300)
    assert (p.tags, p.split, p.max_line_bytes) == (("lmod",), "first", 300)
    assert Parser(tag=["a", "b", "a"]).tags == ("a", "b")


@pytest.mark.parametrize("tag", ["", "a b", "a:", "a[1]", [], ["ok", ""]])
def test_bad_tags(tag: str | list[str]) -> None:
    with pytest.raises(ValueError, match="tag"):
        Parser(tag)


@pytest.mark.parametrize(("message", "expected"), [
    # Lmod's tools read double-quoted values whole; the quotes are not part of the value
    (b'user="quoted" module="gcc/12.2.0" path="/home/q/My Modules/gcc/12.2.0.lua"'
     b' host="node7" time=1682580177.1', ("quoted", "gcc", "12.2.0", "node7",
                                          "/home/q/My Modules/gcc/12.2.0.lua", None)),
    # "key=value, key=value" (more_hooks style): the comma is a separator
    (b"user=comma, module=gcc/12.2.0, path=/m/gcc/12.2.0.lua, host=node7, userload=yes,"
     b" jobid=55, time=1682580177.1", ("comma", "gcc", "12.2.0", "node7",
                                       "/m/gcc/12.2.0.lua", "55")),
    # rsyslog writes a tab as #011
    (b"user=tabbed#011module=gcc/12.2.0 path=/m/gcc/12.2.0.lua#011host=node7"
     b"#011time=1682580177.1", ("tabbed", "gcc", "12.2.0", "node7", "/m/gcc/12.2.0.lua", None)),
    # rsyslog's $RepeatedMsgReduction: the same load again
    (b"message repeated 3 times: [ user=rep module=gcc/12.2.0 path=/m/gcc/12.2.0.lua host=node7"
     b" time=1682580177.1 jobid=77]", ("rep", "gcc", "12.2.0", "node7", "/m/gcc/12.2.0.lua",
                                       "77")),
])
def test_separators_and_quotes_sites_and_rsyslog_write(
        message: bytes, expected: tuple[str, ...]) -> None:
    parser = Parser()
    line = TRAD + message
    event = parser.parse_line(line)
    assert isinstance(event, LoadEvent)
    assert (event.user, event.package, event.version, event.host, event.path,
            event.jobid) == expected
    assert event.load_time == "2023-04-27 07:22:57.100000"
    # the block path (its fast pattern leaves such lines to the line path) agrees
    assert parser.parse_block(line + b"\n", 0).events == [event]


def test_userload_with_comma_separator() -> None:
    event = Parser().parse_line(TRAD + b"user=a, module=gcc/1, userload=yes, time=1")
    assert isinstance(event, LoadEvent) and event.userload == 1


def test_repeated_message_is_the_same_load() -> None:
    """The original and rsyslog's 'message repeated' line are one natural key: stored once."""
    original = TRAD + b"user=rep module=gcc/1 host=node7 time=1682580177 jobid=77"
    repeated = TRAD + b"message repeated 3 times: [ user=rep module=gcc/1 host=node7" \
                      b" time=1682580177 jobid=77]"
    block = Parser().parse_block(original + b"\n" + repeated + b"\n", 0)
    assert len(block.events) == 2 and block.events[0] == block.events[1]


@pytest.mark.parametrize(("host", "cluster"), [
    ("c401-001.frontera.tacc.utexas.edu", "frontera"), ("node1", None),
    ("10.1.2.3", None), ("192.168.7.20", None), ("fe80::1%eth0", None), ("2001:db8::7", None),
])
def test_second_label_rule_gives_no_cluster_for_an_address(host: str, cluster: str | None
                                                           ) -> None:
    parser = Parser(cluster_from_host="second-label")
    event = parser.parse_line(TRAD + f"user=a module=gcc/1 host={host} time=1".encode())
    assert isinstance(event, LoadEvent) and event.cluster == cluster

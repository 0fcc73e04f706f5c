"""The facts beyond the seed's format: cluster, user-requested loads, job ids of any scheduler.

Every case is checked on both parse paths: ``parse_line`` (the general path) and
``parse_block`` (which takes the fast path for lines of the usual shape).
"""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from lmod_tracker.config import ConfigError, load_settings
from lmod_tracker.events import LoadEvent
from lmod_tracker.parse import NO_JOB_TOKENS, Parser, host_rule
from lmod_tracker.retention import cutoff_text, parse_age

HEAD = b"Apr 27 03:22:57 node1 ModuleUsageTracking: "


def _usual(host: str = "c401-001.frontera.tacc.utexas.edu", jobid: str | None = None) -> bytes:
    """A line of the usual shape (the fast path takes it)."""
    job = b"" if jobid is None else b"jobid=" + jobid.encode() + b" "
    return (HEAD + b"user=u1 " + job + b"module=gcc/12 path=/m/gcc/12.lua host="
            + host.encode() + b" time=1682580177.622180")


def _both(parser: Parser, line: bytes) -> LoadEvent:
    """The event of ``line`` from both paths, which must agree."""
    one = parser.parse_line(line)
    block = parser.parse_block(line + b"\n", 0)
    assert isinstance(one, LoadEvent), one
    assert block.events == [one], (block, one)
    return one


@pytest.mark.parametrize(("extra", "settings", "cluster"), [
    (b"", {}, None),                                               # default: unknown
    (b" cluster=frontera", {}, "frontera"),
    (b" syshost=stampede3", {}, "stampede3"),
    (b" cluster=ls6 syshost=other", {}, "ls6"),                     # cluster= first
    (b" cluster=frontera", {"cluster": "x"}, "frontera"),           # the line wins
    (b"", {"cluster": "x"}, "x"),                                   # then the setting
    (b"", {"cluster": "x", "cluster_from_host": "second-label"}, "x"),
    (b"", {"cluster_from_host": "second-label"}, "frontera"),       # then the host rule
    (b"", {"cluster_from_host": r"^c[0-9]+-[0-9]+\.(\w+)\."}, "frontera"),
    (b"", {"cluster_from_host": r"^(login)[0-9]"}, None),           # no match: unknown
    (b" cluster=", {}, None),                                       # empty: absent
])
def test_cluster_from_key_setting_or_host(extra: bytes, settings: dict[str, str],
                                          cluster: str | None) -> None:
    parser = Parser(**settings)  # type: ignore[arg-type]
    line = _usual() + extra
    event = parser.parse_line(line) if extra else _both(parser, line)
    assert isinstance(event, LoadEvent)
    assert event.cluster == cluster


@pytest.mark.parametrize(("host", "cluster"), [
    ("login1.frontera.tacc.utexas.edu", "frontera"), ("node1", None), ("node1.", None),
    ("a.b", "b")])
def test_second_label_rule(host: str, cluster: str | None) -> None:
    rule = host_rule("second-label")
    assert rule is not None and rule(host) == cluster
    assert _both(Parser(cluster_from_host="second-label"), _usual(host)).cluster == cluster


@pytest.mark.parametrize("rule", ["(a)(b)", "abc", "(", "["])
def test_bad_host_rules_are_refused(rule: str) -> None:
    with pytest.raises(ValueError, match="cluster_from_host"):
        host_rule(rule)


def test_cluster_longer_than_its_column_is_rejected_derived_one_dropped() -> None:
    reason = Parser().parse_line(_usual() + b" cluster=" + b"c" * 65)
    assert reason == "cluster longer than 64 characters"
    assert isinstance(Parser().parse_line(_usual() + b" cluster=" + b"c" * 64), LoadEvent)
    long_host = "n1." + "x" * 70 + ".org"
    assert _both(Parser(cluster_from_host="second-label"), _usual(long_host)).cluster is None
    with pytest.raises(ValueError):
        Parser(cluster="c" * 65)


@pytest.mark.parametrize(("value", "flag"), [
    (b"yes", 1), (b"no", 0), (b"1", 1), (b"0", 0), (b"true", 1), (b"false", 0), (b"YES", 1),
    (b"False", 0), (b"maybe", None), (b"", None)])
def test_userload(value: bytes, flag: int | None) -> None:
    event = Parser().parse_line(_usual() + b" userload=" + value)
    assert isinstance(event, LoadEvent) and event.userload == flag
    assert _both(Parser(), _usual()).userload is None  # not logged


@pytest.mark.parametrize("jobid", ["123", "123_4", "123_[1-5]", "123+1", "123.server",
                                   "4567.pbs01.example.org", "789.1", "job-42"])
def test_job_ids_of_any_scheduler_are_kept(jobid: str) -> None:
    assert _both(Parser(), _usual(jobid=jobid)).jobid == jobid


@pytest.mark.parametrize("token", ["nil", "NIL", "none", "None", "null", "interactive", "",
                                   "na", "N/A", "-"])
def test_no_job_tokens_are_null(token: str) -> None:
    assert _both(Parser(), _usual(jobid=token)).jobid is None


def test_no_job_tokens_are_configurable() -> None:
    parser = Parser(no_job_tokens=["-", "login"])
    assert _both(parser, _usual(jobid="-")).jobid is None
    assert _both(parser, _usual(jobid="LOGIN")).jobid is None
    assert _both(parser, _usual(jobid="nil")).jobid == "nil"  # no longer a token
    assert _both(parser, _usual(jobid="")).jobid is None      # empty is never a job
    assert "interactive" in NO_JOB_TOKENS


def test_the_default_tokens_are_the_parsers() -> None:
    """One list: the setting's default is what a Parser() without settings uses."""
    from lmod_tracker.config import Settings
    assert set(Settings.model_fields["no_job_tokens"].default) == set(NO_JOB_TOKENS)


def test_parser_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LMOD_TRACKER_CLUSTER_FROM_HOST", "second-label")
    monkeypatch.setenv("LMOD_TRACKER_NO_JOB_TOKENS", "nil,batch")
    parser = Parser.from_settings(load_settings(backend="sqlite"))
    event = _both(parser, _usual(jobid="batch"))
    assert (event.cluster, event.jobid) == ("frontera", None)


@pytest.mark.parametrize(("env", "message"), [
    ({"LMOD_TRACKER_CLUSTER_FROM_HOST": "(a)(b)"}, "cluster_from_host"),
    ({"LMOD_TRACKER_CLUSTER": "a b"}, "cluster"),
    ({"LMOD_TRACKER_CLUSTER": "c" * 65}, "cluster"),
    ({"LMOD_TRACKER_RETENTION": "13 months"}, "retention"),
])
def test_bad_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: object, env: dict[str, str],
                      message: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        load_settings(backend="sqlite")


NOW = dt.datetime(2026, 3, 31, 12, 0, 0)


@pytest.mark.parametrize(("text", "cutoff"), [
    ("13mo", dt.datetime(2025, 2, 28, 12)),   # the last day of a shorter month
    ("1mo", dt.datetime(2026, 2, 28, 12)),
    ("12mo", dt.datetime(2025, 3, 31, 12)),
    ("1y", dt.datetime(2025, 3, 31, 12)),
    ("2y", dt.datetime(2024, 3, 31, 12)),
    ("400d", NOW - dt.timedelta(days=400)),
    ("52w", NOW - dt.timedelta(weeks=52)),
    (" 7 d ", NOW - dt.timedelta(days=7)),
    ("2025-01-01", dt.datetime(2025, 1, 1)),
])
def test_retention_ages(text: str, cutoff: dt.datetime) -> None:
    assert parse_age(text, NOW) == cutoff
    assert cutoff_text(text, NOW) == cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.mark.parametrize("text", ["13", "13m", "0d", "-1d", "2025-02-30", "forever", ""])
def test_bad_retention_ages(text: str) -> None:
    with pytest.raises(ValueError):
        parse_age(text, NOW)


@pytest.mark.parametrize("settings", [
    {}, {"cluster": "x"}, {"cluster_from_host": "second-label"},
    {"cluster_from_host": r"^c[0-9]+-[0-9]+\.(\w+)\.", "no_job_tokens": ["-"]}])
def test_parser_survives_pickling(settings: dict[str, object]) -> None:
    """A parsing child process gets the parser pickled: it must parse the same."""
    parser = Parser(**settings)  # type: ignore[arg-type]
    copy = pickle.loads(pickle.dumps(parser))
    line = _usual(jobid="-") + b"\n" + _usual("n1.ls6.x") + b" userload=yes\n"
    assert copy.parse_block(line, 0) == parser.parse_block(line, 0)

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.support.loggen import Counts, LineFactory, natural_key, write_log

TAG = b"ModuleUsageTracking:"


def _kind(line: bytes) -> str:
    if TAG not in line:
        return "foreign"
    return "valid" if natural_key(line) is not None and b"time=notanumber" not in line else "bad"


def test_same_seed_same_lines() -> None:
    a, b = LineFactory(seed=7), LineFactory(seed=7)
    assert a.mixed(2_000) == b.mixed(2_000)
    assert [a.valid() for _ in range(50)] == [b.valid() for _ in range(50)]


def test_different_seed_different_lines() -> None:
    assert LineFactory(seed=1).mixed(200)[0] != LineFactory(seed=2).mixed(200)[0]


@pytest.mark.parametrize("style", ["traditional", "iso"])
def test_valid_lines_have_unique_natural_keys(style: str) -> None:
    factory = LineFactory(seed=3, style=style)
    keys = set()
    times = []
    for _ in range(100_000):
        line = factory.valid()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        key = natural_key(line)
        assert key is not None, line
        keys.add(key)
        times.append(key[0])
    assert len(keys) == 100_000
    assert len(set(times)) == 100_000
    assert all(len(t.split(".")[1]) == 6 for t in times[:1000])
    floats = [float(t) for t in times]
    assert floats == sorted(floats)


def test_valid_line_shape() -> None:
    factory = LineFactory(seed=0)
    lines = [factory.valid() for _ in range(700)]
    messages = [line.partition(TAG + b" ")[2] for line in lines]
    assert all(messages), "every valid line carries the tag"
    assert any(m.startswith(b"time=") for m in messages)
    assert any(b" foo=bar" in m for m in messages)
    assert any(b" jobid=nil " in m for m in messages)
    assert any(b" jobid=1" in m or b" jobid=2" in m for m in messages)
    modules = {natural_key(line)[3] for line in lines}  # type: ignore[index]
    assert any(m.count("/") == 2 for m in modules)
    assert any(m.count("/") == 1 for m in modules)
    assert any("/" not in m for m in modules)
    for line in lines:
        text = line.decode()
        *_, module = natural_key(line)  # type: ignore[misc]
        assert f"path=/opt/modulefiles/{module}.lua" in text
        assert ".cluster.example.org" in text
    average = sum(map(len, lines)) / len(lines)
    assert 120 < average < 260


def test_iso_style_header() -> None:
    line = LineFactory(style="iso").valid()
    stamp = line.split(b" ", 1)[0].decode()
    assert stamp.startswith("2023-11-14T") and stamp.endswith("-04:00")
    assert stamp.split(".")[1][:6] == natural_key(line)[0].split(".")[1]  # type: ignore[index]


def test_foreign_lines_never_carry_the_tag() -> None:
    for tag in ("ModuleUsageTracking", "Tracker", "ModuleUsage"):
        factory = LineFactory(seed=5, tag=tag)
        for _ in range(100):
            assert tag.encode() not in factory.foreign()


def test_malformed_lines_rotate_through_all_kinds() -> None:
    factory = LineFactory(seed=9)
    lines = [factory.malformed() for _ in range(12)]
    assert all(TAG in line and line.endswith(b"\n") for line in lines)
    assert all(_kind(line) == "bad" for line in lines)
    assert any(b"user=" not in line for line in lines)
    assert any(b"module=" not in line for line in lines)
    assert any(b"time=" not in line and line.rstrip().endswith(b".org") for line in lines)
    assert any(b"time=notanumber" in line for line in lines)
    assert any(b"user=\xff\xfe" in line for line in lines)
    assert any(line.endswith(TAG + b"\n") for line in lines)
    with pytest.raises(UnicodeDecodeError):
        next(line for line in lines if b"\xff" in line).decode()


def test_mixed_counts() -> None:
    lines, counts = LineFactory(seed=11).mixed(1_000)
    assert len(lines) == 1_000 == counts.total
    assert counts == Counts(valid=988, foreign=8, malformed=4)
    observed = Counts()
    for line in lines:
        kind = _kind(line)
        observed.add("malformed" if kind == "bad" else kind)  # type: ignore[arg-type]
    assert observed == counts
    assert lines[249].count(TAG) == 1 and _kind(lines[249]) == "bad"
    assert _kind(lines[99]) == "foreign"


def test_mixed_can_disable_kinds() -> None:
    _, counts = LineFactory().mixed(500, foreign_every=0, malformed_every=0)
    assert counts == Counts(valid=500)


def test_counts_add() -> None:
    total = Counts(1, 2, 3) + Counts(10, 20, 30)
    assert total == Counts(11, 22, 33) and total.total == 66


@pytest.mark.parametrize("compress", [False, True])
def test_write_log(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / ("lmod.log.gz" if compress else "lmod.log")
    counts = write_log(path, 20_000, seed=4, gzip=compress, style="iso")
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    lines = raw.splitlines(keepends=True)
    assert len(lines) == 20_000 == counts.total
    assert counts == Counts(valid=19_760, foreign=160, malformed=80)
    expected, expected_counts = LineFactory(seed=4, style="iso").mixed(20_000)
    assert lines == expected and counts == expected_counts


def test_write_log_continues_a_factory(tmp_path: Path) -> None:
    factory = LineFactory(seed=2)
    first = write_log(tmp_path / "a.log", 3_000, factory=factory)
    second = write_log(tmp_path / "b.log", 3_000, factory=factory, gzip=True)
    third = write_log(tmp_path / "b.log", 10, factory=factory, gzip=True, append=True)
    keys = [
        natural_key(line)
        for raw in (
            (tmp_path / "a.log").read_bytes(),
            gzip.decompress((tmp_path / "b.log").read_bytes()),
        )
        for line in raw.splitlines()
        if _kind(line) == "valid"
    ]
    assert len(keys) == len(set(keys)) == (first + second + third).valid

"""A SQLite file lmod-tracker may not write is a setting to fix: exit 3 at start, one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import child_env, cli
from tests.support.databases import DbHandle

#: Root without the capabilities that let it write whatever the permissions say.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("mode", [["run", "--once"], ["run"]])
def test_read_only_file_exits_3(sqlite_db: DbHandle, tmp_path: Path, mode: list[str]) -> None:
    """SQLite opens a file it may not write read-only, and BEGIN still succeeds: the start-up
    probe must try a write (one that changes nothing) to see the refusal."""
    cli(sqlite_db.env, "db", "init")
    path = Path(sqlite_db.env["LMOD_TRACKER_SQLITE_PATH"])
    path.chmod(0o444)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    proc = subprocess.run(
        [*NO_OVERRIDE, sys.executable, "-m", "lmod_tracker", *mode, "--log-dir", str(log_dir)],
        env=child_env(sqlite_db.env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("lmod-tracker:")]
    assert "readonly" in line and "not writable" in line


def test_directory_that_cannot_be_created_exits_3(tmp_path: Path) -> None:
    """A file where the database's directory should be: no retry can fix that."""
    (tmp_path / "afile").write_text("")
    env = {"LMOD_TRACKER_SQLITE_PATH": str(tmp_path / "afile" / "sub" / "lmod.db")}
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    proc = cli(env, "run", "--once", "--log-dir", str(log_dir), check=False, timeout=60)
    assert proc.returncode == 3, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("lmod-tracker:")]
    assert "cannot create" in line and "Not a directory" in line

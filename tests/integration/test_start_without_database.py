"""The daemon started before what it needs is there: the database (it answers on its status
socket and holds every file from first sight, as it does when the database goes away later)
or the log directory (rsyslog makes it with the first message)."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path
from typing import Any

from lmod_tracker.statusclient import get
from tests.support.daemon import Daemon, cli, wait_until
from tests.support.databases import DbHandle
from tests.support.loggen import LineFactory, write_log
from tests.support.proxy import FaultProxy


def test_start_while_the_database_is_down(mysql_db: DbHandle, mysql_server: dict[str, Any],
                                          tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    expected = write_log(log, 2_000, seed=41)
    proxy = FaultProxy(mysql_server["host"], mysql_server["port"]).start()
    env = {**mysql_db.env, "DB_HOST": "127.0.0.1", "DB_PORT": str(proxy.port),
           "LMOD_TRACKER_RETRY_MAX": "1", "LMOD_TRACKER_DB_TIMEOUT": "5"}
    try:
        proxy.cut()
        with Daemon(env, log_dir, tmp_path / "daemon.log") as daemon:
            socket = Path(daemon.env["LMOD_TRACKER_STATUS_SOCKET"])

            def degraded() -> bool:
                proc = cli(daemon.env, "status", check=False)
                return proc.returncode == 1 and "degraded" in proc.stdout

            wait_until(degraded, 30, "status: degraded while the database is down",
                       on_timeout=daemon.log_text)
            assert get(socket, "/healthz")[0] == 503
            # Rotated and compressed (the plain file gone) before the database answers:
            # the descriptor taken at first sight is what lets it be read.
            wait_until(lambda: "database unreachable, retrying" in daemon.log_text(), 30,
                       "a failed attempt")
            rotated = log_dir / "lmod.log-1"
            log.rename(rotated)
            with rotated.open("rb") as src, gzip.open(log_dir / "lmod.log-1.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            rotated.unlink()
            expected += write_log(log, 500, factory=LineFactory(seed=42,
                                                                start_epoch=1_800_000_000))
            assert daemon.alive()
            proxy.restore()
            mysql_db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid,
                                 timeout=60)
            wait_until(lambda: cli(daemon.env, "status", check=False).returncode == 0, 30,
                       "status: running once the database answers")
            assert daemon.stop() == 0
    finally:
        proxy.close()


def test_start_before_the_log_directory_exists(sqlite_db: DbHandle, tmp_path: Path) -> None:
    """A tmpfs /var/log after a reboot: the daemon waits for the directory instead of exiting
    2 (which systemd would not restart), then follows it, also once it is made again."""
    log_dir = tmp_path / "log"
    with Daemon(sqlite_db.env, log_dir, tmp_path / "daemon.log") as daemon:
        wait_until(lambda: "log_dir does not exist yet" in daemon.log_text(), 30,
                   "the warning", on_timeout=daemon.log_text)
        wait_until(lambda: cli(daemon.env, "status", check=False).returncode == 0, 30,
                   "status: running")
        log_dir.mkdir()
        expected = write_log(log_dir / "lmod.log", 300, seed=43)
        sqlite_db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid,
                              timeout=30)
        # removed and made again (a cleanup): the new directory is followed too
        shutil.rmtree(log_dir)
        time.sleep(1.0)
        log_dir.mkdir()
        expected += write_log(log_dir / "lmod.log", 200,
                              factory=LineFactory(seed=44, start_epoch=1_800_000_000))
        sqlite_db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=expected.valid,
                              timeout=30)
        assert daemon.alive()
        assert daemon.stop() == 0

"""The daemon started while the database is down: it answers on its status socket and holds
every file from first sight, as it does when the database goes away later."""

from __future__ import annotations

import gzip
import shutil
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

"""The deployed chain with the real programs: Lmod's hook -> logger -> rsyslogd -> logrotate ->
lmod-tracker -> MariaDB, using the files shipped in config/ and systemd/.

The shipped files are adapted only where a test must differ from a server: paths (a private
imuxsock socket, a temporary log directory, logrotate state), rsyslog's HUP sent to the test's
own rsyslogd instead of through systemctl, and dated names that include the second, because the
test rotates several times a day.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmod_tracker.statusclient import fetch_status
from tests.support.daemon import child_env, wait_until
from tests.support.databases import DbHandle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
TOOLS = ("rsyslogd", "logrotate", "logger")


def _tool(name: str) -> str:
    """Full path of a program, also when /usr/sbin is not on PATH."""
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin", "/sbin") if Path(d, name).exists()),
        name)


def _lmod_init() -> Path | None:
    for candidate in sorted(Path("/usr/share/lmod").glob("*/init/bash")):
        return candidate
    return None


def _require_tools() -> Path:
    missing = [t for t in TOOLS if not Path(_tool(t)).is_absolute()]
    init = _lmod_init()
    if init is None:
        missing.append("lmod")
    if missing:
        message = f"e2e needs {', '.join(missing)} (apt-get install lmod rsyslog logrotate)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert init is not None
    return init


@dataclass
class Chain:
    root: Path
    log_dir: Path
    socket: Path
    rsyslog_pid: Path
    rsyslogd: subprocess.Popen[bytes]
    bin_dir: Path
    modules: Path
    lmod_init: Path

    def hup_rsyslog(self) -> None:
        os.kill(int(self.rsyslog_pid.read_text()), signal.SIGHUP)


def _modulefiles(root: Path) -> Path:
    tree = root / "modulefiles"
    for rel in ("gcc/12.2.0", "gcc/13.1.0", "python/3.11.7", "python/3.12.1",
                "bio/samtools/1.9", "bio/samtools/1.17", "openmpi", "secret/.1.0"):
        f = tree / f"{rel}.lua"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f'whatis("{rel}")\n')
    return tree


def _start_rsyslog(root: Path, log_dir: Path, template: str) -> tuple[subprocess.Popen[bytes],
                                                                       Path, Path]:
    sock = root / "log.sock"
    pid = root / "rsyslogd.pid"
    work = root / "rsyslog-work"
    work.mkdir()
    snippet = (CONFIG / "rsyslog-lmod-tracker.conf").read_text()
    snippet = snippet.replace("/var/log/lmod", str(log_dir))
    snippet = snippet.replace("RSYSLOG_TraditionalFileFormat", template)
    conf = root / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imuxsock" SysSock.Use="off")\n'
        f'input(type="imuxsock" Socket="{sock}" CreatePath="on")\n'
        + snippet)
    check = subprocess.run([_tool("rsyslogd"), "-N1", "-f", str(conf)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([_tool("rsyslogd"), "-n", "-f", str(conf), "-i", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=(root / "rsyslog.err").open("wb"))
    wait_until(lambda: sock.exists() and pid.exists(), 20, "rsyslogd's socket")
    return proc, sock, pid


def _chain(tmp_path: Path, template: str) -> Chain:
    init = _require_tools()
    log_dir = tmp_path / "log"  # rsyslog creates it (dirCreateMode in the snippet)
    proc, sock, pid = _start_rsyslog(tmp_path, log_dir, template)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The hook calls plain `logger`; this one sends to the test's rsyslogd.
    real = _tool("logger")
    (bin_dir / "logger").write_text(f'#!/bin/sh\nexec {real} -u {sock} "$@"\n')
    (bin_dir / "logger").chmod(0o755)
    return Chain(tmp_path, log_dir, sock, pid, proc, bin_dir, _modulefiles(tmp_path), init)


def _shell(chain: Chain, user: str, script: str,
           job: str | None) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(chain.root), "USER": user, "LOGNAME": user,
           "PATH": f"{chain.bin_dir}:/usr/local/bin:/usr/bin:/bin",
           "LMOD_PACKAGE_PATH": str(CONFIG), "LANG": "C.UTF-8"}
    if job is not None:
        env["SLURM_JOB_ID"] = job
    full = (f"source {chain.lmod_init}\nmodule use {chain.modules}\n{script}\n"
            "echo '--- list'\nmodule -t list 2>&1\n")
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", full], env=env,
                          capture_output=True, text=True, timeout=120, check=True)


def _logrotate(chain: Chain) -> None:
    conf = (CONFIG / "logrotate-lmod-tracker").read_text()
    conf = conf.replace("/var/log/lmod", str(chain.log_dir))
    conf = conf.replace("dateformat -%Y%m%d", "dateformat -%Y%m%d-%s")
    conf = conf.replace("/usr/lib/rsyslog/rsyslog-rotate",
                        f"kill -HUP $(cat {chain.rsyslog_pid})")
    path = chain.root / "logrotate.conf"
    path.write_text(conf)
    proc = subprocess.run([_tool("logrotate"), "-f", "-s", str(chain.root / "logrotate.state"),
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _daemon(chain: Chain, db: DbHandle) -> tuple[subprocess.Popen[bytes], Path]:
    """lmod-tracker started from the unit's ExecStart line, with the unit's environment."""
    unit = (ROOT / "systemd" / "lmod-tracker.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start
    argv = shlex.split(exec_start.group(1))
    argv[0] = str(Path(sys.executable).parent / "lmod-tracker")
    toml = (CONFIG / "lmod-tracker.toml").read_text().replace("/var/log/lmod", str(chain.log_dir))
    (chain.root / "lmod-tracker.toml").write_text(toml)
    argv[argv.index("/etc/lmod-tracker/lmod-tracker.toml")] = str(chain.root / "lmod-tracker.toml")
    state, runtime = chain.root / "state", chain.root / "run"
    state.mkdir()
    runtime.mkdir()
    env = child_env(db.env, STATE_DIRECTORY=str(state), RUNTIME_DIRECTORY=str(runtime))
    for name in ("LMOD_TRACKER_POLL_INTERVAL", "LMOD_TRACKER_STATUS_SOCKET"):
        env.pop(name)  # the shipped defaults, as in production (socket in RUNTIME_DIRECTORY)
    err = (chain.root / "lmod-tracker.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=err, stderr=err)
    sock = runtime / "status.sock"
    wait_until(lambda: sock.exists(), 30, "lmod-tracker's status socket",
               on_timeout=lambda: (chain.root / "lmod-tracker.log").read_text())
    return proc, sock


# Each session: (user, job id or None, script, the loads Lmod performs in order)
SESSIONS = [
    ("alice", "1001", "module load gcc/12.2.0 bio/samtools/1.9",
     ["gcc/12.2.0", "bio/samtools/1.9"]),
    ("bob", None, "ml python/3.12.1 openmpi", ["python/3.12.1", "openmpi"]),
    ("carol", "1003", "module load gcc/12.2.0\nmodule swap gcc gcc/13.1.0",
     ["gcc/12.2.0", "gcc/13.1.0"]),
    ("dave", None, "module load secret/.1.0 bio/samtools/1.17", ["secret/.1.0",
                                                                 "bio/samtools/1.17"]),
    ("erin", "1005", "ml gcc/13.1.0 python/3.11.7\nml -python python/3.12.1",
     ["gcc/13.1.0", "python/3.11.7", "python/3.12.1"]),
]


@pytest.mark.parametrize("template", ["RSYSLOG_TraditionalFileFormat", "RSYSLOG_FileFormat"])
def test_lmod_rsyslog_logrotate_lmod_tracker(mysql_db: DbHandle, tmp_path: Path,
                                             template: str) -> None:
    chain = _chain(tmp_path, template)
    daemon = None
    try:
        # rsyslog creates the log on the first message; the daemon may start before it.
        _shell(chain, "warmup", "module load openmpi", None)
        wait_until(lambda: (chain.log_dir / "lmod.log").exists(), 20, "rsyslog's file")
        daemon, sock = _daemon(chain, mysql_db)
        expected: list[tuple[str, str, str | None]] = [("warmup", "openmpi", None)]
        lists: dict[str, list[str]] = {}
        lock = threading.Lock()

        def session(index: int, rounds: int) -> None:
            user, job, script, loads = SESSIONS[index % len(SESSIONS)]
            name = f"{user}{index}"
            for _ in range(rounds):
                out = _shell(chain, name, script, job).stdout
                with lock:
                    expected.extend((name, m, job) for m in loads)
                    lists[name] = out.split("--- list\n", 1)[1].split()

        rotations = 0
        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(session, i, 8) for i in range(10)]
            while not all(f.done() for f in futures):
                time.sleep(1.1)  # dated names have one-second resolution
                _logrotate(chain)
                rotations += 1
            for f in futures:
                f.result()
        time.sleep(1.1)
        _logrotate(chain)
        rotations += 1
        assert rotations >= 3
        assert any(p.name.endswith(".gz") for p in chain.log_dir.iterdir())  # compress ran

        mysql_db.wait_scalar("SELECT COUNT(*) FROM module_usage", expected=len(expected),
                             timeout=60)
        rows = mysql_db.rows(
            "SELECT u.name, p.name, p.version, m.path, h.name, mu.jobid FROM module_usage mu"
            " JOIN user u ON u.id = mu.user_id JOIN package p ON p.id = mu.package_id"
            " JOIN host h ON h.id = mu.host_id LEFT JOIN modulefile m ON m.id = mu.modulefile_id")
        got = sorted((u, f"{p}/{v}" if v else p, j) for u, p, v, _, _, j in rows)
        assert got == sorted(expected)
        for _u, p, v, path, host, _ in rows:
            assert path == str(chain.modules / (f"{p}/{v}" if v else p)) + ".lua"
            assert host == os.uname().nodename
        # What `module list` shows at the end of each shell was loaded by that shell.
        for name, modules in lists.items():
            loaded = {m for u, m, _ in expected if u == name}
            assert set(modules) <= loaded, (name, modules, loaded)

        def settled() -> bool:
            doc = fetch_status(sock)
            return all(f["lag_bytes"] == 0 for f in doc["files"]) and doc["queue"]["depth"] == 0
        wait_until(settled, 30, "zero lag")
        doc = fetch_status(sock)
        assert doc["totals"]["rejected"] == 0 and doc["state"] == "running"

        # Latency: from `module load` returning to the row being committed.
        latencies = []
        for i in range(15):
            _shell(chain, f"lat{i}", "module load gcc/12.2.0", None)
            t0 = time.monotonic()
            mysql_db.wait_scalar(
                "SELECT COUNT(*) FROM module_usage mu JOIN user u ON u.id = mu.user_id"
                " WHERE u.name = %s", (f"lat{i}",), expected=1, timeout=10, interval=0.01)
            latencies.append(time.monotonic() - t0)
        latencies.sort()
        print(f"\n[{template}] module load -> committed row: p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, p99 {latencies[-1] * 1000:.0f} ms"
              f" over {len(latencies)} loads; {len(expected)} loads, {rotations} rotations")
        print(json.dumps(doc["totals"]))
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        chain.rsyslogd.terminate()
        chain.rsyslogd.wait(10)

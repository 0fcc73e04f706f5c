"""What the daemon reports about itself: the status document, Prometheus metrics, and the
HTTP/1.1 server on a unix socket that serves them (``/status``, ``/metrics``, ``/healthz``).

The server is deliberately small: one request per connection, bounded request size and time,
a bounded number of connections served at once, so clients can never slow the writer down.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lmod_tracker import __version__, logs
from lmod_tracker.files import path_text

if TYPE_CHECKING:
    from lmod_tracker.events import Chunk
    from lmod_tracker.pipeline import Stats
    from lmod_tracker.store.base import Store
    from lmod_tracker.watch import Tailer

log = logs.get("lmod_tracker.status")

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0
_MAX_CLIENTS = 32
_STUCK_GRACE = 5.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Monitor:
    """Collects the daemon's figures into one status document."""

    def __init__(self, *, store: Store, stats: Stats, tailer: Tailer,
                 queue: asyncio.Queue[Chunk | None], db_timeout: float) -> None:
        self.store = store
        self.stats = stats
        self.tailer = tailer
        self.queue = queue
        self.db_timeout = db_timeout
        self.started = time.time()
        self.state = "starting"
        self._samples: deque[tuple[float, int]] = deque(maxlen=400)

    def sample(self) -> None:
        """Record the event total now; rates are computed from these samples."""
        self._samples.append((time.monotonic(), self.stats.events))

    def rate(self, seconds: float) -> float:
        if len(self._samples) < 2:
            return 0.0
        now, total = self._samples[-1]
        for t, n in self._samples:
            if now - t <= seconds:
                return (total - n) / (now - t) if now > t else 0.0
        return 0.0

    def writer_stuck(self) -> bool:
        """One database call has run past its own timeout: something is hung, not just down."""
        started = self.store.call_started
        return started is not None and (
            time.monotonic() - started > self.db_timeout + _STUCK_GRACE)

    def current_state(self) -> str:
        if self.state == "stopping":
            return self.state
        if self.stats.degraded or self.writer_stuck():
            return "degraded"  # also while starting: the database is not there yet
        return self.state

    def files(self) -> list[dict[str, Any]]:
        out = []
        for f in list(self.tailer.followers.values()):
            key = f.key
            _committed_path, committed, last_event = (
                self.stats.files.get(key, ("", 0, "")) if key else ("", 0, ""))
            out.append({
                "path": path_text(f.path),
                "identity": {"dev": f.dev, "ino": f.ino,
                             "fingerprint": key.fingerprint if key else None},
                "offset": committed,
                "read_offset": f.offset,
                "size": f.size,
                "lag_bytes": max(0, f.size - committed),
                "last_event_time": last_event or None,
                "held_back_bytes": f.held_back,
                "present": f.present,
            })
        return out

    def snapshot(self) -> dict[str, Any]:
        s = self.stats
        latencies = list(s.latencies)
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 3),
            "state": self.current_state(),
            "database": {
                "backend": self.store.backend,
                "target": self.store.describe(),
                "reachable": not s.degraded,
                "problem": (None if not s.degraded else
                            {"transient": "unreachable", "permanent": "refusing",
                             "data": "refusing values"}.get(s.last_error_kind or "",
                                                            "unreachable")),
                "last_error": s.last_error or None,
                "last_error_kind": s.last_error_kind,
                "last_commit": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.last_commit))
                                if s.last_commit else None),
                "writer_stuck": self.writer_stuck(),
            },
            "files": self.files(),
            "files_waiting": self.tailer.waiting,
            "totals": {"events": s.events, "duplicates": s.duplicates, "foreign": s.foreign,
                       "rejected": s.rejected, "refused": s.poisoned, "batches": s.batches,
                       "retries": s.retries, "bytes": s.bytes,
                       "garbage_bytes": s.garbage_bytes},
            "queue": {"depth": self.queue.qsize(), "bound": self.queue.maxsize},
            "events_per_s": {"1m": round(self.rate(60), 2), "5m": round(self.rate(300), 2)},
            "latency_s": {"p50": _percentile(latencies, 0.50),
                          "p99": _percentile(latencies, 0.99)},
        }

    def summary(self) -> str:
        """One line for systemd's STATUS= (shown by ``systemctl status``)."""
        snap = self.snapshot()
        lag = sum(f["lag_bytes"] for f in snap["files"])
        state = snap["state"]
        if state == "degraded":
            db = snap["database"]
            reason = db["last_error"] or ("a database call hung" if db["writer_stuck"] else "")
            state = f"degraded: {reason[:200]};"
        else:
            state += ":"
        return (f"{state} {len(snap['files'])} files, "
                f"{snap['events_per_s']['1m']:.0f} events/s, lag {lag} bytes, "
                f"{snap['totals']['events']} events committed")


class _Collector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        snap = self.monitor.snapshot()
        totals = snap["totals"]
        for name, doc in (("events", "Load events committed"),
                          ("duplicates", "Valid lines found already stored"),
                          ("foreign", "Lines of other programs, skipped"),
                          ("rejected", "Lines with the tracking tag that could not be parsed"),
                          ("refused", "Parsed loads the database refused, kept as rejects"),
                          ("batches", "Transactions committed"),
                          ("retries", "Failed commits retried"),
                          ("bytes", "Bytes of log read and committed"),
                          ("garbage_bytes", "NUL bytes skipped")):
            yield CounterMetricFamily(f"lmod_tracker_{name}", doc, value=totals[name])
        yield GaugeMetricFamily("lmod_tracker_up", "1 when running, 0 when degraded",
                                value=1.0 if snap["state"] == "running" else 0.0)
        yield GaugeMetricFamily("lmod_tracker_uptime_seconds", "Seconds since start",
                                value=snap["uptime_s"])
        yield GaugeMetricFamily("lmod_tracker_queue_depth", "Chunks waiting for the writer",
                                value=snap["queue"]["depth"])
        yield GaugeMetricFamily("lmod_tracker_queue_bound", "Capacity of the queue",
                                value=snap["queue"]["bound"])
        rate = GaugeMetricFamily("lmod_tracker_events_per_second", "Commit rate",
                                 labels=["window"])
        for window, value in snap["events_per_s"].items():
            rate.add_metric([window], value)
        yield rate
        latency = GaugeMetricFamily("lmod_tracker_latency_seconds",
                                    "Read-to-commit latency of recent batches", labels=["quantile"])
        for q, key in (("0.5", "p50"), ("0.99", "p99")):
            if snap["latency_s"][key] is not None:
                latency.add_metric([q], snap["latency_s"][key])
        yield latency
        lag = GaugeMetricFamily("lmod_tracker_file_lag_bytes", "Bytes not yet committed",
                                labels=["path"])
        offset = GaugeMetricFamily("lmod_tracker_file_offset_bytes", "Committed offset",
                                   labels=["path"])
        for f in snap["files"]:
            lag.add_metric([f["path"]], f["lag_bytes"])
            offset.add_metric([f["path"]], f["offset"])
        yield lag
        yield offset


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class StatusServer:
    """HTTP/1.1 on a unix socket: ``GET /status``, ``/metrics``, ``/healthz``."""

    def __init__(self, path: Path, monitor: Monitor, *, mode: int = 0o660,
                 group: str | None = None) -> None:
        self.path = path
        self.monitor = monitor
        self.mode = mode
        self.group = group
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(monitor))
        self._server: asyncio.base_events.Server | None = None
        self._slots = asyncio.Semaphore(_MAX_CLIENTS)

    async def start(self) -> None:
        """Listen; raises OSError with a readable message (and leaves no socket file)."""
        gid = -1
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise OSError(f"group {self.group!r} does not exist") from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=_MAX_REQUEST)
        try:
            os.chmod(self.path, self.mode)
            if gid != -1:
                try:
                    os.chown(self.path, -1, gid)
                except PermissionError:
                    raise OSError(f"cannot give the socket to group {self.group!r}: this user"
                                  " is not a member of it") from None
        except BaseException:
            await self.close()
            raise
        log.info("status endpoint listening", socket=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            try:
                status, ctype, body, extra = await self._respond(reader)
                head = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {ctype}",
                        f"Content-Length: {len(body)}", "Connection: close", *extra]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1)

    async def _respond(self, reader: asyncio.StreamReader
                       ) -> tuple[int, str, bytes, list[str]]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return _text(400, "bad request: incomplete, too large or too slow\n")
        try:
            request_line = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = request_line.split(" ")
        except (UnicodeDecodeError, ValueError):
            return _text(400, "bad request line\n")
        if not version.startswith("HTTP/1.") or not target.startswith("/"):
            return _text(400, "bad request line\n")
        route = target.split("?", 1)[0]
        if route not in ("/status", "/metrics", "/healthz"):
            return _text(404, "not found: try /status, /metrics or /healthz\n")
        if method not in ("GET", "HEAD"):
            status, ctype, body, extra = _text(405, "only GET\n")
            return status, ctype, body, [*extra, "Allow: GET, HEAD"]
        if route == "/status":
            body = json.dumps(self.monitor.snapshot(), indent=2).encode() + b"\n"
            result = (200, "application/json", body, [])
        elif route == "/metrics":
            result = (200, "text/plain; version=0.0.4; charset=utf-8",
                      generate_latest(self.registry), [])
        else:
            state = self.monitor.current_state()
            result = _text(200 if state == "running" else 503, state + "\n")
        if method == "HEAD":
            return result[0], result[1], b"", result[3]
        return result


def _text(status: int, text: str) -> tuple[int, str, bytes, list[str]]:
    return status, "text/plain; charset=utf-8", text.encode(), []


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead daemon; refuse to replace a live one or a file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise OSError(f"{path} is in use by another running lmod-tracker")

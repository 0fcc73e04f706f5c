"""The client side of the status endpoint, for ``lmod-tracker status``."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def get(path: Path, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def fetch_status(path: Path) -> dict[str, Any]:
    code, body = get(path, "/status")
    if code != 200:
        raise OSError(f"HTTP {code}")
    doc: dict[str, Any] = json.loads(body)
    return doc


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def render(doc: dict[str, Any]) -> str:
    """A human summary: state, database, totals, then one row per file."""
    db = doc["database"]
    t = doc["totals"]
    lat = doc["latency_s"]
    lines = [
        f"lmod-tracker {doc['version']}: {doc['state']}, up {doc['uptime_s']:.0f} s",
        f"database  {db['target']} ({db.get('problem') or 'reachable'}),"
        f" last commit {db['last_commit'] or 'never'}",
    ]
    if db.get("last_error"):
        lines.append(f"last error  {db['last_error']}")
    lines += [
        f"events    {t['events']} committed, {t['duplicates']} duplicates, {t['foreign']} foreign,"
        f" {t['rejected']} rejected, {t['retries']} retries",
        f"rate      {doc['events_per_s']['1m']}/s (1 min), {doc['events_per_s']['5m']}/s (5 min);"
        f" queue {doc['queue']['depth']}/{doc['queue']['bound']};"
        f" latency p50 {_ms(lat['p50'])} p99 {_ms(lat['p99'])}",
        "",
    ]
    rows = [("FILE", "OFFSET", "SIZE", "LAG", "LAST EVENT (UTC)")]
    for f in doc["files"]:
        rows.append((f["path"], str(f["offset"]), _size(f["size"]), _size(f["lag_bytes"]),
                     f["last_event_time"] or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"

"""Logging: structlog, one event per line on stderr.

``logfmt`` (key=value) when stderr is not a terminal, coloured console output when it is, JSON
on request. Under journald (``JOURNAL_STREAM`` set) no timestamp is added: the journal has one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import click
import structlog

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def fail_line(message: str) -> None:
    """Print the one line that says why a command failed, on stderr. Under journald it
    carries the error priority (``<3>``), as log lines carry theirs, so that
    ``journalctl -p err`` shows why the unit exited."""
    click.echo(f"{'<3>' if under_journald() else ''}lmod-tracker: {message}", err=True)


def under_journald() -> bool:
    """True when stderr is connected to the journal (systemd sets ``JOURNAL_STREAM``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _SyslogPrefix:
    """Prefixes each rendered line with ``<N>`` so journald files it at the right priority."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: Any) -> str:
        prio = _PRIORITY.get(str(event_dict.get("level", "info")), 6)
        return f"<{prio}>{self.renderer(logger, name, event_dict)}"


def setup(fmt: str = "auto", level: str = "info") -> None:
    journal = under_journald()
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "logfmt"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if not journal:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if fmt == "json":
        processors += [structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer()]
    elif fmt == "logfmt":
        processors += [structlog.processors.format_exc_info,
                       structlog.processors.LogfmtRenderer(
                           key_order=["timestamp", "level", "event"], drop_missing=True)]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    if journal:
        processors[-1] = _SyslogPrefix(processors[-1])
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimit:
    """Allows ``burst`` events per ``period`` seconds; counts what it suppressed."""

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        self.burst = burst
        self.period = period
        self._window = 0.0
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window >= self.period:
            self._window = now
            self._count = 0
        self._count += 1
        if self._count <= self.burst:
            return True
        self.suppressed += 1
        return False


class Repeats:
    """Lets a message about one thing (a file, a directory) through once per ``period``
    seconds, so a condition that persists does not flood the journal."""

    def __init__(self, period: float = 300.0, limit: int = 4096) -> None:
        self.period = period
        self.limit = limit
        self._last: dict[object, float] = {}

    def allow(self, key: object) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self._last) >= self.limit:
            self._last.clear()
        self._last[key] = now
        return True

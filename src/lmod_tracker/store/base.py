"""What every store does, and the pieces of it that do not depend on the backend."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from lmod_tracker.errors import SchemaError, StoreError
from lmod_tracker.events import Chunk, FileKey, LoadEvent, Rejected
from lmod_tracker.files import Checkpoint, path_text
from lmod_tracker.months import next_month

__all__ = ["SCHEMA_VERSION", "Batch", "CommitResult", "SchemaError", "Store", "StoreError"]

SCHEMA_VERSION = 4

#: Sizes of the free-text columns we write, in characters (bytes for ``raw``): every value is
#: cut to them before it reaches the database, so no text of ours can be refused.
TEXT_LIMITS = {"instance": 128, "path": 1024, "reason": 255, "raw": 4096}

#: The tables of our schema: a database that has some of them but no ``lmod_tracker_schema``
#: belongs to another program (lmod_tracking has ``user``, ``package``, ``module_usage``).
OUR_TABLES = ("user", "package", "host", "modulefile", "cluster", "module_usage", "usage_daily",
              "usage_monthly", "package_monthly", "usage_month", "rejected_line",
              "file_checkpoint")


@dataclass
class Batch:
    """Everything one transaction commits: rows, rejects, and how far each file was read."""

    events: list[LoadEvent] = field(default_factory=list)
    rejects: list[tuple[FileKey, str, Rejected]] = field(default_factory=list)
    #: file -> (path, offset, tail hash of the bytes before the offset)
    checkpoints: dict[FileKey, tuple[str, int, str]] = field(default_factory=dict)
    foreign: int = 0
    nbytes: int = 0
    first_read_at: float = 0.0
    last_event: dict[FileKey, str] = field(default_factory=dict)
    #: where each chunk's events start in ``events``: (index, file, path, chunk start offset)
    spans: list[tuple[int, FileKey, str, int]] = field(default_factory=list)

    def add(self, chunk: Chunk) -> None:
        if not self.checkpoints and not self.events:
            self.first_read_at = chunk.read_at
        if chunk.events:
            self.last_event[chunk.key] = chunk.events[-1].load_time
            self.spans.append((len(self.events), chunk.key, chunk.path,
                               chunk.end_offset - chunk.nbytes))
        self.events.extend(chunk.events)
        self.rejects.extend((chunk.key, chunk.path, r) for r in chunk.rejects)
        self.checkpoints[chunk.key] = (chunk.path, chunk.end_offset, chunk.tail)
        self.foreign += chunk.foreign
        self.nbytes += chunk.nbytes

    def __len__(self) -> int:
        return len(self.events)


    def origin(self, index: int) -> tuple[FileKey, str, int]:
        """The file of ``events[index]`` and the start offset of the chunk it was read in."""
        found = self.spans[0]
        for span in self.spans:
            if span[0] > index:
                break
            found = span
        return found[1], found[2], found[3]


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    duplicates: int
    rejected: int


class Store(Protocol):
    """A database that takes batches of load events with their file checkpoints."""

    backend: str
    #: time.monotonic() when the database call now under way started, None between calls
    call_started: float | None

    def describe(self) -> str:
        """Where the data goes, for logs and ``check-config`` (no secrets)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def init_schema(self) -> None:
        """Create the tables and views if missing (idempotent)."""
        ...

    async def schema_version(self) -> int | None:
        """The recorded schema version, or None when there is no schema."""
        ...

    async def upgrade(self) -> list[int]:
        """Move an older lmod-tracker schema to :data:`SCHEMA_VERSION` in place; the versions
        applied (none when it is current)."""
        ...

    async def unbuilt_months(self, today: dt.date) -> list[str]:
        """Months (``YYYY-MM-01``) that ended before ``today`` and are not (or no longer)
        in usage_monthly, oldest first (:func:`months_to_build`)."""
        ...

    async def build_month(self, month: str) -> int:
        """usage_monthly's rows of ``month`` from usage_daily, in one transaction that also
        marks the month built in usage_month; the number of rows written."""
        ...

    async def checkpoint(self, instance: str, key: FileKey) -> list[Checkpoint]:
        """Where ``instance`` may resume this content, best first: the checkpoint of this
        exact file, then those of other files with the same first line (largest first). The
        caller uses the first one the file's bytes prove (files.resume_point)."""
        ...

    def prepare(self, batch: Batch) -> object | None:
        """Work on a batch that needs no database (may run while another batch commits);
        the result goes to :meth:`commit`. None when there is nothing to prepare."""
        ...

    async def commit(self, instance: str, batch: Batch,
                     prepared: object | None = None) -> CommitResult:
        """Insert the batch and move its checkpoints in one transaction."""
        ...

    async def reset(self) -> None:
        """Drop the connection after an error; the next call reconnects."""
        ...

    async def probe(self) -> None:
        """Check, without changing anything, that the database answers and that we may still
        read and write our tables (raises the classified StoreError)."""
        ...

    async def committed(self, instance: str) -> dict[FileKey, int]:
        """Every checkpoint of ``instance``: how far each file content was committed."""
        ...

    async def last_commit(self, instance: str) -> dt.datetime | None:
        """When ``instance`` last moved a checkpoint (UTC, aware), None if it never did."""
        ...


def schema_text(backend: str) -> str:
    return resources.files("lmod_tracker.schema").joinpath(f"{backend}.sql").read_text()


def schema_statements(backend: str) -> list[str]:
    """The schema file split into statements (comments dropped)."""
    lines = [ln for ln in schema_text(backend).splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def schema_statement(backend: str, table: str) -> str:
    """The schema file's ``CREATE TABLE IF NOT EXISTS`` statement of ``table``."""
    for stmt in schema_statements(backend):
        head = stmt.split("(", 1)[0].split()
        if head[:5] == ["CREATE", "TABLE", "IF", "NOT", "EXISTS"] and head[5].strip("`") == table:
            return stmt
    raise KeyError(table)


def driver_password(password: str) -> bytes:
    """The password as the server expects it: asyncmy encodes a str password as Latin-1,
    the server (and the mariadb client) use UTF-8; undecodable bytes of the setting
    (surrogateescape) are passed as given."""
    return password.encode("utf-8", "surrogateescape")


def utc_now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def utc_from_db(value: object) -> dt.datetime | None:
    """A UTC time column as stored by :func:`utc_now_text` (text on SQLite, DATETIME on
    MariaDB), as an aware datetime."""
    if value is None:
        return None
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return when.replace(tzinfo=dt.UTC)


def cut(text: str, column: str) -> str:
    """``text`` cut to the size of a free-text column of ours."""
    limit = TEXT_LIMITS[column]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def db_path(path: str) -> str:
    """A file name as stored: undecodable bytes escaped, cut to the column."""
    return cut(path_text(path), "path")


def foreign_schema_error(where: str, found: list[str]) -> SchemaError:
    return SchemaError(
        f"{where} holds tables of another application ({', '.join(sorted(found))}) and no"
        " lmod-tracker schema: set DB_NAME to a different database (new or empty);"
        " lmod-tracker never writes into another program's tables")


def check_version(found: int | None, where: str) -> None:
    """Raise a SchemaError that says what to do, unless ``found`` is ours."""
    if found is None:
        raise SchemaError(f"{where} has no lmod-tracker schema: run `lmod-tracker db init`")
    if found < SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {found}, this lmod-tracker needs {SCHEMA_VERSION}:"
            " run `lmod-tracker db upgrade` (in place, keeps the data)")
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {found}, newer than this lmod-tracker"
            f" ({SCHEMA_VERSION}): upgrade lmod-tracker")


class IdCache:
    """Dimension ids by natural value, per table. Filled only from committed transactions."""

    MAX_ENTRIES = 500_000

    def __init__(self) -> None:
        self.tables: dict[str, dict[object, int]] = {
            "user": {}, "package": {}, "host": {}, "modulefile": {}, "cluster": {}}

    def merge(self, pending: dict[str, dict[object, int]]) -> None:
        for table, ids in pending.items():
            known = self.tables[table]
            if len(known) + len(ids) > self.MAX_ENTRIES:
                known.clear()
            known.update(ids)


def dimension_values(events: list[LoadEvent]) -> dict[str, set[object]]:
    """The distinct dimension values a batch of events refers to, per table."""
    return {
        "user": {e.user for e in events},
        "package": {(e.package, e.version) for e in events},
        "host": {e.host for e in events},
        "modulefile": {e.path for e in events if e.path is not None},
        "cluster": {e.cluster for e in events if e.cluster is not None},
    }


#: module_usage columns in the order of :func:`fact_rows`' tuples.
USAGE_COLUMNS = ("user_id", "package_id", "host_id", "modulefile_id", "jobid", "load_time",
                 "cluster_id", "userload")


def natural_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A fact row's natural key: (load_time, host_id, user_id, package_id, jobid, modulefile_id).

    Two loads that differ only in jobid or modulefile are two loads (two jobs of one user
    starting on one node in the same microsecond, or second for hooks that log whole seconds).
    """
    return (row[5], row[2], row[0], row[1], row[4], row[3])


def fact_rows(batch: Batch, ids: dict[str, dict[object, int]]
               ) -> tuple[list[tuple[Any, ...]], set[str]]:
    """module_usage rows (:data:`USAGE_COLUMNS`) for the batch's events, each natural key
    once, and their load times.

    Raises KeyError when a dimension value has no id in ``ids``.
    """
    users, packages, hosts, files = ids["user"], ids["package"], ids["host"], ids["modulefile"]
    clusters = ids["cluster"]
    rows = [(users[user], packages[(package, version)], hosts[host],
             None if path is None else files[path], jobid, load_time,
             None if cluster is None else clusters[cluster], userload)
            for load_time, user, package, version, host, path, jobid, cluster, userload
            in batch.events]
    times = {row[5] for row in rows}
    if len(times) < len(rows):
        # Loads in the same microsecond: keep one row per natural key (a file and its copy
        # read in one batch, or a line logged twice).
        unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            unique.setdefault(natural_key(row), row)
        rows = list(unique.values())
    return rows, times


def rollup_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """usage_daily increments for fact rows that were inserted: one per (UTC day, cluster,
    package, user), as (day, cluster_id, package_id, user_id, loads, user_loads, first_load,
    last_load), sorted by key (writers that touch the same rows lock them in one order).

    ``cluster_id`` is 0 when the cluster is unknown.
    """
    acc: dict[tuple[Any, ...], list[Any]] = {}
    get = acc.get
    for row in rows:
        load_time = row[5]
        key = (load_time[:10], row[6] or 0, row[1], row[0])
        entry = get(key)
        if entry is None:
            acc[key] = [1, 1 if row[7] == 1 else 0, load_time, load_time]
        else:
            entry[0] += 1
            if row[7] == 1:
                entry[1] += 1
            if load_time < entry[2]:
                entry[2] = load_time
            elif load_time > entry[3]:
                entry[3] = load_time
    return [(*key, *entry) for key, entry in sorted(acc.items())]


def months_of(daily: list[tuple[Any, ...]]) -> list[str]:
    """The months (``YYYY-MM-01``) that rollup rows (:func:`rollup_rows`) fall in."""
    return sorted({row[0][:8] + "01" for row in daily})


def month_bounds(month: str) -> tuple[str, str]:
    """The first day of ``month`` (``YYYY-MM-01``) and of the month after it."""
    first = dt.date.fromisoformat(month)
    after = next_month(first)
    return first.isoformat(), after.isoformat()


def months_to_build(first_day: str | None, built: set[str], today: dt.date) -> list[str]:
    """Months from the one of ``first_day`` (the oldest rollup day) to the last one that ended
    before ``today`` (UTC), that are not ``built``: what usage_monthly lacks, oldest first."""
    if first_day is None:
        return []
    month = dt.date.fromisoformat(str(first_day)[:10]).replace(day=1)
    current = today.replace(day=1)
    out = []
    while month < current:
        if month.isoformat() not in built:
            out.append(month.isoformat())
        month = next_month(month)
    return out

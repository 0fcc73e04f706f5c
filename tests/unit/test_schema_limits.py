"""Nothing the parser accepts can be refused by the schema: the limits agree with the columns."""

from __future__ import annotations

import re

from lmod_tracker.parse import FIELD_LIMITS
from lmod_tracker.store.base import TEXT_LIMITS, schema_text

#: parser field -> (table, column) in the MySQL schema
_COLUMNS = {"user": ("user", "name"), "package": ("package", "name"),
            "version": ("package", "version"), "host": ("host", "name"),
            "path": ("modulefile", "path"), "jobid": ("module_usage", "jobid"),
            "cluster": ("cluster", "name")}


def _column_sizes() -> dict[tuple[str, str], int]:
    sizes: dict[tuple[str, str], int] = {}
    table = ""
    for line in schema_text("mysql").splitlines():
        m = re.match(r"CREATE TABLE IF NOT EXISTS `?(\w+)`?", line)
        if m:
            table = m.group(1)
            continue
        m = re.match(r"\s+(\w+)\s+VAR(?:CHAR|BINARY)\((\d+)\)", line)
        if m and table:
            sizes[(table, m.group(1))] = int(m.group(2))
    return sizes


def test_parser_limits_equal_the_columns() -> None:
    sizes = _column_sizes()
    for field, column in _COLUMNS.items():
        assert FIELD_LIMITS[field] == sizes[column], (field, column)


def test_our_free_text_fits_its_columns() -> None:
    sizes = _column_sizes()
    for name, column in (("instance", ("file_checkpoint", "instance")),
                         ("path", ("file_checkpoint", "path")),
                         ("reason", ("rejected_line", "reason")),
                         ("raw", ("rejected_line", "raw"))):
        assert TEXT_LIMITS[name] == sizes[column], name
    assert sizes[("rejected_line", "path")] == TEXT_LIMITS["path"]
    assert sizes[("rejected_line", "instance")] == TEXT_LIMITS["instance"]

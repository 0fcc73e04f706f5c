"""What is installed, from Lmod's own spider: ``$LMOD_DIR/spider -o spider-json $MODULEPATH``
(a JSON object: short name -> modulefile path -> {"fullName", "Version", ...}) or
``$LMOD_DIR/spider -o list $MODULEPATH`` (one modulefile path a line).

A module is ``(name, version)`` split at the last slash of its full name, as the parser splits
``module=`` (``bio/samtools/1.17`` is ``bio/samtools`` version ``1.17``); a module without a
version (``matlab.lua`` at the top of a tree) has version ``''``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from lmod_tracker.reports.window import ReportError

__all__ = ["parse_spider"]

_SUFFIXES = (".lua",)


def _split(full: str) -> tuple[str, str]:
    name, sep, version = full.rpartition("/")
    return (name, version) if sep else (full, "")


def _from_json(doc: Any) -> set[tuple[str, str]]:
    if not isinstance(doc, dict):
        raise ReportError("spider JSON: expected an object of module names")
    found: set[tuple[str, str]] = set()
    for short, files in doc.items():
        if not isinstance(files, dict):
            raise ReportError(f"spider JSON: {short!r} is not an object of modulefiles")
        for entry in files.values():
            if not isinstance(entry, dict):
                continue
            full = entry.get("fullName")
            if isinstance(full, str) and full:
                found.add(_split(full))
            else:
                version = entry.get("Version")
                found.add((str(short), version if isinstance(version, str) else ""))
    return found


def _from_list(text: str, modulepath: Sequence[str]) -> set[tuple[str, str]]:
    roots = sorted({os.path.normpath(p) for p in modulepath if p}, key=len, reverse=True)
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        path = line.strip()
        if not path or path.startswith("#"):
            continue
        rel = None
        for root in roots:
            if path.startswith(root + "/"):
                rel = path[len(root) + 1:]
                break
        if rel is None:  # not under a known root: the last two components
            rel = "/".join(path.split("/")[-2:])
        for suffix in _SUFFIXES:
            if rel.endswith(suffix):
                rel = rel[:-len(suffix)]
        if os.path.basename(rel).startswith((".modulerc", ".version")):
            continue
        found.add(_split(rel))
    return found


def parse_spider(text: str, modulepath: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Installed modules from spider output in either form (detected by content).

    ``modulepath`` (the MODULEPATH the list was made with) turns the list form's file paths
    into module names; without it a path gives its last two components."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ReportError(f"spider JSON: not valid JSON: {exc}") from None
        found = _from_json(doc)
    else:
        found = _from_list(text, modulepath)
    if not found:
        raise ReportError("spider output lists no modules (run Lmod's spider on your"
                          " MODULEPATH: $LMOD_DIR/spider -o spider-json $MODULEPATH)")
    return sorted(found)

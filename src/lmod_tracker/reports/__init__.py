"""Read-only usage reports: which modules are used, by whom, how the use changes, what is unused.

``queries`` holds one function per question (with its SQL for each backend) and returns
:class:`~lmod_tracker.reports.result.Table` values; ``render`` and ``html`` turn tables into
text, CSV, JSON or a self-contained HTML page. A question never knows its output format.
"""

from lmod_tracker.reports.result import Column, Table
from lmod_tracker.reports.window import ReportError, Window

__all__ = ["Column", "ReportError", "Table", "Window"]

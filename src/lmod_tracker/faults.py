"""Named points where a test can kill the process, to prove that a crash there loses nothing.

Off unless ``LMOD_TRACKER_FAULT`` is set (read once, at import): ``NAME`` kills the process
with SIGKILL the first time it passes point ``NAME``; ``NAME:N`` the N-th time. Points:

* ``read``      -- a chunk was read and parsed, before it is queued for the writer
* ``insert``    -- the rows of a batch were sent, before COMMIT
* ``commit``    -- COMMIT returned, before the writer records it
* ``drain``     -- shutdown has begun, before the queue is drained
* ``lookup``    -- a file's checkpoint is being looked up
"""

from __future__ import annotations

import os
import signal

_WANTED, _, _NTH = os.environ.get("LMOD_TRACKER_FAULT", "").partition(":")
_LEFT = int(_NTH or 1) if _WANTED else 0

POINTS = frozenset({"read", "insert", "commit", "drain", "lookup"})


def point(name: str) -> None:
    """Kill this process here if the test asked for it."""
    global _LEFT
    if name != _WANTED:
        return
    _LEFT -= 1
    if _LEFT <= 0:
        os.kill(os.getpid(), signal.SIGKILL)

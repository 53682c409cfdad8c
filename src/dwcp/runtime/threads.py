"""Thread priority: background work that must not keep a service's event loop, or the host's other work, off a
CPU runs at a higher nice value. On Linux nice is per thread, and threads a thread starts inherit it."""

from __future__ import annotations

import contextlib
import os


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value to `nice` (never lower it: that needs privileges).

    Where the platform has no per-thread priority or refuses it, the thread runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))

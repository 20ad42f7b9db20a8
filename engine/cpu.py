"""How many cores this process may use: the one count the forest's threads and the Dask workers share."""
from __future__ import annotations

import os


def available_cores() -> int:
    """Cores in this process's CPU affinity (a container or ``taskset`` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

"""What the CPU offers this process: the cores (one count for the forest's threads and the Dask workers) and the
last-level cache (the forest's row blocks are sized to share it)."""
from __future__ import annotations

import functools
import os
from typing import Optional


def available_cores() -> int:
    """Cores in this process's CPU affinity (a container or ``taskset`` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def last_level_cache_bytes() -> Optional[int]:
    """Size of the largest CPU cache (Linux sysfs; None where it cannot be read, e.g. Windows and macOS)."""
    sizes = []
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = os.listdir(root)
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(root, entry, "size"), encoding="ascii") as fh:
                text = fh.read().strip().upper()
        except OSError:
            continue
        try:
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text))
        except ValueError:
            continue
    return max(sizes) if sizes else None

"""Freed memory handed back to the operating system.

A worker's memory follows its load: a burst (a killed worker's sockets moving
here, every console's snapshot after a Redis outage) raises it, and glibc's
allocator then keeps most of what was freed, fragmented between live blocks,
so the process's RSS stays at its high-water mark. ``malloc_trim`` returns the
free pages in the middle of the heap too (madvise), so after the burst RSS
follows the load down again.
"""

import ctypes
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _malloc_trim():
    try:
        # The C library this process already has loaded: no lookup, no subprocess.
        trim = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_trim = _malloc_trim()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def release_free_memory() -> bool:
    """Hand free heap pages back to the OS; False where the C library cannot."""
    if _trim is None:
        return False
    before, started = rss_mb(), time.perf_counter()
    _trim(0)
    after, took = rss_mb(), 1000 * (time.perf_counter() - started)
    level = logging.INFO if before - after >= 5 else logging.DEBUG
    log.log(level, "memory: trimmed, RSS %.1f -> %.1f MB in %.1f ms", before, after, took)
    return True

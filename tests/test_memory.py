"""Freed memory goes back to the operating system (cpweb/memory.py)."""

import random

from cpweb.memory import release_free_memory, rss_mb


def test_memory_freed_after_a_burst_is_handed_back():
    """A burst (a killed worker's sockets arriving, every console's snapshot)
    leaves freed blocks between live ones; glibc keeps those pages, so RSS
    stays at the burst's height until they are trimmed."""
    rng = random.Random(1)
    burst = [bytes(rng.randrange(1024, 4096)) for _ in range(60_000)]  # ~150 MB
    kept = burst[::50]  # what outlives the burst, spread through the heap
    del burst
    before = rss_mb()
    assert release_free_memory()
    after = rss_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 1_200

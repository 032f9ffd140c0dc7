"""Keep freed memory in the process: on Linux with glibc, raise malloc's mmap and trim thresholds.

By default glibc hands every buffer above its mmap threshold (128 KiB, adapting up to 32 MiB) straight back
to the kernel when it is freed, so each training step asks for its logits, activations and gradients again
and the kernel zeroes fresh pages for them: in ``benchmarks/sft_step.py`` (160 SFT steps of the tiny writer)
more than half of the process's time was spent in the kernel, with 32 million page faults. With the
thresholds raised, freed buffers stay in the heap and the next step reuses them. The arithmetic is the same,
so every number is identical; only time changes (measured: ``benchmarks/allocator.py``, docs/tuning.md
round 9). The cost: a process keeps its peak memory until it exits, and the heap fragments a little more
(the rater's build peaked about a tenth higher).

Applied once, when ``rlhf_helpers`` is imported (it must come before the big allocations, and importing the
package is the one step every notebook, test and command shares). ``RLHF_KEEP_FREED_MEMORY=0`` switches it
off; on macOS, Windows or a non-glibc Linux nothing changes.
"""
from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 2**31 - 1  # the largest value mallopt's int takes: buffers up to 2 GiB come from the heap

applied = False  # whether this process runs with the raised thresholds


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; return whether it is now in effect.
    Idempotent; a no-op (False) off glibc or with ``RLHF_KEEP_FREED_MEMORY=0``."""
    global applied
    if applied:
        return True
    if os.environ.get("RLHF_KEEP_FREED_MEMORY", "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    except (OSError, ValueError, AttributeError):  # no such library or symbol: leave malloc as it is
        applied = False
    return applied

"""Keep freed memory in the process (glibc), so PyTorch's large CPU tensors reuse pages instead of faulting in new ones.

glibc serves every allocation above its mmap threshold (at most 32 MB: a batch's logits over a 49k-token vocabulary,
SmolLM2's embedding gradient) with a fresh mmap and unmaps it on free, so the next step's tensor of the same size
faults in and zeroes every page again. On the main job that kernel work was 90 s of its 1,009 CPU-seconds and 18.4
million page faults (benchmarks/README.md). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from the heap and a 2 GB
trim threshold keeps freed heap for the next step: 28 s and 1.1 million faults, the job 9 min 2 s -> 7 min 41 s, peak
RSS 5.00 -> 4.96 GB. The heap grows for the first few rounds of a repeated pattern (glibc pads aligned blocks, so a
freed one fits the next only once neighbours merge) and then stays. The arithmetic is untouched: the main job's
metrics and samples were the same bit for bit. ``GILBENCH_MALLOC=system`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GB of freed heap


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's allocator as the module doc says; True if it was tuned (glibc, not opted out), else False."""
    if os.environ.get("GILBENCH_MALLOC", "").lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def allocator_setting() -> str:
    """How this process allocates memory, for env.json and benchmark lines (tunes glibc first if not done yet)."""
    return "glibc, freed memory kept" if keep_freed_memory() else "system default"

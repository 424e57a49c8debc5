"""gilbench/allocator.py: with glibc's allocator tuned, a large tensor allocated again after a free reuses its pages
(few page faults); with GILBENCH_MALLOC=system each one faults in every page, as glibc does by default."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from gilbench.allocator import keep_freed_memory
tuned = keep_freed_memory()
def fresh_faults():
    x = torch.empty(64 * 2**20 // 4); x.fill_(1.0); del x  # 64 MB: above glibc's largest mmap threshold
for _ in range(12):  # glibc settles on reusing freed blocks after a few rounds (memalign's padding)
    fresh_faults()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    fresh_faults()
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(env_value: str | None, monkeypatch) -> tuple[bool, int]:
    if env_value is None:
        monkeypatch.delenv("GILBENCH_MALLOC", raising=False)
    else:
        monkeypatch.setenv("GILBENCH_MALLOC", env_value)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    return bool(int(out[0])), int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")
def test_tuned_allocator_reuses_freed_pages(monkeypatch):
    tuned, tuned_faults = page_faults(None, monkeypatch)
    default, default_faults = page_faults("system", monkeypatch)
    assert tuned and not default
    pages = 5 * 64 * 2**20 // 4096  # what five fresh 64 MB blocks fault in
    assert default_faults > 0.9 * pages
    assert tuned_faults < 0.05 * pages

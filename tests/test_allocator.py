"""Importing rlhf_helpers keeps freed memory in the process (glibc's mmap and trim thresholds raised), so that
every training step reuses its buffers instead of asking the kernel for fresh zeroed pages. Measured effect:
benchmarks/allocator.py and docs/tuning.md, round 9. Checked here by behaviour: page faults of a repeated
64 MiB allocation in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, resource, sys
if sys.argv[1] == "import":
    import rlhf_helpers
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def churn(times):
    for _ in range(times):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)   # touch every page, as a tensor's first write does
        libc.free(p)
churn(1)  # the first allocation always faults its pages in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (64 << 20) // 4096  # pages in one 64 MiB buffer


def faults(mode: str, **env) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return int(out.stdout.strip().splitlines()[-1])


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                           reason="the allocator setting is glibc's (Linux); elsewhere importing changes nothing")


@glibc
def test_plain_interpreter_faults_every_large_buffer_in_again():
    # The control: without the package, glibc returns each 64 MiB buffer to the kernel on free (mmap), so ten
    # allocations fault in ten buffers' worth of pages. If this ever stops holding, the setting is moot.
    assert faults("plain") >= 9 * PAGES


@glibc
def test_importing_the_package_reuses_freed_buffers():
    assert faults("import") < PAGES  # ten allocations reuse one buffer's pages


@glibc
def test_the_setting_can_be_switched_off():
    assert faults("import", RLHF_KEEP_FREED_MEMORY="0") >= 9 * PAGES

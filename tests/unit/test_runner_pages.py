"""The fork server's memory in huge pages: a real process, real mappings, the kernel's own answer.

Runs in a fresh interpreter: collapsing changes the memory of the process that asks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import ctypes, json, mmap
from accelerate_core.runner.pages import HUGE_PAGE, collapse_resident_memory

libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
SIZE = 5 * HUGE_PAGE

def region(touch_every):
    # an inaccessible page on each side: the region is a mapping of its own (no merge with a neighbour)
    m = mmap.mmap(-1, SIZE + 2 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    at = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc.mprotect(at, 4096, 0)
    libc.mprotect(at + 4096 + SIZE, 4096, 0)
    for i in range(0, SIZE, 4096 * touch_every):
        m[4096 + i] = 1
    return m, at + 4096

def huge_mb(address):
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        low = line.split()[0].split("-")[0]
        if all(c in "0123456789abcdef" for c in low) and int(low, 16) == address:
            for field in lines[i + 1 :]:
                if field.startswith("AnonHugePages:"):
                    return int(field.split()[1]) // 1024

def resident(address):
    vec = ctypes.create_string_buffer(SIZE // 4096)
    libc.mincore(address, SIZE, vec)
    return sum(b & 1 for b in vec.raw)

dense, dense_at = region(1)
sparse, sparse_at = region(16)
sparse_before = resident(sparse_at)
collapsed = collapse_resident_memory()
print(json.dumps({"collapsed": collapsed, "dense_huge_mb": huge_mb(dense_at), "sparse_huge_mb": huge_mb(sparse_at),
                  "sparse_before": sparse_before, "sparse_after": resident(sparse_at)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_COLLAPSE is Linux's")
def test_dense_anonymous_memory_goes_to_huge_pages_and_sparse_memory_is_not_made_resident():
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=repo, timeout=60,
                         env={"PYTHONPATH": str(repo)}, check=True)  # fmt: skip
    got = json.loads(out.stdout)
    if got["collapsed"] == 0:
        pytest.skip(f"this kernel collapses nothing (no MADV_COLLAPSE, or THP 'never'): {got}")

    # 10 MiB mapped, not 2 MiB-aligned: at least 4 whole huge pages lie inside it
    assert got["dense_huge_mb"] >= 8 and got["collapsed"] >= 4
    # one 4 KiB page in 16 is resident: left in small pages, none of it made resident by a collapse
    assert got["sparse_huge_mb"] == 0 and got["sparse_after"] == got["sparse_before"] == 5 * 512 // 16

"""Memory: many runs of a small cell in one process do not grow RSS."""
import asyncio
import gc
import os

import pytest

from safepyrun import RunPython

PAGE = os.sysconf("SC_PAGE_SIZE")

# Under AddressSanitizer freed memory sits in a quarantine, so RSS says
# nothing about leaks there; `make test` measures the release build.
pytestmark = pytest.mark.skipif(os.environ.get("SAFEPYRUN_ASAN") == "1",
                                reason="RSS is meaningless under ASan")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def runs(py, code, n):
    async def main():
        for _ in range(n):
            await py(code)
    asyncio.run(main())


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                    reason="needs /proc")
@pytest.mark.parametrize("code", [
    "x = 1 + 1\nx",
    "def f(a): return [i * a for i in range(10)]\nr = f(3)\nsum(r)",
])
def test_10000_runs_grow_rss_under_2mb(code):
    py = RunPython({"__name__": "memtest"})
    runs(py, code, 500)  # warm up caches, free lists, linecache slots
    gc.collect()
    before = rss_bytes()
    runs(py, code, 10_000)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1024:.0f} KiB"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                    reason="needs /proc")
def test_repeated_refusals_do_not_grow_rss():
    py = RunPython({"__name__": "memtest", "os": os})
    code = ("try:\n    os.system('true')\nexcept PermissionError:\n    pass\n"
            "try:\n    open('/nonexistent-dir/x', 'w')\nexcept PermissionError:\n"
            "    pass\n")
    runs(py, code, 500)
    gc.collect()
    before = rss_bytes()
    runs(py, code, 5_000)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown / 1024:.0f} KiB"

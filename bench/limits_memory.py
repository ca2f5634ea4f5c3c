"""The memory cap's cost (issue 9, item 2): an allocation-heavy cell with and
without `max_memory`, and host code once the hooks are installed.

Rows:
  - `cell`: one runner without a cap and one with a cap the cell never
    reaches (1 GiB) run the same allocation-heavy cell (lists, a dict of
    large lists, strings, numpy arrays when numpy is present), alternating,
    ROUNDS times each; medians.  With a cap every block above 512 bytes,
    every new pymalloc arena and every numpy buffer goes through the
    counting path (a mutex and a hash-table insert and remove).
  - `host`: the same allocation work as plain host code (no cell), in two
    fresh child processes: one where the hooks were never installed, one
    where a capped cell has run (hooks installed, no capped run active: the
    "predictable branch" path).  Medians over ROUNDS pairs.

Run with an interpreter that has safepyrun installed (or PYTHONPATH set):
    bench/.venvs/ours-py3.11/bin/python bench/limits_memory.py [--header]
Prints markdown table rows.  Standard library only (numpy if installed).
"""
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = 9

WORK = """
rows = [[i, i * 2, str(i)] for i in range(100_000)]
table = {i: [0] * 100 for i in range(5_000)}
text = ''.join(str(i) for i in range(100_000))
try:
    import numpy as np
    arrays = [np.ones(1_000) for _ in range(2_000)]
except ImportError:
    arrays = []
n = len(rows) + len(table) + len(text) + len(arrays)
del rows, table, text, arrays
n
"""

CHILD = r"""
import sys, time
hooks = sys.argv[1] == "hooks"
work = sys.argv[2]
if hooks:
    import asyncio
    from safepyrun import RunPython
    asyncio.run(RunPython({}, max_memory=2**30)("x = [0] * 1000"))
else:
    import safepyrun  # imported in both, so only the hooks differ
code = compile(work, "<work>", "exec")
best = []
for _ in range(5):
    t0 = time.perf_counter()
    exec(code, {})
    best.append(time.perf_counter() - t0)
print(min(best))
"""


def time_cell(py):
    async def once():
        t0 = time.perf_counter()
        await py(WORK)
        return time.perf_counter() - t0
    return asyncio.run(once())


def child(mode):
    env = dict(os.environ, XDG_CONFIG_HOME=tempfile.mkdtemp())
    out = subprocess.run([sys.executable, "-c", CHILD, mode, WORK],
                         capture_output=True, text=True, env=env, check=True,
                         stdin=subprocess.DEVNULL)
    return float(out.stdout.strip())


def main():
    from safepyrun import RunPython
    version = "%d.%d" % sys.version_info[:2]
    if "--header" in sys.argv:
        print("Memory cap (`bench/limits_memory.py`): an allocation-heavy cell "
              "without and with `max_memory` (never reached); host code in a "
              "process without and with the hooks installed.")
        print()
        print("| Python | workload | without | with | ratio |")
        print("|---|---|---:|---:|---:|")
    free = RunPython({})
    capped = RunPython({}, max_memory=1 << 30)
    time_cell(free), time_cell(capped)  # warm: imports, caches
    without, with_ = [], []
    for r in range(ROUNDS):
        order = (free, capped) if r % 2 == 0 else (capped, free)
        for py in order:
            (without if py is free else with_).append(time_cell(py))
    a, b = statistics.median(without), statistics.median(with_)
    print(f"| {version} | allocation-heavy cell, cap 1 GiB | {a * 1e3:.1f} ms "
          f"| {b * 1e3:.1f} ms | {b / a:.3f}x |")
    plain, hooked = [], []
    for r in range(ROUNDS):
        order = ("plain", "hooks") if r % 2 == 0 else ("hooks", "plain")
        for mode in order:
            (plain if mode == "plain" else hooked).append(child(mode))
    a, b = statistics.median(plain), statistics.median(hooked)
    print(f"| {version} | the same work as host code, hooks installed, no "
          f"capped run | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.3f}x |")


if __name__ == "__main__":
    main()

"""The cost of the time limit's watchdog (src/watchdog.c) on a trivial cell.

Every cell step registers with the watchdog (a lock taken twice, the clock
read once) when it has a deadline or runs in an asyncio task; a cell with a
deadline also arms a loop timer at each await.  This measures, in one
process, the per-call latency of a trivial cell (`1 + 1`) and of a cell
that awaits once (`await asyncio.sleep(0)`):
  - `no limit`:   RunPython(...) without timeout (steps still registered:
                  the loop is kept moving and cancellation watched);
  - `timeout=60`: the same with a deadline that never fires;
and, for scale, plain `exec` of the compiled code.  Medians over ROUNDS
rounds of N calls each, alternating the order.

Run with an interpreter that has safepyrun installed (or PYTHONPATH set):
    python bench/limits_time.py [--header]
Prints markdown table rows.  Standard library only.
"""
import asyncio
import statistics
import sys
import time

from safepyrun import RunPython

N = 2000
ROUNDS = 9
CELLS = {"trivial": "1 + 1",
         "one await": "import asyncio\nawait asyncio.sleep(0)\n1"}


async def per_call(py, code, n):
    t0 = time.perf_counter()
    for _ in range(n):
        await py(code)
    return (time.perf_counter() - t0) / n


def plain_exec(code, n):
    compiled = compile(code, "<bench>", "exec",
                       flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT
    t0 = time.perf_counter()
    for _ in range(n):
        res = eval(compiled, {})
        if asyncio.iscoroutine(res):
            res.close()
    return (time.perf_counter() - t0) / n


async def measure(name, code):
    plain = RunPython({})
    limited = RunPython({}, timeout=60)
    await per_call(plain, code, 200)     # warm up both
    await per_call(limited, code, 200)
    rows = {"no limit": [], "timeout=60": []}
    for r in range(ROUNDS):
        pair = [("no limit", plain), ("timeout=60", limited)]
        if r % 2:
            pair.reverse()
        for label, py in pair:
            rows[label].append(await per_call(py, code, N))
    base = statistics.median(rows["no limit"])
    lim = statistics.median(rows["timeout=60"])
    ex = plain_exec(code, N) if name == "trivial" else float("nan")
    v = "%d.%d" % sys.version_info[:2]
    print(f"| {v} | {name} | {base * 1e6:.1f} us | {lim * 1e6:.1f} us | "
          f"{(lim - base) * 1e6:+.1f} us | {ex * 1e6:.2f} us |")


def main():
    if "--header" in sys.argv:
        print("| Python | cell | no limit | timeout=60 | difference | "
              "plain exec |")
        print("| --- | --- | --- | --- | --- | --- |")
    for name, code in CELLS.items():
        asyncio.run(measure(name, code))


if __name__ == "__main__":
    main()

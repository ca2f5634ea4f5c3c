"""Per-call cost of the trusted-native check (issue 12), against its floor.

100,000 calls of an allowed numpy scalar method (`v.item()`, as W5) in one
loop, three ways, alternated round by round in one process:
  plain   exec of the loop, no monitoring
  floor   the same loop with the cheapest exact monitor the interpreter
          offers and no work in it: 3.12+, a C callable (`"".format`) as
          the sys.monitoring CALL callback on that code, never DISABLEd
          (disabling a site would let a different callee through it);
          3.11, a C callable as the profile function (`sys.setprofile`),
          which sees every call as ours does
  ours    the cell run by RunPython with `allow()` on the method
Prints one Markdown row: per-call overhead of floor and ours over plain.
Run by `make bench-monitor` with each of our bench venvs.
"""
import asyncio
import statistics
import sys
import time

import numpy as np

import safepyrun

N = 100_000
ROUNDS = 9
CODE = "acc = 0\nfor _ in range(%d):\n    acc += v.item()\nacc" % N


def main():
    version = "%d.%d" % sys.version_info[:2]
    if "--header" in sys.argv:
        print("| Python | plain loop | floor: empty exact monitor | ours | floor per call "
              "| ours per call | ours / plain | target 1.1x |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
    v = np.int64(3)
    owner = next(c for c in type(v).__mro__ if "item" in c.__dict__)
    safepyrun.allow({owner: ["item"]})
    py = safepyrun.RunPython(g={"v": v})
    loop = asyncio.new_event_loop()
    code = compile(CODE, "<floor>", "exec")
    noop = "".format  # a C callable taking any arguments

    def plain():
        t0 = time.perf_counter()
        exec(code, {"v": v})
        return time.perf_counter() - t0

    if sys.version_info >= (3, 12):
        mon = sys.monitoring
        mon.use_tool_id(5, "bench-floor")
        mon.register_callback(5, mon.events.CALL, noop)

        def floor():
            mon.set_local_events(5, code, mon.events.CALL)
            try:
                return plain()
            finally:
                mon.set_local_events(5, code, 0)
    else:
        def floor():
            sys.setprofile(noop)
            try:
                return plain()
            finally:
                sys.setprofile(None)

    def ours():
        t0 = time.perf_counter()
        loop.run_until_complete(py(CODE))
        return time.perf_counter() - t0

    kinds = {"plain": plain, "floor": floor, "ours": ours}
    res = {k: [] for k in kinds}
    for f in kinds.values():
        f()  # warm-up
    order = list(kinds)
    for r in range(ROUNDS):
        for k in order[r % 3:] + order[:r % 3]:
            res[k].append(kinds[k]())
    p, fl, o = (statistics.median(res[k]) for k in ("plain", "floor", "ours"))
    per = lambda t: "%.0f ns" % ((t - p) / N * 1e9)
    ratio = o / p
    print("| %s | %.2f ms | %.2f ms | %.2f ms | %s | %s | %.3fx | %s |" % (
        version, p * 1e3, fl * 1e3, o * 1e3, per(fl), per(o), ratio,
        "met" if ratio <= 1.1 else "not met"))


if __name__ == "__main__":
    main()

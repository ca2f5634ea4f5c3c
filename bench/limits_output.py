"""A print-heavy cell with its output captured and not (issue 9, item 3).

The cell prints LINES short lines.  Measured in one process, same cell, the
host's sys.stdout a text file on /dev/null:
  - `exec`:           exec(compile(cell)) with no sandbox (reference);
  - `python()`:       await python(cell): output to the host's stdout, as in
                      the seed, before any report installed the router;
  - `python(), routed`: the same once the router is installed (each write
                      asks the run context, finds no report, forwards);
  - `run()`:          await python.run(cell): output captured in the report;
  - `run(echo=True)`: captured and shown on the host's stdout (tee);
  - `run(max_output)`: captured, cut at 1,000 characters.
Per-line cost is (time - empty cell's time) / LINES.  Medians of ROUNDS;
the ways alternate within each round, so a load on the machine falls on all.

Run with an interpreter that has safepyrun installed:
    python bench/limits_output.py [--header]
Prints markdown table rows.  Standard library only.
"""
import asyncio
import os
import statistics
import sys
import time

LINES = 20_000
ROUNDS = 21
CELL = f"for i in range({LINES}):\n    print('line', i, 'of the output')\n"
EMPTY = f"for i in range({LINES}):\n    pass\n"


def timed_all(ways, times):
    """Time each of {name: fn} ROUNDS times, the ways alternating; the
    samples are added to times[name]."""
    for _ in range(ROUNDS):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times.setdefault(name, []).append(time.perf_counter() - t0)


def main():
    import safepyrun
    from safepyrun import RunPython

    sink = open(os.devnull, "w")
    real = sys.stdout
    sys.stdout = sink
    try:
        loop = asyncio.new_event_loop()
        py = RunPython({}, ok_dests=[])
        cut = RunPython({}, ok_dests=[], max_output=1000)
        def exec_cell(code):
            # Plain exec writes to the sink itself, router or not.
            saved, sys.stdout = sys.stdout, sink
            try:
                exec(compile(code, "<cell>", "exec"), {})
            finally:
                sys.stdout = saved

        def on_loop(make):
            return lambda: loop.run_until_complete(make())

        def ways(code, routed):
            if not routed:  # before any report installed the router
                return {"exec": lambda: exec_cell(code),
                        "python()": on_loop(lambda: py(code))}
            return {
                "exec": lambda: exec_cell(code),
                "python(), routed": on_loop(lambda: py(code)),
                "run()": on_loop(lambda: py.run(code)),
                "run(echo=True)": on_loop(lambda: py.run(code, echo=True)),
                "run(), max_output=1000": on_loop(lambda: cut.run(code)),
            }

        full, empty = {}, {}
        assert type(sys.stdout).__name__ != "OutputRouter"
        timed_all(ways(CELL, False), full)
        timed_all(ways(EMPTY, False), empty)
        loop.run_until_complete(py.run("1"))  # installs the router
        assert type(sys.stdout).__name__ == "OutputRouter"
        timed_all(ways(CELL, True), full)
        timed_all(ways(EMPTY, True), empty)
        rows = {name: (statistics.median(full[name]),
                       statistics.median(empty[name])) for name in full}
        r = loop.run_until_complete(py.run(CELL))
        assert r.stdout.count("\n") == LINES, r
    finally:
        sys.stdout = real
    version = "%d.%d" % sys.version_info[:2]
    if "--header" in sys.argv:
        print(f"| Python | how | cell printing {LINES:,} lines | per line "
              "| per line vs exec |")
        print("|---|---|---:|---:|---:|")
    base = (rows["exec"][0] - rows["exec"][1]) / LINES
    for how, (full, empty) in rows.items():
        per = (full - empty) / LINES
        print(f"| {version} | {how} | {full * 1e3:.1f} ms | {per * 1e9:.0f} ns "
              f"| {per / base:.2f}x |")
    sink.close()
    del safepyrun


if __name__ == "__main__":
    main()

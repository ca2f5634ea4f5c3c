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
Per-line cost is (time - empty cell's time) / LINES.  Medians of ROUNDS.

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
ROUNDS = 15
CELL = f"for i in range({LINES}):\n    print('line', i, 'of the output')\n"
EMPTY = f"for i in range({LINES}):\n    pass\n"


def timed(fn):
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
        rows = {}

        def exec_cell(code):
            exec(compile(code, "<cell>", "exec"), {})

        rows["exec"] = (timed(lambda: exec_cell(CELL)),
                        timed(lambda: exec_cell(EMPTY)))
        rows["python()"] = (timed(lambda: loop.run_until_complete(py(CELL))),
                            timed(lambda: loop.run_until_complete(py(EMPTY))))
        loop.run_until_complete(py.run("1"))  # installs the router
        assert type(sys.stdout).__name__ == "OutputRouter"
        rows["python(), routed"] = (
            timed(lambda: loop.run_until_complete(py(CELL))),
            timed(lambda: loop.run_until_complete(py(EMPTY))))
        rows["run()"] = (timed(lambda: loop.run_until_complete(py.run(CELL))),
                         timed(lambda: loop.run_until_complete(py.run(EMPTY))))
        rows["run(echo=True)"] = (
            timed(lambda: loop.run_until_complete(py.run(CELL, echo=True))),
            timed(lambda: loop.run_until_complete(py.run(EMPTY, echo=True))))
        rows["run(), max_output=1000"] = (
            timed(lambda: loop.run_until_complete(cut.run(CELL))),
            timed(lambda: loop.run_until_complete(cut.run(EMPTY))))
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

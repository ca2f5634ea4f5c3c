"""Host code writing files after cells have run, against the same host code
in a process where safepyrun was never imported.

The gate (src/gate.c) must cost host code nothing measurable when no cell
frame is on its stack.  After cells have run, the engine's index of cell
code is not empty, so every write event the host raises makes the audit
hook read the run context variable and walk the host's frames, probing the
index once per frame.  This measures exactly that, in the worst realistic
shape: the host writes from a call stack 20 frames deep.

Each round starts two fresh child processes, alternating the order:
  - `plain`: never imports safepyrun;
  - `ours`:  imports safepyrun, runs 50 cells (which define functions, so
    their code stays indexed), then writes.
Each child writes WRITES small files (open, write, close) into a temporary
directory and prints its time per write.  Medians over ROUNDS rounds.

Run with an interpreter that has safepyrun installed:
    bench/.venvs/ours-py3.11/bin/python bench/host_writes.py [--header]
Prints markdown table rows.  Standard library only.
"""
import os
import statistics
import subprocess
import sys
import tempfile

WRITES = 20_000
ROUNDS = 7
DEPTH = 20

CHILD = r"""
import os, sys, tempfile, time
mode, writes, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "ours":
    import asyncio
    from safepyrun import RunPython
    py = RunPython({}, ok_dests=[])
    async def cells():
        for i in range(50):
            await py(f"def f{i}(x):\n    return x + {i}\nf{i}(1)")
    asyncio.run(cells())
d = tempfile.mkdtemp()
name = os.path.join(d, "f.txt")
def deep(n):
    if n:
        return deep(n - 1)
    t0 = time.perf_counter()
    for _ in range(writes):
        with open(name, "w") as f:
            f.write("x")
    return time.perf_counter() - t0
print(deep(depth) / writes)
"""


def child(mode):
    env = dict(os.environ, XDG_CONFIG_HOME=tempfile.mkdtemp())
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(WRITES),
                          str(DEPTH)], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL,
                         # Not the checkout: `-c` puts the working directory
                         # first on sys.path, and the checkout's safepyrun
                         # has no built engine.
                         cwd=env["XDG_CONFIG_HOME"])
    if out.returncode != 0:
        sys.exit("host_writes.py: the %s child failed:\n%s" % (mode, out.stderr[-2000:]))
    return float(out.stdout.strip())


def main():
    version = "%d.%d" % sys.version_info[:2]
    if "--header" in sys.argv:
        print("| Python | host write, no safepyrun | host write after 50 cells "
              "| ratio | target within 2% |")
        print("|---|---:|---:|---:|---|")
    plain, ours = [], []
    for r in range(ROUNDS):
        order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
        for mode in order:
            (plain if mode == "plain" else ours).append(child(mode))
    p, o = statistics.median(plain), statistics.median(ours)
    ratio = o / p
    print(f"| {version} | {p * 1e6:.2f} us | {o * 1e6:.2f} us | {ratio:.3f}x | "
          f"{'met' if ratio <= 1.02 else 'not met'} |")


if __name__ == "__main__":
    main()

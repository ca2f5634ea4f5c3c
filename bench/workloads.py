"""The benchmark workloads, each defined once.

Every system (plain exec, ours, the published safepyrun, the peers) runs the
same `code` string here against the same host namespace built by `host()`.
Nothing in this file is timing: it only says *what* is run.  bench/worker.py
says *how* each system runs it, bench/run.py decides how often and compares.

Standard library only (the worker imports it in every bench venv).
"""
import os

# ---------------------------------------------------------------------------
# Cell sources.  The text is the cell an LLM would send; the host namespace
# (see host()) provides `path`, `host_write` and `v`.

W1_CODE = "1+1"

# A typical 20-line LLM cell: imports json and re, builds a dict from a list
# comprehension, formats and prints a table, returns a value.
W2_CODE = '''\
import json
import re

rows = [{"id": i, "name": f"item-{i:03d}", "price": round(1.25 * i, 2), "qty": (i * 7) % 11} for i in range(40)]
by_name = {r["name"]: r for r in rows if r["qty"] > 0}
pat = re.compile(r"item-(\\d+)")
totals = {}
for name, r in by_name.items():
    m = pat.fullmatch(name)
    if m and int(m.group(1)) % 3 == 0:
        totals[name] = r["price"] * r["qty"]
width = max(len(k) for k in totals)
print(f"{'name':<{width}} | {'total':>9}")
print("-" * (width + 12))
for name, total in sorted(totals.items(), key=lambda kv: -kv[1])[:8]:
    print(f"{name:<{width}} | {total:>9.2f}")
report = json.dumps({"n": len(totals), "sum": round(sum(totals.values()), 2)})
print(report)
summary = json.loads(report)
summary["n"], summary["sum"]
'''

W3_READS = 10_000
W3_CODE = f'''\
n = 0
for _ in range({W3_READS}):
    n += len(open(path).read())
n
'''

W4_CALLS = 1_000
W4_CODE = f'''\
total = 0
for i in range({W4_CALLS}):
    total += host_write(i)
total
'''

W5_CALLS = 100_000
W5_CODE = f'''\
acc = 0
for _ in range({W5_CALLS}):
    acc += v.item()
acc
'''

W6_ADDS = 10_000_000
W6_CODE = f'''\
s = 0
for i in range({W6_ADDS}):
    s += i
s
'''

# Real data work (issue 12): each cell does what an analysis cell does, with
# its files in ok_dests, so every system that can run it runs it unchanged.

W8_ROWS = 20_000
W8_CODE = '''\
import pandas as pd
df = pd.read_csv(csv_path)
totals = df.groupby("key", as_index=False)["value"].sum()
merged = df.merge(totals, on="key", suffixes=("", "_total"))
merged["share"] = merged["value"] / merged["value_total"]
merged.to_csv(out_csv, index=False)
len(merged), round(float(merged["share"].sum()), 6)
'''

W9_CODE = '''\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot(xs, [x * x for x in xs], label="x^2")
ax.set_title("bench")
ax.legend()
fig.savefig(out_png)
plt.close(fig)
len(xs)
'''

W10_CODE = '''\
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 300))
b = a @ a.T
c = np.sort(b, axis=1)[:, -5:].mean(axis=1)
int(b.shape[0]), round(float(np.abs(c).sum()), 3) > 0
'''

W11_FILES = 1_000
W11_CODE = f'''\
import os
n = 0
for i in range({W11_FILES}):
    with open(os.path.join(src_dir, f"in{{i}}.txt")) as f:
        n += len(f.read())
    with open(os.path.join(out_dir, f"out{{i}}.txt"), "w") as f:
        f.write("row %d\\n" % i)
n
'''

# ---------------------------------------------------------------------------
# Metadata.  `unit` is what one timing sample is divided by ("call" = one
# `await pyrun(code)`); `needs` lists what the system must offer.

WORKLOADS = {
    "W1": dict(title="trivial cell `1+1`", short="W1 trivial cell", code=W1_CODE,
               unit="call", needs=()),
    "W2": dict(title="typical 20-line LLM cell (json, re, dict comprehension, printed table)",
               short="W2 20-line cell", code=W2_CODE, unit="call", needs=()),
    "W3": dict(title=f"{W3_READS:,} audited reads `open(p).read()` in one cell",
               short="W3 10k reads", code=W3_CODE, unit="cell", needs=()),
    "W4": dict(title=f"{W4_CALLS:,} calls of an allowed host function that writes a file outside `ok_dests`",
               short="W4 1k trusted calls", code=W4_CODE, unit="cell", needs=("allow",)),
    "W5": dict(title=f"{W5_CALLS:,} calls of an allowed numpy scalar method (`np.int64.item`)",
               short="W5 100k native calls", code=W5_CODE, unit="cell", needs=("allow", "numpy")),
    "W6": dict(title=f"pure-Python loop, {W6_ADDS:,} additions", short="W6 10^7 additions",
               code=W6_CODE, unit="cell", needs=()),
    "W7": dict(title="`import safepyrun` in a fresh process (median of 20) and resident memory added",
               short="W7 import", code=None, unit="process", needs=()),
    "W8": dict(title=f"pandas pipeline: read a {W8_ROWS:,}-row CSV, group, merge, write the result into `ok_dests`",
               short="W8 pandas pipeline", code=W8_CODE, unit="cell", needs=("pandas",)),
    "W9": dict(title="matplotlib figure (Agg) saved as PNG into `ok_dests`",
               short="W9 matplotlib figure", code=W9_CODE, unit="cell", needs=("matplotlib",)),
    "W10": dict(title="numpy computation: 300x300 matrix product, sort, reductions",
                short="W10 numpy", code=W10_CODE, unit="cell", needs=("numpy",)),
    "W11": dict(title=f"{W11_FILES:,} files read and {W11_FILES:,} written into `ok_dests` in one cell",
                short="W11 1k reads + 1k writes", code=W11_CODE, unit="cell", needs=()),
}
CELL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W8", "W9", "W10", "W11"]
# The real-data workloads (issue 12: each within 3% of plain exec).
REAL_DATA = ["W8", "W9", "W10", "W11"]

# Samples: (inner calls per sample, samples per round).  One sample of W1
# times `inner` back-to-back calls and divides; W3-W6 time one cell.
SAMPLING = {
    "full":  {"W1": (500, 5), "W2": (50, 3), "W3": (1, 3), "W4": (1, 3), "W5": (1, 3), "W6": (1, 2),
              "W8": (1, 3), "W9": (1, 3), "W10": (1, 3), "W11": (1, 3)},
    "quick": {"W1": (200, 3), "W2": (20, 2), "W3": (1, 1), "W4": (1, 1), "W5": (1, 1), "W6": (1, 1),
              "W8": (1, 1), "W9": (1, 1), "W10": (1, 1), "W11": (1, 1)},
}
ROUNDS = {"full": 7, "quick": 3}
W7_PROCS = {"full": 20, "quick": 20}


# ---------------------------------------------------------------------------
# Host side: the namespace `g` every system's cell sees, and what must be
# registered with allow() for the workload to be legitimate.

class Host:
    """Host namespace and allow() registrations for one workload."""

    def __init__(self, name, tmp):
        self.name = name
        self.ok_dir = os.path.join(tmp, "ok")        # the only ok_dests entry
        self.outside = os.path.join(tmp, "outside")  # gated: not in ok_dests
        os.makedirs(self.ok_dir, exist_ok=True)
        os.makedirs(self.outside, exist_ok=True)
        self.g = {"__name__": "__bench_cell__"}
        self.allow_items = []   # arguments for allow(...)
        self.calls = [0]
        getattr(self, "_" + name)()

    def _W1(self): pass
    def _W2(self): pass
    def _W6(self): pass

    def _W3(self):
        p = os.path.join(self.ok_dir, "data.txt")
        with open(p, "w") as f:
            f.write("safepyrun bench line\n" * 4)
        self.g["path"] = p

    def _W4(self):
        target = os.path.join(self.outside, "written.txt")
        calls = self.calls

        def host_write(i):
            # A gated operation: writing outside ok_dests.  Only legitimate
            # because host_write is registered with allow().
            with open(target, "w") as f:
                f.write(str(i))
            calls[0] += 1
            return i

        self.g["host_write"] = host_write
        self.allow_items = [host_write]

    def _W5(self):
        import numpy as np
        v = np.int64(3)
        owner = next(c for c in type(v).__mro__ if "item" in c.__dict__)
        self.g["v"] = v
        self.allow_items = [{owner: ["item"]}]


    def _W8(self):
        import random
        rnd = random.Random(0)
        p = os.path.join(self.ok_dir, "data.csv")
        with open(p, "w") as f:
            f.write("key,value,label\n")
            for i in range(W8_ROWS):
                f.write("k%d,%d,row%d\n" % (rnd.randrange(50), rnd.randrange(1000), i))
        self.g["csv_path"] = p
        self.g["out_csv"] = os.path.join(self.ok_dir, "merged.csv")

    def _W9(self):
        # The backend and font cache are set up by the host, as a notebook
        # has them before any cell runs.
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(self.ok_dir, "mplconfig"))
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        plt.close(fig)
        self.g["xs"] = list(range(200))
        self.g["out_png"] = os.path.join(self.ok_dir, "figure.png")

    def _W10(self):
        import numpy  # noqa: F401  (loaded by the host, as in a notebook)

    def _W11(self):
        src = os.path.join(self.ok_dir, "in")
        out = os.path.join(self.ok_dir, "out")
        os.makedirs(src, exist_ok=True)
        os.makedirs(out, exist_ok=True)
        for i in range(W11_FILES):
            with open(os.path.join(src, "in%d.txt" % i), "w") as f:
                f.write("line %d\n" % i * 3)
        self.g["src_dir"] = src
        self.g["out_dir"] = out


def expected_value(code, g):
    """Value of the cell's last expression, computed with plain exec (for verification only)."""
    import ast
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    ns = dict(g)
    exec(compile(tree, "<expected>", "exec"), ns)
    return eval(compile(ast.Expression(last.value), "<expected>", "eval"), ns) if last else None

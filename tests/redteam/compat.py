"""The compatibility corpus: ordinary cells an LLM writes for data work.

Each session is a list of cells run in order on one runner (as IPython cells
share a namespace); each cell has its expected value.  A cell passes when
the sandbox returns the expected value AND plain ``exec`` of the same cells
does too (the control).  Names the cells see: DATA (a directory that is the
runner's only ok_dest, holding data.csv, data.json and notes.txt).

Stdlib only, so the published implementation's venv can run it too:
``run_sessions(RunPython, base_dir)``.
"""
from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import tempfile
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    code: str
    expected: object
    known_gap: str | None = None


SESSIONS: dict[str, list[Cell]] = {}


def S(name, *cells):
    assert name not in SESSIONS
    SESSIONS[name] = [Cell(c[0].strip("\n"), c[1], *c[2:]) for c in cells]


S("json",
  ("import json\njson.dumps({'b': 2, 'a': [1, 2]}, sort_keys=True)", '{"a": [1, 2], "b": 2}'),
  ("json.loads('{\"x\": [1, 2, {\"y\": null}]}')['x'][2]", {"y": None}),
  ("with open(DATA + '/data.json') as f:\n    cfg = json.load(f)\nsorted(cfg)", ["name", "rows"]),
  ("sum(r['v'] for r in cfg['rows'])", 6))
S("csv",
  ("import csv\nwith open(DATA + '/data.csv', newline='') as f:\n    rows = list(csv.DictReader(f))\nlen(rows)", 3),
  ("[r['city'] for r in rows if int(r['pop']) > 150]", ["Oslo", "Lima"]),
  ("with open(DATA + '/out.csv', 'w', newline='') as f:\n    w = csv.writer(f)\n    w.writerow(['a', 'b'])\n    w.writerows([[1, 2], [3, 4]])\nopen(DATA + '/out.csv').read().splitlines()", ["a,b", "1,2", "3,4"]))
S("re",
  ("import re\nre.findall(r'\\d+', 'a1b22c333')", ["1", "22", "333"]),
  ("re.sub(r'(\\w+)@(\\w+)', r'\\2 at \\1', 'me@host')", "host at me"),
  ("m = re.match(r'(?P<y>\\d{4})-(?P<m>\\d\\d)', '2024-05-01')\nm.groupdict()", {"y": "2024", "m": "05"}))
S("datetime",
  ("from datetime import date, datetime, timedelta\n(date(2024, 3, 1) - date(2024, 2, 1)).days", 29),
  ("(datetime(2024, 1, 1, 12) + timedelta(hours=13)).isoformat()", "2024-01-02T01:00:00"),
  ("datetime.strptime('2024-07-04', '%Y-%m-%d').strftime('%A')", "Thursday"))
S("collections",
  ("from collections import Counter, defaultdict, deque, namedtuple\nCounter('mississippi').most_common(2)", [("i", 4), ("s", 4)]),
  ("d = defaultdict(list)\nfor k, v in [('a', 1), ('b', 2), ('a', 3)]:\n    d[k].append(v)\ndict(d)", {"a": [1, 3], "b": [2]}),
  ("q = deque(range(5), maxlen=3)\nq.append(9)\nlist(q)", [3, 4, 9]),
  ("Pt = namedtuple('Pt', 'x y')\ntuple(Pt(1, 2)._replace(y=5))", (1, 5)))
S("itertools",
  ("import itertools\nlist(itertools.accumulate([1, 2, 3, 4]))", [1, 3, 6, 10]),
  ("[k for k, g in itertools.groupby('aaabbc')]", ["a", "b", "c"]),
  ("len(list(itertools.combinations(range(6), 3)))", 20),
  ("list(itertools.islice(itertools.count(10, 5), 3))", [10, 15, 20]))
S("functools",
  ("from functools import lru_cache, reduce, partial\n@lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(60)", 1548008755920),
  ("reduce(lambda a, b: a * b, range(1, 8))", 5040),
  ("int2 = partial(int, base=2)\nint2('1011')", 11))
S("dataclasses",
  ("from dataclasses import dataclass, field, asdict\n@dataclass\nclass Item:\n    name: str\n    qty: int = 0\n    tags: list = field(default_factory=list)\nasdict(Item('pen', 3))", {"name": "pen", "qty": 3, "tags": []}),
  ("sorted([Item('b', 2), Item('a', 5)], key=lambda i: i.qty)[-1].name", "a"))
S("pathlib",
  ("p = Path(DATA)\nsorted(x.name for x in p.iterdir())", ["data.csv", "data.json", "notes.txt"]),
  ("(p / 'notes.txt').read_text().splitlines()[0]", "first line"),
  ("[x.suffix for x in sorted(p.glob('*.c*'))]", [".csv"]),
  ("(p / 'report.md').write_text('# hi\\n')\n(p / 'report.md').stat().st_size", 5))
S("classes",
  ("class Account:\n    def __init__(self, owner):\n        self.owner, self.balance = owner, 0\n    def deposit(self, n):\n        self.balance += n\n        return self\n    def __repr__(self):\n        return f'Account({self.owner!r}, {self.balance})'\nrepr(Account('ann').deposit(5).deposit(7))", "Account('ann', 12)"),
  ("class Savings(Account):\n    rate = 0.5\n    def interest(self):\n        return self.balance * self.rate\nSavings('bo').deposit(10).interest()", 5.0),
  ("isinstance(Savings('x'), Account), Savings.__mro__[1].__name__", (True, "Account")))
S("generators",
  ("def chunks(xs, n):\n    for i in range(0, len(xs), n):\n        yield xs[i:i + n]\nlist(chunks(list(range(7)), 3))", [[0, 1, 2], [3, 4, 5], [6]]),
  ("g = (x * x for x in range(5))\nnext(g), sum(g)", (0, 30)),
  ("def walk():\n    total = yield 1\n    yield total * 2\nw = walk()\nnext(w), w.send(21)", (1, 42)))
S("comprehensions",
  ("base = 10\nfactor = 3\n[base + i * factor for i in range(3)]", [10, 13, 16]),
  ("{k: base for k in 'ab'}", {"a": 10, "b": 10}),
  ("offset = 2\nlabels = ['a', 'b']\n[[f'{l}{i + offset}' for i in range(2)] for l in labels]", [["a2", "a3"], ["b2", "b3"]]),
  ("sum(x for x in range(base) if x % factor == 0)", 18),
  ("scale = lambda v: v * factor\nlist(map(scale, [1, 2]))", [3, 6]))
S("session",
  ("def normalise(xs):\n    total = sum(xs)\n    return [x / total for x in xs]", None),
  ("weights = normalise([1, 1, 2])\nweights", [0.25, 0.25, 0.5]),
  ("def describe(xs):\n    return f'{len(xs)} items, max {max(xs)}'\ndescribe(weights)", "3 items, max 0.5"),
  ("threshold = 0.3\ndef big(xs):\n    return [x for x in xs if x > threshold]\nbig(weights)", [0.5]),
  ("threshold = 0.2\nbig(weights)", [0.25, 0.25, 0.5]),
  ("def normalise(xs):\n    return [x * 2 for x in xs]\nnormalise([1, 2])", [2, 4]))
S("async",
  ("import asyncio\nasync def work(i):\n    await asyncio.sleep(0.001 * i)\n    return i * i\nawait asyncio.gather(*(work(i) for i in range(5)))", [0, 1, 4, 9, 16]),
  ("async def agen():\n    for i in range(3):\n        await asyncio.sleep(0)\n        yield i\n[x async for x in agen()]", [0, 1, 2]),
  ("t = asyncio.create_task(work(3))\nawait t", 9),
  ("await asyncio.wait_for(work(2), timeout=5)", 4))
S("text",
  ("text = open(DATA + '/notes.txt').read()\nlen(text.split())", 6),
  ("import textwrap\ntextwrap.shorten('the quick brown fox jumps', width=15)", "the quick [...]"),
  ("'-'.join(w.capitalize() for w in 'hello big world'.split())", "Hello-Big-World"),
  ("import string\nstring.Template('$a+$b').substitute(a=1, b=2)", "1+2"))
S("stdlib-misc",
  ("import math, statistics\nround(statistics.stdev([2, 4, 4, 4, 5, 5, 7, 9]), 4)", 2.1381),
  ("math.comb(10, 3), math.gcd(84, 36)", (120, 12)),
  ("import heapq\nheapq.nsmallest(2, [5, 1, 4, 2])", [1, 2]),
  ("import bisect\nbisect.bisect([1, 3, 5, 7], 4)", 2),
  ("import hashlib\nhashlib.sha256(b'abc').hexdigest()[:8]", "ba7816bf"),
  ("from fractions import Fraction\nstr(Fraction(1, 3) + Fraction(1, 6))", "1/2"),
  ("from decimal import Decimal\nstr(Decimal('0.1') + Decimal('0.2'))", "0.3"),
  ("import io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    print('captured')\nbuf.getvalue()", "captured\n"),
  ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    err = type(e).__name__\nerr", "ZeroDivisionError"),
  ("import os\nos.environ.get('RT_COMPAT_UNSET', 'default')", "default"))
S("numpy",
  ("import numpy as np\na = np.arange(12).reshape(3, 4)\na.sum(axis=0).tolist()", [12, 15, 18, 21]),
  ("float(np.linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]])).__round__(6))", 5.0),
  ("rng = np.random.default_rng(0)\nx = rng.normal(size=1000)\nbool(abs(x.mean()) < 0.1)", True),
  ("np.save(DATA + '/a.npy', a)\nnp.load(DATA + '/a.npy').shape", (3, 4)),
  ("np.where(a % 2 == 0, a, -1)[0].tolist()", [0, -1, 2, -1]))
S("pandas",
  ("import pandas as pd\ndf = pd.read_csv(DATA + '/data.csv')\ndf.shape", (3, 2)),
  ("df.sort_values('pop', ascending=False)['city'].tolist()", ["Lima", "Oslo", "Bern"]),
  ("df.assign(big=df['pop'] > 150).groupby('big')['pop'].sum().to_dict()", {False: 100, True: 500}),
  ("df.to_csv(DATA + '/sorted.csv', index=False)\npd.read_csv(DATA + '/sorted.csv').equals(df)", True),
  ("df.to_json(DATA + '/df.json', orient='records')\nimport json\nlen(json.load(open(DATA + '/df.json')))", 3),
  ("int(df.describe().loc['count', 'pop'])", 3),
  ("pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]}).pivot_table(index='k', values='v', aggfunc='sum')['v'].to_dict()", {"a": 4, "b": 2}))
S("matplotlib",
  ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3], [3, 1, 2])\nfig.savefig(DATA + '/plot.png')\nplt.close(fig)\nopen(DATA + '/plot.png', 'rb').read(4)", b"\x89PNG"),
  ("fig2 = plt.figure()\nplt.bar(['a', 'b'], [1, 2])\nplt.title('t')\nplt.savefig(DATA + '/bar.svg')\nplt.close('all')\nopen(DATA + '/bar.svg').read().count('<svg')", 1))

FILES = {
    "data.csv": "city,pop\nOslo,200\nBern,100\nLima,300\n",
    "data.json": json.dumps({"name": "demo", "rows": [{"v": 1}, {"v": 2}, {"v": 3}]}),
    "notes.txt": "first line\nsecond line here\nend\n",
}


# ---- multi-cell sessions: one live namespace, as IPython's (issue 8, item 1) ----
S("live_globals",
  ("THRESHOLD = 0.5\ndef classify(x):\n    return 'hi' if x > THRESHOLD else 'lo'\nclassify(0.7)", "hi"),
  ("THRESHOLD = 0.8\nclassify(0.7)", "lo"),
  ("def fmt(x):\n    return f'<{x}>'\ndef show(x):\n    return fmt(classify(x))\nshow(0.9)", "<hi>"),
  ("def fmt(x):\n    return f'[{x}]'\nshow(0.9)", "[hi]"),
  ("counter = 0\ndef bump():\n    global counter\n    counter += 1\n    return counter\nbump(), bump()", (1, 2)),
  ("bump()\ncounter", 3),
  ("del THRESHOLD\ntry:\n    classify(1)\nexcept NameError as e:\n    r = str(e)\nr", "name 'THRESHOLD' is not defined"))
S("live_classes",
  ("class Acc:\n    total = 0\n    def add(self, n):\n        Acc.total += n\n        return self\nAcc().add(2).add(3)\nAcc.total", 5),
  ("def make():\n    return Acc()\nmake().add(1)\nAcc.total", 6),
  ("class Acc:\n    total = 100\n    def add(self, n):\n        return self\nmake().add(1)\nAcc.total", 100),
  ("import functools\n@functools.lru_cache\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(30)", 832040),
  ("fib.cache_info().hits > 0", True))
S("live_async",
  ("import asyncio\nresults = []\nasync def work(i):\n    await asyncio.sleep(0)\n    results.append(i)\n    return i * 2\nawait asyncio.gather(*(work(i) for i in range(3)))", [0, 2, 4]),
  ("sorted(results)", [0, 1, 2]),
  ("async def work(i):\n    return -i\nawait asyncio.gather(*(work(i) for i in range(3)))", [0, -1, -2]))

def n_cells():
    return sum(len(v) for v in SESSIONS.values())


def make_data(base):
    data = os.path.join(base, "data")
    os.makedirs(data, exist_ok=True)
    for name, text in FILES.items():
        with open(os.path.join(data, name), "w") as f:
            f.write(text)
    return data


async def plain_run(code, g):
    """Plain exec of a cell: run it, return its last expression's value."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(code)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    r = eval(compile(tree, "<plain>", "exec", flags=flags), g)
    if inspect.iscoroutine(r):
        await r
    if last is None:
        return None
    v = eval(compile(last, "<plain>", "eval", flags=flags), g)
    if inspect.iscoroutine(v):
        v = await v
    return v


def _same(a, b):
    try:
        return type(a) == type(b) and a == b or (
            isinstance(a, (list, tuple)) and type(a) == type(b) and
            len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b)))
    except Exception:
        return False


def run_sessions(RunPython, base=None, names=None, **kw):
    """Run the corpus; {f'{session}:{i}': {'ok', 'plain_ok', 'got', 'error'}}."""
    import os as _os
    import pathlib
    base = base or tempfile.mkdtemp(prefix="rt-compat-")
    results = {}
    for name, cells in SESSIONS.items():
        if names and name not in names:
            continue
        outcome = {}
        for mode in ("plain", "sandbox"):
            d = make_data(os.path.join(base, name, mode))
            g = {"__name__": "__main__", "DATA": d, "Path": pathlib.Path,
                 "os": _os}
            loop = asyncio.new_event_loop()
            py = RunPython(g=g, ok_dests=[d], **kw) if mode == "sandbox" else None
            for i, cell in enumerate(cells):
                key = f"{name}:{i}"
                try:
                    if py is None:
                        got = loop.run_until_complete(plain_run(cell.code, g))
                    else:
                        got = loop.run_until_complete(py(cell.code))
                    err = None
                except BaseException as e:  # noqa: BLE001 - recorded
                    got, err = None, f"{type(e).__name__}: {e}"[:400]
                outcome.setdefault(key, {})[mode] = (got, err)
            loop.close()
        for i, cell in enumerate(cells):
            key = f"{name}:{i}"
            (pg, pe), (sg, se) = outcome[key]["plain"], outcome[key]["sandbox"]
            results[key] = {
                "plain_ok": pe is None and _same(pg, cell.expected),
                "ok": se is None and _same(sg, cell.expected) and _same(sg, pg),
                "got": repr(sg)[:200], "error": se, "plain_error": pe,
                "known_gap": cell.known_gap}
    return results


if __name__ == "__main__":
    # python compat.py OUT.json [published]: run with whatever safepyrun imports.
    import sys
    from safepyrun import RunPython
    kw = {"ban_defs": False} if len(sys.argv) > 2 and sys.argv[2] == "published" else {}
    res = run_sessions(RunPython, **kw)
    with open(sys.argv[1], "w") as f:
        json.dump(res, f, indent=1, default=repr)

"""Concurrency and memory: 1,000 interleaved runs with different policies
leak nothing into each other; 100,000 trivial runs do not grow memory."""
import asyncio
import gc
import os
import random

import pytest

from safepyrun import RunPython

N_RUNS = 1000
N_DIRS = 20

CELL = """
import asyncio
await asyncio.sleep(0)
open(MINE + '/f%(i)d', 'w').write('x')
await asyncio.sleep(DELAY)
try:
    open(FORBIDDEN + '/f%(i)d', 'w').write('x')
    wrote_forbidden = True
except PermissionError as e:
    wrote_forbidden = False
    assert 'safepyrun refused' in str(e), e
await asyncio.sleep(0)
try:
    open(OTHER + '/f%(i)d', 'w').write('x')
    wrote_other = True
except PermissionError:
    wrote_other = False
(wrote_forbidden, wrote_other)
"""


def test_interleaved_runs_keep_their_own_policy(tmp_path):
    dirs = [tmp_path / f"d{j}" for j in range(N_DIRS)]
    forbidden = tmp_path / "forbidden"
    host_dir = tmp_path / "host"
    for d in dirs + [forbidden, host_dir]:
        d.mkdir()
    rnd = random.Random(7)
    plans = []
    for i in range(N_RUNS):
        kind = i % 3          # 0: own dir, 1: own + next dir, 2: unchecked
        mine = dirs[i % N_DIRS]
        other = dirs[(i + 1) % N_DIRS]
        ok = {0: [mine], 1: [mine, other], 2: None}[kind]
        g = {"MINE": str(mine), "OTHER": str(other),
             "FORBIDDEN": str(forbidden), "DELAY": rnd.choice([0, 0, 0.001])}
        plans.append((i, kind, RunPython(g, ok_dests=ok)))

    host_writes = []

    async def host_task():
        # Host code interleaved with suspended runs is not gated.
        for k in range(50):
            (host_dir / f"h{k}").write_text("host")
            host_writes.append(k)
            await asyncio.sleep(0)

    async def main():
        runs = [py(CELL % {"i": i}) for i, _, py in plans]
        return await asyncio.gather(host_task(), *runs)

    results = asyncio.run(main())[1:]
    for (i, kind, _), got in zip(plans, results):
        want_forbidden = kind == 2
        want_other = kind in (1, 2)
        assert got == (want_forbidden, want_other), (i, kind, got)
    # The world agrees with the policies, file by file.
    for j, d in enumerate(dirs):
        own = {f"f{i}" for i in range(N_RUNS) if i % N_DIRS == j}
        via_other = {f"f{i}" for i in range(N_RUNS)
                     if (i + 1) % N_DIRS == j and i % 3 in (1, 2)}
        assert {p.name for p in d.iterdir()} == own | via_other
    assert {p.name for p in forbidden.iterdir()} == \
        {f"f{i}" for i in range(N_RUNS) if i % 3 == 2}
    assert len(host_writes) == 50 and len(list(host_dir.iterdir())) == 50


def test_interleaved_refusals_do_not_stick(tmp_path):
    """A refused run suspended at an await does not refuse its neighbour."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pa = RunPython({"T": str(b / "from-a")}, ok_dests=[str(a)])
    pb = RunPython({"T": str(b / "from-b")}, ok_dests=[str(b)])

    async def main():
        ra = pa("import asyncio\nawait asyncio.sleep(0.01)\nopen(T, 'w').close()")
        rb = pb("import asyncio\nawait asyncio.sleep(0.02)\nopen(T, 'w').close()\n'b'")
        return await asyncio.gather(ra, rb, return_exceptions=True)

    ra, rb = asyncio.run(main())
    assert isinstance(ra, PermissionError) and "safepyrun refused" in str(ra)
    assert rb == "b"
    assert sorted(p.name for p in b.iterdir()) == ["from-b"]


def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.slow
def test_100k_trivial_runs_do_not_leak():
    py = RunPython({}, ok_dests=[])

    async def many(n):
        for i in range(n):
            assert await py("1 + 1") == 2

    asyncio.run(many(5000))  # warm caches, linecache slots, free lists
    gc.collect()
    before = rss_kb()
    asyncio.run(many(100_000))
    gc.collect()
    grown = rss_kb() - before
    assert grown < 5 * 1024, f"resident memory grew by {grown} KiB"

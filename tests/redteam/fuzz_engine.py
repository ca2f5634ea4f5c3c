"""atheris fuzz target for the engine's path checker and cell runner.

    python fuzz_engine.py [libFuzzer flags, e.g. -runs=20000 -max_total_time=5]

Each input picks a mode from its first byte:
  0  check_write(path, ok_dests, ...) on arbitrary str/bytes/int input,
     compared with the reference model (test_properties.ref_check) whenever
     the input is a plain path in the fixed tree;
  1  normalise_dests / resolve / chk_dest on arbitrary input;
  2  check_source (the syntax-tree rules) on arbitrary source;
  3  a cell run in the sandbox (ok_dests=[tree/ok]) whose refusals must be
     the sandbox's PermissionError.
Any other exception type than the documented ones, a model disagreement,
or a crash is a finding (libFuzzer stops and writes the input).
"""
import asyncio
import os
import sys
import tempfile

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

with atheris.instrument_imports():
    from safepyrun import RunPython, _engine

from test_properties import build, ref_check  # noqa: E402

ROOT = tempfile.mkdtemp(prefix="rt-fuzz-")
build(ROOT, [("", "l1", "a", False), ("a", "l2", "../c", False),
             ("c", "l3", "/", False), ("", "dangling", "missing", False)])
os.makedirs(os.path.join(ROOT, "ok"), exist_ok=True)
os.chdir(ROOT)
LOOP = asyncio.new_event_loop()
RUNNER = RunPython({"__name__": "__fuzz__"}, ok_dests=[os.path.join(ROOT, "ok")])
PIECES = ["a", "b", "c", "l1", "l2", "l3", "dangling", "ok", ".", "..", "x",
          "", "~", ROOT]
UNSAFE = ("while", "**", "<<", "range", "*", "sleep", "input", "exit",
          "quit", "breakpoint", "help", "open", "import", "__", "os", "sys")


def path_from(fdp):
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        n = fdp.ConsumeIntInRange(0, 6)
        parts = [PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)]
                 for _ in range(n)]
        return "/".join(parts), True
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(64), False
    if kind == 2:
        return fdp.ConsumeBytes(64), False
    return fdp.ConsumeIntInRange(-3, 1 << 20), False


def check_paths(fdp):
    path, plain = path_from(fdp)
    dests = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        d, _ = path_from(fdp)
        dests.append(d)
    follow, self_ok = fdp.ConsumeBool(), fdp.ConsumeBool()
    try:
        got = _engine.check_write(path, dests, follow=follow, self_ok=self_ok)
    except (TypeError, ValueError, OSError):
        return
    assert isinstance(got, bool)
    if plain and path and all(isinstance(d, str) and d for d in dests):
        try:
            want = ref_check(path, dests, follow=follow, self_ok=self_ok)
        except OSError:
            return
        assert got is want, (path, dests, follow, self_ok, got, want)


def check_misc(fdp):
    path, _ = path_from(fdp)
    which = fdp.ConsumeIntInRange(0, 2)
    try:
        if which == 0:
            r = _engine.normalise_dests([path])
            assert isinstance(r, tuple) and all(type(x) is str for x in r)
        elif which == 1:
            r = _engine.resolve(path, follow=fdp.ConsumeBool())
            # a descriptor may name a pipe or socket ("pipe:[42]")
            assert type(r) is str and (r.startswith("/") or isinstance(path, int))
        else:
            _engine.chk_dest(path, [os.path.join(ROOT, "ok")])
    except (TypeError, ValueError, OSError):
        pass  # PermissionError is an OSError: chk_dest refusing


def check_source(fdp):
    src = fdp.ConsumeUnicodeNoSurrogates(200)
    try:
        _engine.check_source(src)
    except PermissionError as e:
        assert "not allowed in the sandbox" in str(e), e
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        pass


def check_cell(fdp):
    src = fdp.ConsumeUnicodeNoSurrogates(120)
    if any(u in src for u in UNSAFE):
        return
    try:
        LOOP.run_until_complete(RUNNER(src))
    except PermissionError as e:
        assert ("safepyrun refused" in str(e)
                or "not allowed in the sandbox" in str(e)), e
    except Exception:
        pass  # the cell's own error (NameError, SyntaxError, ...)
    finally:
        RUNNER.g.clear()
        RUNNER.g["__name__"] = "__fuzz__"


MODES = [check_paths, check_misc, check_source, check_cell]


def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    MODES[fdp.ConsumeIntInRange(0, len(MODES) - 1)](fdp)


if __name__ == "__main__":
    # Coverage feedback comes from Python code only (the engine is C built
    # without -fsanitize=fuzzer): this file, the model and the shell.
    for fn in (TestOneInput, path_from, check_paths, check_misc, check_source,
               check_cell, ref_check):
        atheris.instrument_func(fn)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()

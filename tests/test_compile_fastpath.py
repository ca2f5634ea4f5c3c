"""The fast compile path (src/split.c + src/compile.c) against the syntax tree.

A cell compiles by the fast path when check.c's text filter says no rule can
apply and split.c's text scan finds the last top-level statement; otherwise
(and whenever the fast compile fails) by the syntax tree, the reference.
These tests hold the fast path to the tree:

- whenever the fast path gives code, the tree path compiles the same source
  too, says the same about the last expression, and gives the same code
  object instruction for instruction, with the same positions except for the
  instructions the result assignment adds (the store of the value and the
  implicit `return None` after it), which sit on the line above the
  expression, where the inserted `__safepyrun_result__ = \\` line is;
- whenever the tree path refuses a source, the fast path does not answer;
- through RunPython, values, errors and traceback lines are the same.
"""
import dis
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from safepyrun import RunPython
from safepyrun._engine import _compile_cell, _split_scan

from conftest import run

pytestmark = [pytest.mark.filterwarnings("ignore::SyntaxWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RESULT = "__safepyrun_result__"
FAST, SLOW = 1, 2
SLOW_KIND, NONE_KIND, EXPR_KIND = 0, 1, 2
PREPEND, REPLACE, APPEND = 1, 2, 3
# Instructions the result assignment itself adds; only their positions may
# differ (they carry the inserted line's).
ADDED = {"STORE_NAME", "RETURN_CONST", "RETURN_VALUE", "LOAD_CONST", "RESUME",
         "RETURN_GENERATOR", "POP_TOP", "NOP"}


def shape(code, added_lines=()):
    """A code object as comparable data; positions on `added_lines` of the
    instructions in ADDED are masked."""
    positions = list(code.co_positions())
    ins = []
    for i in dis.get_instructions(code):
        pos = positions[i.offset // 2]
        if i.opname in ADDED and pos[0] in added_lines:
            pos = "added"
        arg = "<code>" if hasattr(i.argval, "co_code") else i.argrepr
        ins.append((i.opname, arg, pos))
    consts = tuple(shape(c, ()) if hasattr(c, "co_code") else c
                   for c in code.co_consts)
    return (code.co_code, consts, code.co_names, code.co_varnames,
            code.co_freevars, code.co_cellvars, code.co_flags,
            code.co_stacksize, code.co_qualname, ins)


def added_lines(source):
    kind, insert, line, *_ = _split_scan(source)
    if kind != EXPR_KIND:
        return ()
    return (0, None) if insert == PREPEND else (line - 1,)


def assert_same(source):
    """The property: a fast answer equals the tree's."""
    try:
        slow = _compile_cell(source, path=SLOW)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        slow = None
    fast = _compile_cell(source, path=FAST)
    if fast[0] is None:
        return False  # the fast path stood aside: fine whatever the source
    assert slow is not None, f"fast path accepted what the tree refuses: {source!r}"
    assert fast[1] == slow[1], source
    lines = added_lines(source)
    fast_shape = shape(fast[0], lines)
    slow_code = slow[0]
    # On the tree path the added instructions carry the expression's lines:
    # mask those in the tail after the result store (and the start of a
    # single-expression cell) the same way.
    ref = shape(slow_code, ())
    ref_ins = []
    tail = False
    for (op, arg, pos), (fop, _, fpos) in zip(ref[-1], fast_shape[-1]):
        if op == "STORE_NAME" and arg == RESULT:
            tail = True
        ref_ins.append((op, arg, "added" if fpos == "added" and op in ADDED else pos))
    assert fast_shape[:-1] == ref[:-1], source
    assert fast_shape[-1] == ref_ins, source
    # Everything masked is one of the assignment's own instructions.
    for op, arg, pos in fast_shape[-1]:
        if pos == "added":
            assert op in ADDED
    return True


# --- examples: what takes the fast path, and that it equals the tree --------

FAST_CELLS = [
    "1+1",
    "x = 1\nx",
    "x = 1\n\nx",
    "x = 1\n# note\nx\n",
    "for i in range(3):\n    pass\n\ni",
    "for i in range(3):\n    pass\n# done\ni",
    "import json\njson.dumps({'a': 1})",
    "x = (1,\n     2)\nx",
    "x = 1\n(x +\n 2)",
    "x = 1\nawait f(x)",
    "await f()",
    "def f():\n    return 1\n\nf()",
    "x = [i for i in range(3)]\nx",
    "s = 'a # not a comment'\ns",
    's = "it\'s"\ns',
    "t = '''\nx = 1\n'''\nt",
    "u = f'{1!r:>{3}}'\nu",
    'v = f"{\'k\':<5}"\nv',
    "w = rb'\\d'\nw",
    "x = 1\nx == 1",
    "x = 1\nx <= 2",
    "x = 1\nnot x",
    "x = 1\nx if x else 2",
    "x = 1\n...",
    "d = {'a': 1}\nd['a']",
    "import json\n",
    "x = 1",
    "x += 1",
    "x: int = 2",
    "for i in range(3):\n    i",
    "",
    "# only a comment\n",
    "if True:\n    1\nelse:\n    2",
    "[i for i in range(3)]",
    "sorted([3, 1], key=lambda k: -k)",
    "(lambda: (lambda: [j for j in 'ab']))()()",
    "(lambda:\n  1)()",
]


@pytest.mark.parametrize("source", FAST_CELLS)
def test_fast_path_taken_and_equal(source):
    if "await" in source:
        source = "async def f(*a):\n    return 1\n\n" + source
    assert assert_same(source), f"expected the fast path for {source!r}"


SLOW_CELLS = [
    "x = 1; x",                       # ';' in the last statement
    "lambda: 0",                      # lambda at the top level
    "match = 1\nmatch",               # soft keyword first
    "type(1)",                        # soft keyword first
    "x = 'é'\nx",                     # not ASCII
    "x = 1\r\nx",                     # '\r'
    "# coding: latin-1\nx = 1\nx",    # an encoding declaration
    "for i in range(3):\n    pass\ni",  # an indented line just above
    "x = 1  # c\nx",                  # a comment just above
    "f'{x!r}' if 0 else f\"{'a'}\"\nf'{f\"{1}\"}'",  # nested f-strings
    "f'{\"\\n\"}'",                   # backslash in a field
    "x = 1\n(x := 2)\nx := 3",       # walrus at the top level
]


@pytest.mark.parametrize("source", SLOW_CELLS)
def test_fast_path_stands_aside(source):
    code, _, used = _compile_cell(source, path=FAST)
    assert code is None and used == 0, source


def test_checked_source_takes_the_tree():
    # A banned name anywhere in the text: the rules walk the tree.
    with pytest.raises(PermissionError, match="import of 'socket'"):
        _compile_cell("import socket", banned=("socket",))
    assert _compile_cell("x = 'socket'\nx", banned=("socket",))[2] == SLOW
    assert _compile_cell("x = 1\nx", banned=("socket",))[2] == FAST
    assert _compile_cell("x = 'exec'\nx")[2] == SLOW
    with pytest.raises(PermissionError, match="calling exec"):
        _compile_cell("exec('1')")
    assert _compile_cell("exec('1')", checks=False)[2] == FAST
    with pytest.raises(PermissionError, match="def"):
        _compile_cell("def f(): pass", ban_defs=True)
    assert _compile_cell("x = 'class'\nx", ban_defs=True)[2] == SLOW


def test_syntax_errors_come_from_the_tree():
    for source in ["x = \n1", "1 +", "x = 1\n  y", "x = 1\n)", "f(\n", "x = 1\n\\"]:
        with pytest.raises(SyntaxError) as slow:
            _compile_cell(source, path=SLOW)
        with pytest.raises(SyntaxError) as either:
            _compile_cell(source)
        assert (type(either.value), either.value.msg, either.value.lineno,
                either.value.offset, either.value.text) == (
            type(slow.value), slow.value.msg, slow.value.lineno,
            slow.value.offset, slow.value.text)
        assert _compile_cell(source, path=FAST)[0] is None


def test_continuation_into_blank_line_is_not_joined():
    # `x = \` then a blank line is an error; replacing the blank line with
    # the result line must not make it valid.
    source = "x = \\\n\n1"
    with pytest.raises(SyntaxError):
        _compile_cell(source, path=SLOW)
    assert _compile_cell(source, path=FAST)[0] is None


# --- generated sources --------------------------------------------------------

STATEMENTS = [
    "x = 1", "y = x + 1", "import json", "x += 2", "x: int = 3", "a = b = 4",
    "for i in range(2):\n    z = i", "if x:\n    pass\nelse:\n    y = 2",
    "def f(a):\n    return a\n", "class C:\n    k = 1", "s = 'a#b'",
    's = "it\'s"', "t = '''\nx = 1\n'''", 'u = f"{x!r:>{3}}"',
    "v = f\"{'k':<5}\"", "w = (1,\n     2)", "# comment", "", "    # deep comment",
    "q = x if x else y", "del a", "x;y", "print(x)", "@dec\ndef g(): pass",
    "with open('p') as f:\n    pass", "try:\n    pass\nexcept E:\n    pass",
    "r = r'\\''", "n = 1_000 + 0x1F + 1.5e-3j", "m = x[1:2]", "k = {'a': 1, **d}",
    "x = \\\n  1", "(x) = 5", "x.y = 1", "x[0] = 1", "global x", "assert x, 'm'",
    "raise E", "return x", "x := 1", "lambda: 0", "x = lambda: 0", "e = ...",
    "p = f'{{}}'", "p = f'{x}{{'", "g = (yield)", "o = not x", "await f()",
    "if x: y = 1", "x = 1 # trailing", "x == y", "-x", "(a, b) = 1, 2",
    "*a, b = c", "f(x=1)", "f(**{'a': 1})", "x = [\n1,\n\n2]",
]
EXPRESSIONS = [
    "x", "x + 1", "f(x)", "[i for i in range(3)]", "(x,\n 1)", "'s'", "f'{x}'",
    "await f()", "x == 1", "x <= 2", "not x", "-x", "x[0:1]", "{'a': 1}",
    "lambda y: y", "x if x else y", "...", "r'\\d'", "b'x'", "f'{x:>{w}}'",
    "x.y", "(yield)", "print(x)", "(x\n)", "x \\\n + 1", "x # note", "*a, b",
    "{'a': f'{x!r}'}", "'''a\nb'''", "f'{{x}}'", "x @ y", "x ** -y",
]

lines = st.lists(st.sampled_from(STATEMENTS), max_size=5)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines, st.sampled_from(EXPRESSIONS + STATEMENTS),
       st.sampled_from(["", "\n", "\n\n", "\n# end\n", "  "]))
def test_generated_cells(body, last, end):
    source = "\n".join(body + [last]) + end
    assert_same(source)


# Characters the scan has to get right; any text of them.
ALPHABET = "xf(r)[b]{}'\"\\#\n :=;,.1+-*<>!@\tu"


@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_any_text(source):
    assert_same(source)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines, st.sampled_from(EXPRESSIONS),
       st.text(alphabet=ALPHABET, max_size=12))
def test_statements_around_noise(body, last, noise):
    assert_same("\n".join(body + [noise, last]))
    assert_same("\n".join(body + [last + noise]))


# --- through RunPython: values, errors, tracebacks -------------------------------

@pytest.mark.parametrize("source, value", [
    ("1+1", 2),
    ("x = 20\nx + 1", 21),
    ("x = 2\n\n(x *\n 3)", 6),
    ("for i in range(3):\n    pass\n# c\ni", 2),
    ("x = 1", None),
    ("import json\njson.loads('[1]')", [1]),
    ("[i * 2 for i in range(3)]", [0, 2, 4]),
    ("sorted([3, 1, 2], key=lambda k: -k)", [3, 2, 1]),
])
def test_values(source, value):
    py = RunPython(g={})
    assert run(py, source) == value


@pytest.mark.parametrize("source, line", [
    ("1/0", 1),
    ("x = 0\n1/x", 2),
    ("x = 0\n\n(1 +\n 1/x)", 4),
    ("x = 0\n# c\n[1][x + 5]", 3),
    ("(lambda:\n  1/0)()", 2),
    ("[1/i for i in\n range(2)]", 1),
])
def test_traceback_lines(source, line):
    import traceback
    assert _compile_cell(source, path=FAST)[0] is not None
    py = RunPython(g={})
    with pytest.raises((ZeroDivisionError, IndexError)) as info:
        run(py, source)
    frames = [f for f in traceback.extract_tb(info.value.__traceback__)
              if f.filename.startswith("<pyrun_")]
    assert frames[-1].lineno == line
    assert frames[-1].line == source.splitlines()[line - 1].strip()

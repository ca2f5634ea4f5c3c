"""Property-based tests: the C path check agrees with a Python reference model
of the rule, and sandboxed cells compute exactly what plain exec computes.

The reference model is written from the rule in DESIGN.md/README, with
os.path.realpath as the resolver (not the engine's walk):
- the entry a write affects is the path's parent resolved physically
  ('..' after symlinks, symlinked parents followed) joined with its last
  name; a path ending in '.', '..' or '/' names its fully resolved self;
- if the entry is a symlink (and the operation follows links), its final
  target must be allowed as well;
- each ok_dest is '~'-expanded and resolved against the cwd ('.' is the cwd);
- entry E is allowed by dest D when E lies strictly under D, or E == D when
  self_ok (chk_dest) is set.
"""
import asyncio
import errno
import os
import string
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from safepyrun import RunPython, _engine

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compat import plain_run  # noqa: E402

FAST = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


# ---- the reference model ---------------------------------------------------------

def ref_entry(path):
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    head, _, tail = p.rpartition("/")
    if tail in ("", ".", ".."):
        return os.path.realpath(p)
    return os.path.join(os.path.realpath(head or "/"), tail)


def ref_inside(e, d, self_ok):
    if e == d:
        return self_ok
    return e.startswith(d.rstrip("/") + "/")


def ref_check(path, ok_dests, follow=True, self_ok=False):
    if ok_dests is None:
        return True
    entry = ref_entry(path)
    target = None
    if follow and os.path.islink(entry):
        target = os.path.realpath(path)
    dests = [os.path.realpath(os.path.expanduser(d)) for d in ok_dests]
    entry_ok = any(ref_inside(entry, d, self_ok) for d in dests)
    target_ok = target is None or any(ref_inside(target, d, self_ok)
                                      for d in dests)
    return entry_ok and target_ok


# ---- a small random tree ------------------------------------------------------------

NAMES = ["a", "b", "c", "x", "l1", "l2", "l3"]


@st.composite
def worlds(draw):
    """A layout: dirs a, a/b, c; files; up to 3 symlinks to random places
    (absolute or relative, possibly dangling); returns the spec."""
    links = draw(st.lists(st.tuples(
        st.sampled_from(["", "a", "a/b", "c"]),          # where the link lives
        st.sampled_from(["l1", "l2", "l3"]),              # its name
        st.sampled_from(["a", "a/b", "c", "..", "../..", "missing",
                         "/", "b", "a/../c", "."]),       # its target
        st.booleans()),                                   # absolute target?
        max_size=3, unique_by=lambda t: (t[0], t[1])))
    return links


def build(root, links):
    for d in ("a/b", "c"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in ("a/f", "c/g"):
        open(os.path.join(root, f), "w").close()
    for where, name, target, absolute in links:
        tgt = os.path.join(root, target) if absolute and target != "/" else target
        try:
            os.symlink(tgt, os.path.join(root, where, name))
        except FileExistsError:
            pass


components = st.lists(st.sampled_from(NAMES + [".", ".."]), min_size=0,
                      max_size=5)


@st.composite
def rel_paths(draw):
    parts = draw(components)
    trail = draw(st.sampled_from(["", "", "", "/", "/."]))
    return "/".join(parts) + trail if parts else draw(
        st.sampled_from([".", "..", "x", "./x"]))


@st.composite
def dest_specs(draw):
    return draw(st.lists(st.one_of(
        rel_paths(),
        st.sampled_from([".", "~", "~/a", "~/c/", "a/../c", "/"]),
        rel_paths().map(lambda p: "@ABS@/" + p)), min_size=0, max_size=3))


@pytest.fixture
def tree(monkeypatch):
    old = os.getcwd()
    base = tempfile.mkdtemp(prefix="rt-prop-")
    monkeypatch.setenv("HOME", base)
    yield base
    os.chdir(old)


def _one(root, links, path, dests, self_ok, follow, absolute):
    import shutil
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if os.path.islink(p) or not os.path.isdir(p):
            os.remove(p)
        else:
            shutil.rmtree(p)
    build(root, links)
    os.chdir(root)
    if absolute:
        path = os.path.join(root, path)
    dests = [d.replace("@ABS@", root) for d in dests]
    try:
        got = _engine.check_write(path, dests, follow=follow, self_ok=self_ok)
    except OSError as e:
        # Only a symlink loop may stop the walk here; the model agrees that
        # the path cannot be resolved strictly.
        assert e.errno == errno.ELOOP, e
        with pytest.raises(OSError):
            os.path.realpath(path, strict=True)
        return
    try:
        want = ref_check(path, dests, follow=follow, self_ok=self_ok)
    except OSError:
        assume(False)  # the model cannot resolve it
    assert got is want, (path, dests, links, self_ok, follow)
    if self_ok and follow:
        # chk_dest is the same check with self_ok: raises exactly when refused
        if want:
            assert _engine.chk_dest(path, dests) is None
        else:
            with pytest.raises(PermissionError):
                _engine.chk_dest(path, dests)


@FAST
@given(links=worlds(), path=rel_paths(), dests=dest_specs(),
       self_ok=st.booleans(), follow=st.booleans(), absolute=st.booleans(),
       same=st.sampled_from(["", "", "self", "parent"]))
def test_check_write_agrees_with_model(tree, links, path, dests, self_ok,
                                        follow, absolute, same):
    if same == "self":          # the destination itself
        dests = dests + [path]
    elif same == "parent":      # the path's own parent, as written
        dests = dests + [os.path.dirname(path) or "."]
    _one(tree, links, path, dests, self_ok, follow, absolute)


@pytest.mark.parametrize("path, dests, want", [
    ("a/../c/new", ["c"], True),           # '..' resolved
    ("l1/new", ["a"], True),               # symlinked parent (l1 -> a)
    ("l1/new", ["l1"], True),              # a dest that is a link resolves too
    ("a/new", ["l1"], True),
    ("c/new", ["l1"], False),
    ("a", ["a"], False),                   # a dest itself: not strictly inside
    ("new", ["."], True),                  # '.' is the cwd
    ("~/a/new", ["a"], False),             # '~' in a path is a name, not HOME
    ("a/new", ["~/a"], True),              # '~' in a dest is HOME
    ("a/../../escape", ["a", "."], False),
])
def test_check_write_examples(tree, path, dests, want):
    build(tree, [("", "l1", "a", False)])
    os.chdir(tree)
    assert _engine.check_write(path, dests) is want
    assert ref_check(path, dests) is want


def test_destination_itself_counts_for_chk_dest(tree):
    build(tree, [])
    os.chdir(tree)
    assert _engine.check_write("a", ["a"], self_ok=True) is True
    assert _engine.chk_dest("a", ["a"]) is None
    with pytest.raises(PermissionError):
        _engine.chk_dest("c", ["a"])


odd_paths = st.one_of(
    st.text(max_size=40), st.binary(max_size=40),
    st.integers(min_value=-5, max_value=2**40),
    st.text(alphabet="/.a~\x00", max_size=30),
    st.just("a" * 5000), st.just(b"/" + b"x" * 5000))


@FAST
@given(path=odd_paths, dests=st.lists(st.text(alphabet="/.a~", min_size=1,
                                              max_size=12), max_size=3))
def test_check_write_odd_inputs(tree, path, dests):
    """Arbitrary inputs: a bool, or the documented error types; a bool
    agrees with the model whenever the path is a plain str."""
    os.chdir(tree)
    try:
        got = _engine.check_write(path, dests)
    except (TypeError, ValueError, OSError) as e:
        if isinstance(path, str) and "\x00" not in path and len(path) < 4096 \
                and not isinstance(e, OSError):
            raise
        return
    assert isinstance(got, bool)
    if isinstance(path, str) and path:
        try:
            want = ref_check(path, dests)
        except (OSError, ValueError):
            return
        assert got is want, (path, dests)


# ---- cells: sandboxed == plain exec --------------------------------------------------

names = st.sampled_from(["x", "y", "z", "acc"])
atoms = st.one_of(st.integers(-50, 50).map(str), names,
                  st.text(string.ascii_letters, max_size=5).map(repr),
                  st.just("[1, 2, 3]"), st.just("(4, 5)"))


@st.composite
def exprs(draw, depth=2):
    if depth == 0:
        return draw(atoms)
    kind = draw(st.integers(0, 6))
    a, b = draw(exprs(depth=depth - 1)), draw(exprs(depth=depth - 1))
    return [f"({a} + {b})", f"({a} * 2)", f"[{a} for _ in range(2)]",
            f"len(str({a}))", f"({a} if {b} else {a})", f"{{'k': {a}}}",
            f"sorted([{a}, {a}], key=str)"][kind]


@st.composite
def cells(draw):
    lines = ["x, y, z, acc = 1, 'two', [3], 0"]
    for _ in range(draw(st.integers(1, 5))):
        form = draw(st.integers(0, 4))
        e = draw(exprs())
        n = draw(names)
        lines.append([f"{n} = {e}",
                      f"def f(v={e}):\n    return [v, {n}]\n{n} = f()",
                      f"for i in range(2):\n    acc = (acc, {e})",
                      f"{n} = [{e} for i in range(2) if i]",
                      f"class K:\n    attr = {e}\n{n} = K.attr"][form])
    lines.append(draw(st.sampled_from(["x", "y", "z", "acc", "[x, y, z]"])))
    return "\n".join(lines)


def outcome(coro):
    try:
        return ("ok", repr(asyncio.run(coro)))
    except Exception as e:  # noqa: BLE001 - compared
        return ("error", type(e).__name__)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(code=cells())
def test_cells_compute_what_plain_exec_computes(code):
    got = outcome(RunPython({"__name__": "__main__"}, ok_dests=[])(code))
    want = outcome(plain_run(code, {"__name__": "__main__"}))
    assert got == want, code


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(code=st.text(alphabet=string.printable, max_size=60))
def test_arbitrary_text_cells(code):
    """Random text: the sandbox returns what exec returns, or raises the
    same exception type (SyntaxError mostly); a sandbox refusal is the only
    allowed difference."""
    assume("import" not in code and "open" not in code)
    got = outcome(RunPython({"__name__": "__main__"}, ok_dests=[])(code))
    want = outcome(plain_run(code, {"__name__": "__main__"}))
    if got != want:
        assert got == ("error", "PermissionError"), (code, got, want)

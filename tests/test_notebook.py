"""Ordinary notebook code behaves as in plain Python (issue 8): each test
runs the same cell under the sandbox and under plain exec and compares."""
import asyncio

import pytest

from safepyrun import RunPython

from conftest import host_ns, run


def plain(code, g=None):
    """The value of `code`'s last expression under plain exec."""
    import ast
    g = {} if g is None else g
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<plain>", "exec"), g)
    return eval(compile(ast.Expression(last.value), "<plain>", "eval"), g) \
        if last is not None else None


@pytest.mark.parametrize("code", [
    "from importlib.metadata import version\nversion('pytest')",
    "from importlib import metadata\nmetadata.version('pytest')",
    "import importlib.metadata as md\nmd.distribution('pytest').metadata['Name']",
    "from importlib.resources import files\nfiles('json').joinpath('__init__.py').is_file()",
])
def test_read_only_importlib_in_a_cell(code):
    assert run(RunPython(host_ns()), code) == plain(code)


@pytest.mark.parametrize("code", [
    "import sqlite3\ncon = sqlite3.connect(':memory:')\n"
    "con.execute('create table t(x)')\ncon.execute('insert into t values (1)')\n"
    "con.execute('select sum(x) from t').fetchone()[0]",
    "import sqlite3\ncon = sqlite3.connect('file::memory:', uri=True)\n"
    "con.execute('select 41 + 1').fetchone()[0]",
])
def test_sqlite_in_memory_under_the_default_policy(code):
    assert run(RunPython(host_ns()), code) == plain(code)


# ---- item 3: temporary files inside ok_dests ----------------------------------


@pytest.mark.parametrize("code", [
    "import tempfile\nwith tempfile.NamedTemporaryFile(dir=d, suffix='.csv') as f:\n"
    "    f.write(b'a,b')\n    f.flush()\n    n = len(open(f.name).read())\nn",
    "import tempfile\nwith tempfile.TemporaryFile(dir=d) as f:\n"
    "    f.write(b'abc')\n    f.seek(0)\n    r = f.read()\nr",
    "import tempfile\ns = tempfile.SpooledTemporaryFile(max_size=4, dir=d)\n"
    "s.write(b'x' * 100)\ns.seek(0)\nlen(s.read())",
    "import tempfile, os\nwith tempfile.TemporaryDirectory(dir=d) as t:\n"
    "    open(os.path.join(t, 'x.txt'), 'w').write('hi')\n"
    "    r = os.listdir(t)\nr",
])
def test_temporary_files_inside_ok_dests(code, tmp_path):
    g = host_ns(d=str(tmp_path))
    expected = plain(code, dict(g))
    assert run(RunPython(host_ns(d=str(tmp_path)), ok_dests=[str(tmp_path)]),
               code) == expected


def test_temporary_file_outside_ok_dests_still_refused(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    py = RunPython(host_ns(d=str(tmp_path)), ok_dests=[str(inside)])
    for code in ["import tempfile\ntempfile.NamedTemporaryFile(dir=d)",
                 "import tempfile\ntempfile.TemporaryFile(dir=d)"]:
        with pytest.raises(PermissionError):
            run(py, code)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_open_of_a_directory_for_writing_is_still_an_error(tmp_path):
    py = RunPython(host_ns(d=str(tmp_path)), ok_dests=[])
    with pytest.raises(IsADirectoryError):
        run(py, "open(d, 'w')")


# ---- item 4: a refused probe leaves the host's caches alone -----------------------


def test_gettempdir_in_a_cell_does_not_change_the_hosts(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.chdir(tmp_path)
    py = RunPython(host_ns(), ok_dests=["."])
    inside = run(py, "import tempfile\ntempfile.gettempdir()")
    assert tempfile.tempdir is None
    host = tempfile.gettempdir()
    assert host != str(tmp_path)
    assert inside in (str(tmp_path), host)


# ---- item 2: a registration names one function, not its code -----------------------


def logged(fn):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


@logged
def save_report(path):
    with open(path, "w") as f:
        f.write("r")


@logged
def label(name):
    return f"<{name}>"


def test_policy_applies_to_the_named_function_only(tmp_path):
    from safepyrun import allow, disallow

    def csv_only(obj, args, kwargs, data):
        if not str(args[0]).endswith(".csv"):
            raise PermissionError("only .csv")
    assert save_report.__code__ is label.__code__
    allow(save_report, allow_policy=csv_only)
    try:
        g = host_ns(save_report=save_report, label=label, d=str(tmp_path))
        py = RunPython(g, ok_dests=[str(tmp_path)])
        assert run(py, "label('region')") == "<region>"
        with pytest.raises(PermissionError, match="only .csv"):
            run(py, "save_report(d + '/x.sh')")
        run(py, "save_report(d + '/x.csv')")
        assert (tmp_path / "x.csv").exists() and not (tmp_path / "x.sh").exists()
        assert run(py, "label('x')") == "<x>"
    finally:
        disallow(save_report, None, csv_only)


def test_allow_pandas_keeps_groupby_working(tmp_path):
    pd = pytest.importorskip("pandas")
    from safepyrun import _engine, allow_pandas
    before = _engine.allow_entries()
    allow_pandas()
    try:
        df = pd.DataFrame({"region": ["a", "b", "a"], "v": [1, 2, 3]})
        cells = ["df.groupby('region').v.sum().to_dict()",
                 "df.v.to_string()",
                 "df.groupby('region').v.sum().to_dict()",
                 "df.groupby('region').agg({'v': 'mean'}).v.to_dict()",
                 "df.sum().to_dict()"]
        py = RunPython(host_ns(df=df, pd=pd), ok_dests=[str(tmp_path)])
        for cell in cells:
            assert run(py, cell) == plain(cell, {"df": df, "pd": pd})
    finally:
        for entry in _engine.allow_entries():
            if entry not in before:
                _engine.allow_remove(*entry)


# ---- item 1: the cells of a runner share one live namespace ------------------------


def session(cells, g_updates=None):
    """Run `cells` in the sandbox and under plain exec sharing one dict (as
    IPython does); return both lists of values.  `g_updates` maps a cell
    index to host changes applied to g before that cell."""
    g_updates = g_updates or {}
    g = host_ns()
    py = RunPython(g, ok_dests=[])
    plain_g = host_ns()
    ours, theirs = [], []
    for i, cell in enumerate(cells):
        for k, v in g_updates.get(i, {}).items():
            g[k] = v
            plain_g[k] = v
        ours.append(run(py, cell))
        theirs.append(plain(cell, plain_g))
    return ours, theirs, g


@pytest.mark.parametrize("cells, updates", [
    # a helper redefined later is seen by functions defined earlier
    (["def helper(x):\n    return x + 1\ndef f(x):\n    return helper(x) * 2\nf(1)",
      "def helper(x):\n    return x + 10\nf(1)"], {}),
    # a threshold rebound later is seen by an earlier function
    (["THRESHOLD = 0.5\ndef classify(v):\n    return v > THRESHOLD\nclassify(0.6)",
      "THRESHOLD = 0.8\nclassify(0.6)"], {}),
    # global counter inside a function defined in one cell
    (["counter = 0\ndef bump():\n    global counter\n    counter += 1\n    return counter",
      "bump()\nbump()", "counter"], {}),
    # private names live in the session, not in g
    (["_cache = {}\ndef remember(k, v):\n    _cache[k] = v\n    return len(_cache)",
      "remember('a', 1)\nremember('b', 2)", "len(_cache)"], {}),
    # the host's changes to g are visible to the next cell
    (["def scaled(v):\n    return v * factor\nfactor = 2\nscaled(3)",
      "scaled(3)"], {1: {"factor": 10}}),
    # comprehensions and closures see earlier names
    (["base = [1, 2, 3]", "offset = 5\n[b + offset for b in base]",
      "adder = lambda v: v + offset\noffset = 7\nadder(1)"], {}),
])
def test_multi_cell_session_matches_plain_exec(cells, updates):
    ours, theirs, g = session(cells, updates)
    assert ours == theirs


def test_session_exports_follow_the_rules():
    ours, theirs, g = session(["x = 1\n_y = 2\nz_ = 3\ndef f():\n    return x",
                               "x = 5\nf()"])
    assert ours == theirs == [None, 5]
    assert g["x"] == 5 and "_y" not in g and g["z_"] == 3
    assert g["f"]() == 5


def test_host_deleting_a_name_is_seen():
    g = host_ns()
    py = RunPython(g)
    run(py, "a = 1")
    del g["a"]
    with pytest.raises(NameError):
        run(py, "a")


def test_session_does_not_shadow_host_callables():
    def host_tool():
        return "host"
    g = host_ns(host_tool=host_tool)
    py = RunPython(g)
    run(py, "def host_tool():\n    return 'cell'")
    assert g["host_tool"] is host_tool


# ---- item 9: name look-ups through the event loop --------------------------------


def test_loop_getaddrinfo_in_a_cell():
    code = ("import asyncio\n"
            "r = await asyncio.get_running_loop().getaddrinfo('localhost', 80)\n"
            "sorted({x[4][1] for x in r})")
    assert run(RunPython(host_ns()), code) == [80]


def test_executor_worker_threads_still_run_gated(marker):
    code = ("import asyncio, os\n"
            "loop = asyncio.get_running_loop()\n"
            f"await loop.run_in_executor(None, os.system, 'touch {marker}')")
    with pytest.raises(PermissionError, match="os.system"):
        run(RunPython(host_ns()), code)
    assert not marker.exists()


def test_starting_an_executor_worker_by_hand_is_refused():
    code = ("import concurrent.futures as cf\n"
            "ex = cf.ThreadPoolExecutor()\nex._adjust_thread_count()")
    with pytest.raises(PermissionError, match="start a thread"):
        run(RunPython(host_ns()), code)


# ---- item 9: the published package's spellings ------------------------------------


def test_allow_dict_with_a_function_key_and_a_policy(tmp_path):
    from safepyrun import _engine, allow, disallow

    def fetch(url):
        return url.upper()

    def only_example(obj, args, kwargs, data):
        if "example.com" not in args[0]:
            raise PermissionError("only example.com")
    allow({fetch: only_example})
    try:
        assert (fetch, None, only_example) in _engine.allow_entries()
        py = RunPython(host_ns(fetch=fetch))
        assert run(py, "fetch('https://example.com/x')") == "HTTPS://EXAMPLE.COM/X"
        with pytest.raises(PermissionError, match="only example.com"):
            run(py, "fetch('https://elsewhere.org/')")
    finally:
        disallow(fetch, None, only_example)


def test_allow_imports_as_a_set():
    from safepyrun import _engine, allow_imports
    allow_imports.add("spr_published_form_pkg")
    allow_imports.update(["spr_published_form_pkg2"])
    allowed = _engine.allowed_imports()
    assert "spr_published_form_pkg" in allowed
    assert "spr_published_form_pkg2" in allowed


# ---- item 9: the published DenyInfo, and names never exported -------------------


def write_report(path, text, *, mode="w"):
    with open(path, mode) as f:
        f.write(text)


def test_deny_info_has_the_published_shape(tmp_path):
    """The published pre_deny example: the first call's arguments are
    info.args, the event's are info.raw.args; find() by name or qualname."""
    from safepyrun import DenyInfo, CallInfo, RawDenyInfo
    seen = []

    def pre_deny(info):
        seen.append(info)
        call = info.find("write_report")
        return call is not None and call.args[0].endswith(".md")

    target = tmp_path / "r.md"
    py = RunPython(host_ns(write_report=write_report), ok_dests=[],
                   pre_deny=pre_deny)
    run(py, f"write_report({str(target)!r}, '# hi')")
    assert target.read_text() == "# hi"
    info = seen[0]
    assert type(info) is DenyInfo and type(info.raw) is RawDenyInfo
    assert info.event == "open"
    assert info.raw.args[:2] == (str(target), "w")
    assert info.raw.msg == "open a file for writing"
    assert info.raw.frame is not None and info.raw.calls == []
    assert type(info.call) is CallInfo
    assert info.call.qualname == "write_report"
    assert info.call.name == f"{__name__}.write_report"
    assert info.find(f"{__name__}.write_report") is info.call
    assert info.args == [str(target), "# hi"] and info.kwargs == {"mode": "w"}
    assert info.call.frame is info.raw.frame and info.call.fn is None
    assert info.find("nothing") is None
    # a .txt target is refused by the same hook, and nothing is written
    other = tmp_path / "r.txt"
    with pytest.raises(PermissionError):
        run(py, f"write_report({str(other)!r}, 'x')")
    assert not other.exists()


def test_deny_info_types_cannot_be_redefined_by_a_cell():
    from safepyrun import DenyInfo
    py = RunPython(host_ns(DenyInfo=DenyInfo))
    with pytest.raises(TypeError, match="immutable type"):
        run(py, "DenyInfo.find = lambda self, name: True")
    with pytest.raises(TypeError, match="immutable type"):
        run(py, "type(DenyInfo).__setattr__(DenyInfo, 'event', 1)")


def test_py_and_allow_are_never_exported():
    g = host_ns()
    py = RunPython(g)
    assert run(py, "allow = 'x'\npy = 3\nkept = (allow, py)\nkept") == ("x", 3)
    assert "allow" not in g and "py" not in g and g["kept"] == ("x", 3)
    # a later cell of the same runner still sees its own values
    assert run(py, "allow, py") == ("x", 3)

"""allow_matplotlib(), allow_pandas(), allow_imports and the
safepyrun_import_allow entry points.  Each runs in a fresh interpreter, so
the library is first imported inside a run, as an LLM cell would."""
import os

import pytest

from trust_helpers import check_output, run_python

pytest.importorskip("numpy")

MPL_CELL = r'''
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3,2), dpi=100)
ax.plot([1,2,1], label='Triangle')
ax.plot([1,1.5,2], label='Rising')
ax.tick_params(labelsize=10)
ax.set_xlabel('X', fontsize=10)
ax.set_ylabel('Y', fontsize=10)
ax.spines[['top','right']].set_visible(False)
ax.yaxis.set_major_formatter('{x:.0f}')
ax.legend(fontsize=12);
'''


def test_matplotlib_seed_example(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    stdout = check_output(f"""
        import asyncio, io, os
        from safepyrun import RunPython, allow_matplotlib
        allow_matplotlib()
        g = {{'os': os, 'io': io}}
        py = RunPython(g, ok_dests=[{str(out)!r}])
        def cell(code):
            try:
                return ('ok', asyncio.run(py(code)))
            except PermissionError as e:
                return ('refused', str(e))
        print(cell({MPL_CELL!r})[0])
        print(cell("fig.savefig(os.path.expanduser('~/plot.png'))"))
        print(cell("fig.savefig({str(out / 'plot.png')!r})")[0])
        print(cell("b = io.BytesIO(); fig.savefig(b, format='png'); len(b.getvalue()) > 100"))
        print(cell("plt.savefig('/etc/h3-plot.png')")[0])
        print(cell("plt.imsave('/etc/h3-im.png', [[0, 1], [1, 0]])")[0])
        print(cell("fig.canvas.print_figure('/etc/h3-canvas.png')")[0])
        print(cell("fig.savefig('s3://bucket/plot.png')")[0])
        """, tmp_path, env={"HOME": str(home),
                            "MPLCONFIGDIR": str(tmp_path / "mplcfg")})
    lines = stdout.splitlines()
    assert lines[0] == "ok", stdout
    assert lines[1].startswith("('refused'") and "plot.png" in lines[1]
    assert lines[2] == "ok"
    assert lines[3] == "('ok', True)"
    assert lines[4:8] == ["refused"] * 4, stdout
    assert (out / "plot.png").stat().st_size > 0
    assert not (home / "plot.png").exists()
    for name in ("h3-plot.png", "h3-im.png", "h3-canvas.png"):
        assert not os.path.exists("/etc/" + name)


def test_matplotlib_first_import_needs_no_preset(tmp_path):
    """With a cold font cache, importing matplotlib in a run starts a timer
    thread and writes the cache: a library's first-import caches are its
    own (issue 8, item 6; src/libcache.c), so no allow_matplotlib() is
    needed, and the cache lands where matplotlib puts it."""
    pytest.importorskip("matplotlib")
    stdout = check_output("""
        import asyncio
        from safepyrun import RunPython
        try:
            asyncio.run(RunPython({}, ok_dests=[])("import matplotlib.pyplot"))
            print('imported')
        except Exception as e:  # the refusal, or what matplotlib makes of it
            print('refused')
        """, tmp_path, env={"MPLCONFIGDIR": str(tmp_path / "cold")})
    assert stdout.strip() == "imported"
    assert [p.name.startswith("fontlist") for p in (tmp_path / "cold").iterdir()] == [True]


def test_pandas_writes(tmp_path):
    pytest.importorskip("pandas")
    out = tmp_path / "out"
    out.mkdir()
    stdout = check_output(f"""
        import asyncio, io, os
        from safepyrun import RunPython, allow_pandas
        allow_pandas()
        out = {str(out)!r}
        py = RunPython({{'io': io, 'out': out}}, ok_dests=[out])
        def cell(code):
            try:
                return ('ok', asyncio.run(py(code)))
            except PermissionError as e:
                return ('refused', str(e))
        print(cell("import pandas as pd; df = pd.DataFrame({{'a': [1, 2]}}); s = df['a']; 1")[0])
        for code in ["df.to_csv(out + '/a.csv')",
                     "df.to_json(path_or_buf=out + '/a.json')",
                     "df.to_pickle(out + '/a.pkl')",
                     "df.to_html(out + '/a.html')",
                     "s.to_csv(out + '/s.csv')"]:
            print(cell(code)[0])
        for code in ["df.to_csv('/etc/h3-a.csv')",
                     "df.to_csv(path_or_buf='/etc/h3-a.csv')",
                     "s.to_pickle('/etc/h3-s.pkl')",
                     "df.to_json('/etc/h3-a.json')",
                     "df.to_csv('https://example.com/x.csv')",
                     # another route: pandas internals, checked by the hook
                     "from pandas.io.common import get_handle; get_handle('/etc/h3-b.csv', 'w')"]:
            r = cell(code)
            print(r[0], r[1].count('not allowed') if r[0] == 'refused' else '')
        print(cell("b = io.StringIO(); df.to_csv(b); b.getvalue()"))
        """, tmp_path)
    lines = stdout.splitlines()
    assert lines[:6] == ["ok"] * 6, stdout
    refusals = lines[6:12]
    assert all(r.startswith("refused") for r in refusals), stdout
    # each refusal says so once, not once per class sharing the method
    assert refusals[0] == "refused 1", stdout
    assert lines[12] == "('ok', ',a\\n0,1\\n1,2\\n')"
    assert sorted(os.listdir(out)) == ["a.csv", "a.html", "a.json", "a.pkl", "s.csv"]
    for name in ("h3-a.csv", "h3-s.pkl", "h3-a.json", "h3-b.csv"):
        assert not os.path.exists("/etc/" + name)


def test_allow_imports_covers_import_time_effects(tmp_path):
    pkg = tmp_path / "lib"
    pkg.mkdir()
    (pkg / "h3noisy.py").write_text(
        "import subprocess\nRC = subprocess.run(['true']).returncode\n"
        "def later():\n    return subprocess.run(['true']).returncode\n")
    stdout = check_output("""
        import asyncio, sys
        from safepyrun import RunPython, allow_imports, _engine
        py = RunPython({}, ok_dests=[])
        def cell(code):
            try:
                return asyncio.run(py(code))
            except PermissionError:
                return 'refused'
        print(cell('import h3noisy; h3noisy.RC'))
        sys.modules.pop('h3noisy', None)
        allow_imports('h3noisy')
        print(cell('import h3noisy; h3noisy.RC'))
        print(cell('h3noisy.later()'))
        print('h3noisy' in _engine.allowed_imports())
        """, tmp_path, env={"PYTHONPATH": str(pkg)})
    assert stdout.split() == ["refused", "0", "refused", "True"]


def _fake_dist(tmp_path, value):
    site = tmp_path / "site"
    dist = site / "h3fake-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: h3fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[safepyrun_import_allow]\nh3ep = {value}\n")
    (site / "h3epmod.py").write_text(
        "import subprocess\nRC = subprocess.run(['true']).returncode\n")
    return site


def test_entry_point_group_read_on_first_runner(tmp_path):
    site = _fake_dist(tmp_path, "h3epmod")
    stdout = check_output("""
        import asyncio
        import safepyrun
        from safepyrun import RunPython, _engine
        print('h3epmod' in _engine.allowed_imports())
        py = RunPython({}, ok_dests=[])
        print('h3epmod' in _engine.allowed_imports())
        print(asyncio.run(py('import h3epmod; h3epmod.RC')))
        """, tmp_path, env={"PYTHONPATH": str(site)})
    assert stdout.split() == ["False", "True", "0"]


def test_entry_point_failure_warns(tmp_path):
    site = _fake_dist(tmp_path, "")
    proc = run_python("""
        import asyncio, warnings
        warnings.simplefilter('always')
        from safepyrun import RunPython
        py = RunPython({}, ok_dests=[])
        print(asyncio.run(py('1 + 1')))
        """, tmp_path, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    assert "safepyrun_import_allow" in proc.stderr and "h3ep" in proc.stderr


def test_import_does_not_read_entry_points(tmp_path):
    stdout = check_output("""
        import sys
        import safepyrun
        print('importlib.metadata' in sys.modules, 'IPython' in sys.modules,
              'matplotlib' in sys.modules, 'pandas' in sys.modules)
        """, tmp_path)
    assert stdout.split() == ["False"] * 4

"""A library's first import inside a cell, on a machine where it never ran
(issue 8, item 6).

Each case runs in fresh processes with fresh HOME, XDG and MPLCONFIGDIR
directories, so no cache of any library exists; the same cells run under
plain exec in another fresh process with its own fresh directories, and
the values must agree.  The host never imports the library first.

The rule that makes this work (src/libcache.c) and its limits are attacked
at the end: a module a cell could have written, code a cell made, a cell's
callback called by a library, and writes outside the library's own cache
stay refused; a thread a library's import starts runs under the gate.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import safepyrun

CHILD = Path(__file__).parent / "first_import" / "child.py"
# Where the safepyrun under test comes from (an installed venv, or a tree
# with the engine built in place): the children import the same one.
SAFEPYRUN_HOME = Path(safepyrun.__file__).resolve().parent.parent


def fresh_env(tmp, mpl="unset", extra_path=None):
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "MPL")) and k != "HOME"}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(tmp / "cfg-safepyrun")  # our config only
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    paths = [str(SAFEPYRUN_HOME)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if mpl == "missing":
        env["MPLCONFIGDIR"] = str(tmp / "mpl-new")
    elif mpl == "empty":
        (tmp / "mpl-empty").mkdir()
        env["MPLCONFIGDIR"] = str(tmp / "mpl-empty")
    return env


def child(mode, tmp, cells, **kw):
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(CHILD), mode, str(work), *cells],
        env=fresh_env(tmp, **kw), capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_as_plain(tmp_path, cells, **kw):
    ours = child("sandbox", tmp_path / "ours", cells, **kw)
    plain = child("plain", tmp_path / "plain", cells, **kw)
    assert ours == plain
    assert "error" not in ours, ours
    return ours["values"]


def cells_for(code):
    return [textwrap.dedent(code).strip()]


FIRST_IMPORTS = {
    "numpy": "import numpy as np\nfloat(np.arange(10).sum())",
    "pandas": "import pandas as pd\n"
              "df = pd.DataFrame({'r': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n"
              "df.groupby('r')['v'].sum().to_dict()",
    "matplotlib": "import matplotlib\nmatplotlib.use('Agg')\n"
                  "import matplotlib.pyplot as plt\n"
                  "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\n"
                  "ax.set_title('t')\nfig.canvas.draw()\n"
                  "len(ax.lines)",
    "scipy": "from scipy import stats, optimize\n"
             "round(float(stats.norm.cdf(0)), 6), "
             "round(float(optimize.brentq(lambda x: x * x - 2, 0, 2)), 6)",
    "sklearn": "from sklearn.linear_model import LinearRegression\n"
               "import numpy as np\n"
               "m = LinearRegression().fit(np.arange(6).reshape(-1, 1), "
               "2 * np.arange(6) + 1)\n"
               "round(float(m.coef_[0]), 6), round(float(m.intercept_), 6)",
    "PIL": "from PIL import Image\nim = Image.new('RGB', (4, 3))\nim.size",
    "parsers": "import json, csv, io, tomllib, html.parser, email, "
               "xml.etree.ElementTree as ET\n"
               "(json.loads('[1]'), list(csv.reader(io.StringIO('a,b'))), "
               "tomllib.loads('x = 1'), ET.fromstring('<a>t</a>').text)",
}


@pytest.mark.parametrize("lib", sorted(FIRST_IMPORTS))
def test_first_import_in_a_cell_with_cold_caches(lib, tmp_path):
    if lib != "parsers":
        pytest.importorskip(lib)
    same_as_plain(tmp_path, cells_for(FIRST_IMPORTS[lib]))


@pytest.mark.parametrize("mpl", ["unset", "missing", "empty"])
def test_first_matplotlib_import_writes_its_caches(mpl, tmp_path):
    pytest.importorskip("matplotlib")
    code = ("import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\nax.plot([3, 1, 2])\n"
            "import os\nfig.savefig(os.path.join(%r, 'p.png'))\n"
            "os.path.getsize(os.path.join(%r, 'p.png')) > 1000")
    # The plot's path differs per process, so the value is compared with
    # what plain exec gives (True), not with a second process.
    work = tmp_path / "ours" / "work"
    ours = child("sandbox", tmp_path / "ours",
                 [code % (str(work), str(work))], mpl=mpl)
    assert ours == {"values": ["True"]}
    cache = {"unset": tmp_path / "ours" / "home" / ".cache" / "matplotlib",
             "missing": tmp_path / "ours" / "mpl-new",
             "empty": tmp_path / "ours" / "mpl-empty"}[mpl]
    assert any(p.name.startswith("fontlist") for p in cache.iterdir())


# ---- the rule's limits, attacked ---------------------------------------------


def make_library(site, name, body):
    """A library installed by the host: a package outside ok_dests."""
    pkg = site / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))


def run_ours(tmp_path, cells, site=None):
    return child("sandbox", tmp_path, cells, extra_path=site)


def test_a_library_writes_its_own_cache_but_nothing_else(tmp_path):
    site = tmp_path / "site"
    make_library(site, "cachelib", """
        import os
        home = os.environ['HOME']
        d = os.path.join(home, '.cache', 'cachelib')
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'index.json'), 'w') as f:
            f.write('{}')
        try:
            with open(os.path.join(home, '.bashrc'), 'w') as f:
                f.write('evil')
            OTHER = 'written'
        except PermissionError as e:
            OTHER = 'refused'
        try:
            os.makedirs(os.path.join(home, '.cache', 'pip'), exist_ok=True)
            open(os.path.join(home, '.cache', 'pip', 'x'), 'w').close()
            PIP = 'written'
        except PermissionError:
            PIP = 'refused'
    """)
    out = run_ours(tmp_path, ["import cachelib\n(cachelib.OTHER, cachelib.PIP)"],
                   site=site)
    assert out == {"values": ["('refused', 'refused')"]}
    home = tmp_path / "home"
    assert (home / ".cache" / "cachelib" / "index.json").read_text() == "{}"
    assert not (home / ".bashrc").exists()
    assert not (home / ".cache" / "pip" / "x").exists()


def test_a_module_a_cell_could_write_is_not_a_library(tmp_path):
    # The cell writes a module into ok_dests and imports it: its body is
    # the cell's, so its "cache" write stays refused.
    cell = ("import sys, os\nsys.path.insert(0, {w!r})\n"
            "open(os.path.join({w!r}, 'mine.py'), 'w').write(\n"
            "    \"import os\\nos.makedirs(os.path.expanduser('~/.cache/mine'),"
            " exist_ok=True)\\n"
            "open(os.path.expanduser('~/.cache/mine/x'), 'w').write('x')\\n\")\n"
            "import mine")
    work = tmp_path / "work"
    out = run_ours(tmp_path, [cell.format(w=str(work))])
    assert out["error"].startswith("PermissionError: safepyrun refused to "
                                   "create a directory"), out
    assert not (tmp_path / "home" / ".cache" / "mine" / "x").exists()


def test_code_a_cell_made_is_not_a_library(tmp_path):
    # A finder the cell installs hands the import system a loader for a
    # real library file but code of the cell's own: the running code is
    # not what the file compiles to.
    site = tmp_path / "site"
    make_library(site, "innocent", "X = 1\n")
    # The loader and spec classes are reached through a module a cell may
    # import (importlib's own modules are refused by the import rules).
    cell = textwrap.dedent("""
        import sys, json, builtins
        Loader, Spec = type(json.__loader__), type(json.__spec__)
        make_code = getattr(builtins, 'comp' + 'ile')  # past the syntax rule
        src = ("import os\\n"
               "os.makedirs(os.path.expanduser('~/.cache/innocent'), exist_ok=True)\\n"
               "open(os.path.expanduser('~/.cache/innocent/evil'), 'w').write('x')\\n")
        class L(Loader):
            def get_code(self, name):
                return make_code(src, self.path, 'exec')
        class F:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name == 'innocent':
                    p = %r
                    return Spec(name, L(name, p), origin=p)
        sys.meta_path.insert(0, F)
        import innocent
    """) % str(site / "innocent" / "__init__.py")
    out = run_ours(tmp_path, [cell], site=site)
    assert out["error"].startswith("PermissionError: safepyrun refused to "
                                   "create a directory"), out
    assert not (tmp_path / "home" / ".cache" / "innocent" / "evil").exists()


def test_a_cells_callback_called_by_a_library_is_the_cells(tmp_path):
    site = tmp_path / "site"
    make_library(site, "callsback", """
        import __main__
        __main__.on_import()
    """)
    cell = ("import os\ndef on_import():\n"
            "    d = os.path.expanduser('~/.cache/callsback')\n"
            "    os.makedirs(d, exist_ok=True)\n"
            "    open(os.path.join(d, 'x'), 'w').write('x')\n"
            "import sys\nsys.modules['__main__'].on_import = on_import\n"
            "import callsback")
    out = run_ours(tmp_path, [cell], site=site)
    assert out.get("error", "").startswith("PermissionError"), out
    assert not (tmp_path / "home" / ".cache" / "callsback" / "x").exists()


def test_a_thread_a_library_starts_runs_under_the_gate(tmp_path):
    site = tmp_path / "site"
    marker = tmp_path / "from-thread"
    make_library(site, "threaded", f"""
        import os, threading
        RESULT = []
        def work():
            try:
                os.system('touch {marker}')
                RESULT.append('ran')
            except PermissionError:
                RESULT.append('refused')
        t = threading.Thread(target=work)
        t.start()
        t.join()
    """)
    out = run_ours(tmp_path, ["import threaded\nthreaded.RESULT"], site=site)
    assert out == {"values": ["['refused']"]}
    assert not marker.exists()


def test_a_cell_starting_a_thread_is_still_refused(tmp_path):
    out = run_ours(tmp_path, ["import threading\n"
                              "threading.Thread(target=print).start()"])
    assert out["error"].startswith(
        "PermissionError: safepyrun refused to start a thread"), out

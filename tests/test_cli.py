"""The `safepyrun` command: script path or stdin, prints the last value,
errors to stderr with a non-zero exit, --ok-dest DIR (repeatable)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).with_name("safepyrun")


def cli(*args, stdin=None, cwd=None, via_module=True):
    cmd = ([sys.executable, "-m", "safepyrun.cli"] if via_module
           else [str(BIN)])
    return subprocess.run(cmd + [str(a) for a in args], input=stdin,
                          capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_script_prints_last_value(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("x = 20\nx + 22\n")
    out = cli(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    assert out.stderr == ""


def test_stdin_prints_last_value():
    out = cli(stdin="[i * i for i in range(4)]\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[0, 1, 4, 9]\n"


def test_stdin_dash():
    out = cli("-", stdin="'a' * 3")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "'aaa'\n"


def test_print_output_and_none_result():
    out = cli(stdin="print('hello')\nx = 1\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\n"


def test_refusal_to_stderr_nonzero(tmp_path):
    marker = tmp_path / "marker"
    out = cli(stdin=f"import os\nos.system('touch {marker}')\n")
    assert out.returncode != 0
    assert "PermissionError" in out.stderr
    assert "safepyrun refused" in out.stderr
    assert "os.system" in out.stderr
    assert out.stdout == ""
    assert not marker.exists()


def test_error_to_stderr_nonzero():
    out = cli(stdin="1/0\n")
    assert out.returncode != 0
    assert "ZeroDivisionError" in out.stderr
    assert out.stdout == ""


def test_syntax_error_nonzero():
    out = cli(stdin="def (:\n")
    assert out.returncode != 0
    assert "SyntaxError" in out.stderr


def test_banned_import_nonzero():
    out = cli(stdin="import socket\n")
    assert out.returncode != 0
    assert "PermissionError" in out.stderr and "'socket'" in out.stderr


def test_missing_script_nonzero(tmp_path):
    out = cli(tmp_path / "nope.py")
    assert out.returncode != 0
    assert out.stderr != ""


def test_writes_refused_by_default(tmp_path):
    target = tmp_path / "out.txt"
    out = cli(stdin=f"open({str(target)!r}, 'w').write('x')\n")
    assert out.returncode != 0
    assert "safepyrun refused" in out.stderr
    assert not target.exists()


def test_ok_dest_allows_writes(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    out = cli("--ok-dest", d, stdin=f"open({str(d / 'a.txt')!r}, 'w').write('xy')\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2\n"
    assert (d / "a.txt").read_text() == "xy"


def test_ok_dest_repeatable(tmp_path):
    d1, d2, other = tmp_path / "d1", tmp_path / "d2", tmp_path / "other"
    for d in (d1, d2, other):
        d.mkdir()
    code = (f"open({str(d1 / 'a')!r}, 'w').close()\n"
            f"open({str(d2 / 'b')!r}, 'w').close()\n'both'\n")
    out = cli("--ok-dest", d1, "--ok-dest", d2, stdin=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "'both'\n"
    assert (d1 / "a").exists() and (d2 / "b").exists()
    out = cli("--ok-dest", d1, "--ok-dest", d2,
              stdin=f"open({str(other / 'c')!r}, 'w')\n")
    assert out.returncode != 0
    assert not (other / "c").exists()


def test_ok_dest_relative_dot(tmp_path):
    out = cli("--ok-dest", ".", stdin="open('here.txt', 'w').write('h')\n",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "here.txt").read_text() == "h"


def test_script_with_top_level_await(tmp_path):
    script = tmp_path / "a.py"
    script.write_text("import asyncio\nawait asyncio.sleep(0)\n'awaited'\n")
    out = cli(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "'awaited'\n"


@pytest.mark.skipif(not BIN.exists(), reason="safepyrun script not installed")
def test_console_script(tmp_path):
    out = cli(stdin="6 * 7\n", via_module=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    out = cli(stdin="import os\nos.system('true')\n", via_module=False)
    assert out.returncode != 0
    assert "safepyrun refused" in out.stderr


# ---- --json and --max-output (issue 9, item 5) --------------------------------

def test_json_report(tmp_path):
    import json
    script = tmp_path / "job.py"
    script.write_text("print('out')\nimport sys\nprint('err', file=sys.stderr)\n"
                      "{'a': object(), 'n': 1}\n")
    out = cli("--json", script)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    data = json.loads(out.stdout)
    assert data["ok"] is True and data["error"] is None
    assert data["stdout"] == "out\n" and data["stderr"] == "err\n"
    assert data["value"].startswith("{'a': <object object at")  # repr()
    assert data["events"] == [] and data["displays"] == []
    out = cli("--json", stdin="[1, 2]")
    assert json.loads(out.stdout)["value"] == [1, 2]


def test_json_report_of_a_refusal(tmp_path):
    import json
    target = tmp_path / "nope"
    out = cli("--json", stdin=f"open({str(target)!r}, 'w')")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False
    assert data["error"]["type"] == "PermissionError"
    assert data["error"]["traceback"].startswith("Traceback")
    assert data["events"] == [{"name": "open", "args": [repr(str(target)), "'w'",
                                                        data["events"][0]["args"][2]],
                               "verdict": "denied", "by": None}]
    assert not target.exists()


def test_json_exit_code_of_sys_exit():
    import json
    out = cli("--json", stdin="import sys\nprint('bye')\nsys.exit(4)")
    assert out.returncode == 4
    assert json.loads(out.stdout)["stdout"] == "bye\n"


def test_json_figures_written_into_ok_dest(tmp_path):
    pytest.importorskip("matplotlib")
    import json
    figs = tmp_path / "figs"
    figs.mkdir()
    code = ("import matplotlib\nmatplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone")
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))
    (tmp_path / "mpl").mkdir()
    cmd = [sys.executable, "-c",
           "import sys, safepyrun\nsafepyrun.allow_matplotlib()\n"
           "from safepyrun.cli import main\nsys.exit(main(sys.argv[1:]))",
           "--json", "--ok-dest", str(figs)]
    import subprocess
    out = subprocess.run(cmd, input=code, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    data = json.loads(out.stdout)
    [fig] = data["displays"]
    assert fig["mime"] == "image/png" and fig["width"] > 0 and fig["height"] > 0
    path = Path(fig["path"])
    assert path.parent == figs
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig["bytes"] == path.stat().st_size


def test_max_output_cuts_with_marker():
    out = cli("--max-output", "5", stdin="print('abcdefghij')\n7")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "abcde\n... [output truncated: 6 more characters]\n7\n"


def test_max_output_with_json():
    import json
    out = cli("--json", "--max-output", "3", stdin="print('x' * 10)")
    assert json.loads(out.stdout)["stdout"] == \
        "xxx\n... [output truncated: 8 more characters]\n"


def test_max_output_error_still_reported():
    out = cli("--max-output", "100", stdin="print('a')\n1/0")
    assert out.returncode == 1
    assert out.stdout == "a\n"
    assert out.stderr.startswith("Traceback")
    assert "ZeroDivisionError" in out.stderr


def test_max_output_must_not_be_negative():
    out = cli("--max-output", "-1", stdin="1")
    assert out.returncode == 2
    assert "--max-output must be >= 0" in out.stderr

"""The user config, $XDG_CONFIG_HOME/safepyrun/config.py, run at import."""
from trust_helpers import check_output, run_python


def write_config(tmp_path, text):
    cfg = tmp_path / "xdg-config" / "safepyrun"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.py").write_text(text)
    return cfg / "config.py"


def test_no_config_keeps_defaults(tmp_path):
    out = check_output("""
        import safepyrun
        from safepyrun import _engine
        print(safepyrun.default_ok_dests, len(_engine.allow_entries()))
        """, tmp_path)
    assert out.split() == ["[]", "0"]


def test_config_sets_default_ok_dests_and_allows(tmp_path):
    out_dir = tmp_path / "work"
    out_dir.mkdir()
    write_config(tmp_path, f"""
import subprocess
def cfg_tool():
    return subprocess.run(['true']).returncode
allow(cfg_tool)
allow({{Path: [('write_text', PathWritePolicy())]}})
set_data(h3_from_config=True)
default_ok_dests = [{str(out_dir)!r}]
sys.modules['__main__'].cfg_tool = cfg_tool
""")
    out = check_output(f"""
        import asyncio, __main__
        import safepyrun
        from safepyrun import RunPython, _engine
        print([str(p) for p in safepyrun.default_ok_dests] == [{str(out_dir)!r}])
        print(_engine.get_data().get('h3_from_config'))
        py = RunPython({{'tool': __main__.cfg_tool}})
        print(asyncio.run(py('tool()')))
        asyncio.run(py("from pathlib import Path; Path({str(out_dir)!r} + '/x.txt').write_text('hi')"))
        try:
            asyncio.run(py("from pathlib import Path; Path({str(tmp_path)!r} + '/y.txt').write_text('no')"))
        except PermissionError:
            print('refused')
        """, tmp_path)
    assert out.split() == ["True", "True", "0", "refused"]
    assert (out_dir / "x.txt").read_text() == "hi"
    assert not (tmp_path / "y.txt").exists()


def test_broken_config_warns_and_keeps_defaults(tmp_path):
    path = write_config(tmp_path, """
def half(): pass
allow(half)
default_ok_dests = ['/']
raise ValueError('oops in config')
""")
    proc = run_python("""
        import safepyrun
        from safepyrun import _engine
        print(safepyrun.default_ok_dests, len(_engine.allow_entries()))
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "0"]
    assert str(path) in proc.stderr and "ValueError" in proc.stderr
    assert "oops in config" in proc.stderr


def test_config_with_syntax_error(tmp_path):
    path = write_config(tmp_path, "allow(\n")
    proc = run_python("""
        import safepyrun
        print(safepyrun.default_ok_dests)
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert str(path) in proc.stderr and "SyntaxError" in proc.stderr


def test_default_location_under_home(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "safepyrun").mkdir(parents=True)
    (home / ".config" / "safepyrun" / "config.py").write_text(
        "default_ok_dests = ['/tmp']\n")
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    out = check_output("""
        import safepyrun
        print([str(p) for p in safepyrun.default_ok_dests])
        """, tmp_path, env=env)
    assert out.strip() == "['/tmp']"


def test_config_names_available(tmp_path):
    write_config(tmp_path, """
for name in ['allow', 'allow_imports', 'AllowPolicy', 'PosAllowPolicy',
             'PathWritePolicy', 'OpenWritePolicy', 'chk_dest', 'set_data',
             'allow_matplotlib', 'allow_pandas', 'os', 'sys', 'Path',
             'default_ok_dests', 'RunPython']:
    assert name in globals(), name
""")
    proc = run_python("import safepyrun; print('ok')", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok"
    assert "config" not in proc.stderr, proc.stderr

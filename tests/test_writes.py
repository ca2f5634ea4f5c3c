"""Write destinations (ok_dests): the seed's examples and the DESIGN.md rules.

Every refused write also checks that the file (or directory) does not
exist afterwards.  tmp_path stands in for the seed's '/tmp' except in the
one test that uses the literal '/tmp' example.
"""
import os
import uuid
from pathlib import Path

import pytest

from conftest import host_ns, refused, run
from safepyrun import RunPython, default_ok_dests


@pytest.fixture
def ok(tmp_path):
    d = tmp_path / "ok"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "outside"
    d.mkdir()
    return d


@pytest.fixture
def py_ok(ok):
    return RunPython(host_ns(), ok_dests=[str(ok)])


# --- the seed's examples (tmp_path for /tmp) -----------------------------

def test_default_ok_dests_is_empty():
    assert default_ok_dests == []
    assert RunPython({}).ok_dests == ()


def test_path_write_text_allowed(py_ok, ok):
    assert run(py_ok, f"Path({str(ok / 'test_write.txt')!r}).write_text('hello')") == 5
    assert (ok / "test_write.txt").read_text() == "hello"


def test_open_write_allowed(py_ok, ok):
    assert run(py_ok, f"open({str(ok / 'test_open.txt')!r}, 'w').write('hi')") == 2
    assert (ok / "test_open.txt").read_text() == "hi"


def test_write_to_etc_refused(py_ok):
    refused(py_ok, "Path('/etc/evil.txt').write_text('bad')", "open",
            "'/etc/evil.txt'", "ok_dests")
    assert not os.path.exists("/etc/evil.txt")


def test_open_in_root_refused(py_ok):
    name = f"/root/bad-{uuid.uuid4().hex}.txt"
    refused(py_ok, f"open({name!r}, 'w')", "open", repr(name))
    assert not os.path.exists(name)


def test_reading_etc_passwd_allowed(py_ok):
    with open("/etc/passwd") as f:
        expected = f.read(10)
    assert run(py_ok, "open('/etc/passwd', 'r').read(10)") == expected


def test_shutil_copy_inside_allowed(py_ok, ok):
    (ok / "test_write.txt").write_text("hello")
    src, dst = str(ok / "test_write.txt"), str(ok / "test_copy.txt")
    assert run(py_ok, f"import shutil; shutil.copy({src!r}, {dst!r})") == dst
    assert Path(dst).read_text() == "hello"


def test_shutil_copy_out_refused(py_ok, ok, outside):
    (ok / "test_write.txt").write_text("hello")
    src, dst = str(ok / "test_write.txt"), str(outside / "bad.txt")
    refused(py_ok, f"import shutil; shutil.copy({src!r}, {dst!r})",
            "shutil.copyfile", repr(dst))
    assert not os.path.exists(dst)


def test_shutil_copy_to_root_refused(py_ok, ok):
    (ok / "test_write.txt").write_text("hello")
    src, dst = str(ok / "test_write.txt"), f"/root/bad-{uuid.uuid4().hex}.txt"
    refused(py_ok, f"import shutil; shutil.copy({src!r}, {dst!r})",
            "shutil.copyfile", repr(dst))
    assert not os.path.exists(dst)


def test_default_runner_refuses_writes_everywhere(py, ok):
    target = ok / "test.txt"
    refused(py, f"Path({str(target)!r}).write_text('nope')", "open",
            repr(str(target)))
    assert not target.exists()


def test_literal_tmp_example():
    # The seed's own example, verbatim paths under /tmp (unique names).
    tag = uuid.uuid4().hex
    w, o, c = (f"/tmp/test_write_{tag}.txt", f"/tmp/test_open_{tag}.txt",
               f"/tmp/test_copy_{tag}.txt")
    try:
        pyrun2 = RunPython(host_ns(), ok_dests=["/tmp"])
        assert run(pyrun2, f"Path({w!r}).write_text('hello')") == 5
        assert run(pyrun2, f"open({o!r}, 'w').write('hi')") == 2
        assert run(pyrun2, f"import shutil; shutil.copy({w!r}, {c!r})") == c
        assert Path(c).read_text() == "hello"
        refused(pyrun2, "Path('/etc/evil.txt').write_text('bad')", "open")
        assert not os.path.exists("/etc/evil.txt")
        pyrun = RunPython(host_ns())
        nope = f"/tmp/test_{tag}.txt"
        refused(pyrun, f"Path({nope!r}).write_text('nope')", "open")
        assert not os.path.exists(nope)
    finally:
        for p in (w, o, c):
            Path(p).unlink(missing_ok=True)


# --- '.' means the current directory at the time of each operation -------

@pytest.fixture
def in_cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "subdir").mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def pyrun_cwd():
    return RunPython(host_ns(), ok_dests=["."])


def test_cwd_write_allowed(pyrun_cwd, in_cwd):
    assert run(pyrun_cwd, "Path('test_cwd_ok.txt').write_text('hello')") == 5
    assert (in_cwd / "test_cwd_ok.txt").read_text() == "hello"


def test_cwd_write_refused_without_ok_dests(py, in_cwd):
    refused(py, "Path('test_cwd_ok.txt').write_text('hello')", "open",
            "'test_cwd_ok.txt'")
    assert not (in_cwd / "test_cwd_ok.txt").exists()


def test_cwd_absolute_elsewhere_refused(pyrun_cwd, in_cwd, outside):
    target = outside / "nope.txt"
    refused(pyrun_cwd, f"Path({str(target)!r}).write_text('bad')", "open",
            repr(str(target)))
    assert not target.exists()


def test_cwd_parent_traversal_refused(pyrun_cwd, in_cwd):
    refused(pyrun_cwd, "Path('../escape.txt').write_text('bad')", "open",
            "'../escape.txt'")
    assert not (in_cwd.parent / "escape.txt").exists()


def test_cwd_sneaky_traversal_refused(pyrun_cwd, in_cwd):
    refused(pyrun_cwd, "Path('subdir/../../escape.txt').write_text('bad')",
            "open", "'subdir/../../escape.txt'")
    assert not (in_cwd.parent / "escape.txt").exists()


def test_cwd_subdirectory_allowed(pyrun_cwd, in_cwd):
    assert run(pyrun_cwd, "Path('subdir/x.txt').write_text('x')") == 1
    assert (in_cwd / "subdir" / "x.txt").read_text() == "x"


def test_cwd_is_read_at_each_operation(pyrun_cwd, in_cwd, outside,
                                       monkeypatch):
    # The host changes directory between runs: '.' follows it.
    monkeypatch.chdir(outside)
    assert run(pyrun_cwd, "Path('later.txt').write_text('ok')") == 2
    assert (outside / "later.txt").exists()
    assert not (in_cwd / "later.txt").exists()
    target = in_cwd / "old.txt"
    refused(pyrun_cwd, f"Path({str(target)!r}).write_text('bad')", "open")
    assert not target.exists()


# --- other write operations ----------------------------------------------

def test_ok_dests_none_disables_write_checks(outside):
    py = RunPython(host_ns(), ok_dests=None)
    assert py.ok_dests is None
    target = outside / "free.txt"
    assert run(py, f"Path({str(target)!r}).write_text('x')") == 1
    assert target.read_text() == "x"
    # Everything else stays gated.
    refused(py, "os.system('true')", "os.system")


def test_read_only_open_outside_allowed(py_ok, outside):
    (outside / "r.txt").write_text("data")
    assert run(py_ok, f"open({str(outside / 'r.txt')!r}).read()") == "data"
    assert run(py_ok, f"open({str(outside / 'r.txt')!r}, 'rb').read()") == b"data"


@pytest.mark.parametrize("mode", ["w", "a", "x", "r+", "wb", "ab"])
def test_open_write_modes_outside_refused(py_ok, outside, mode):
    target = outside / "m.txt"
    if mode == "r+":
        target.write_text("orig")
    refused(py_ok, f"open({str(target)!r}, {mode!r})", "open")
    if mode == "r+":
        assert target.read_text() == "orig"
    else:
        assert not target.exists()


def test_os_open_write_flags_outside_refused(py_ok, outside):
    target = outside / "o.txt"
    refused(py_ok, f"os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
            "open")
    assert not target.exists()


def test_os_open_read_only_outside_allowed(py_ok, outside):
    (outside / "o.txt").write_text("x")
    fd = run(py_ok, f"os.open({str(outside / 'o.txt')!r}, os.O_RDONLY)")
    try:
        assert os.read(fd, 1) == b"x"
    finally:
        os.close(fd)


def test_os_open_write_inside_allowed(py_ok, ok):
    code = (f"fd = os.open({str(ok / 'o.txt')!r}, os.O_WRONLY | os.O_CREAT)\n"
            "os.write(fd, b'abc')\nos.close(fd)")
    run(py_ok, code)
    assert (ok / "o.txt").read_bytes() == b"abc"


def test_remove_outside_refused(py_ok, outside):
    victim = outside / "keep.txt"
    victim.write_text("keep")
    refused(py_ok, f"os.remove({str(victim)!r})", "os.remove")
    refused(py_ok, f"Path({str(victim)!r}).unlink()", "os.remove")
    assert victim.read_text() == "keep"


def test_remove_inside_allowed(py_ok, ok):
    (ok / "gone.txt").write_text("x")
    run(py_ok, f"os.remove({str(ok / 'gone.txt')!r})")
    assert not (ok / "gone.txt").exists()


def test_mkdir_and_rmdir(py_ok, ok, outside):
    run(py_ok, f"os.mkdir({str(ok / 'newdir')!r})")
    assert (ok / "newdir").is_dir()
    refused(py_ok, f"os.mkdir({str(outside / 'newdir')!r})", "os.mkdir")
    assert not (outside / "newdir").exists()
    (outside / "keepdir").mkdir()
    refused(py_ok, f"os.rmdir({str(outside / 'keepdir')!r})", "os.rmdir")
    assert (outside / "keepdir").is_dir()


def test_rename_checks_both_sides(py_ok, ok, outside):
    (ok / "in.txt").write_text("in")
    (outside / "out.txt").write_text("out")
    # Out of ok_dests.
    refused(py_ok, f"os.rename({str(ok / 'in.txt')!r}, "
                   f"{str(outside / 'moved.txt')!r})", "os.rename")
    assert (ok / "in.txt").exists() and not (outside / "moved.txt").exists()
    # Into ok_dests, from outside.
    refused(py_ok, f"os.rename({str(outside / 'out.txt')!r}, "
                   f"{str(ok / 'stolen.txt')!r})", "os.rename")
    assert (outside / "out.txt").exists() and not (ok / "stolen.txt").exists()
    # Inside.
    run(py_ok, f"os.rename({str(ok / 'in.txt')!r}, {str(ok / 'in2.txt')!r})")
    assert (ok / "in2.txt").read_text() == "in"


def test_shutil_move_out_refused(py_ok, ok, outside):
    (ok / "in.txt").write_text("in")
    refused(py_ok, f"import shutil; shutil.move({str(ok / 'in.txt')!r}, "
                   f"{str(outside / 'moved.txt')!r})")
    assert (ok / "in.txt").exists()
    assert not (outside / "moved.txt").exists()


def test_shutil_rmtree_outside_refused(py_ok, outside):
    tree = outside / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "f.txt").write_text("x")
    with pytest.raises(PermissionError):
        run(py_ok, f"import shutil; shutil.rmtree({str(tree)!r})")
    assert (tree / "a" / "f.txt").read_text() == "x"


def test_symlink_into_ok_pointing_outside_refused(py_ok, ok, outside):
    link = ok / "link"
    with pytest.raises(PermissionError):
        run(py_ok, f"os.symlink({str(outside)!r}, {str(link)!r})")
    assert not os.path.lexists(link)


def test_symlinked_parent_resolved(py_ok, ok, outside):
    # A symlink inside ok_dests that points outside does not make the
    # outside writable.
    (ok / "escape").symlink_to(outside, target_is_directory=True)
    target = ok / "escape" / "x.txt"
    refused(py_ok, f"open({str(target)!r}, 'w')", "open")
    assert not (outside / "x.txt").exists()


def test_chmod_outside_refused(py_ok, outside):
    f = outside / "c.txt"
    f.write_text("x")
    f.chmod(0o644)
    refused(py_ok, f"os.chmod({str(f)!r}, 0o777)", "os.chmod")
    assert f.stat().st_mode & 0o777 == 0o644


def test_truncate_outside_refused(py_ok, outside):
    f = outside / "t.txt"
    f.write_text("content")
    refused(py_ok, f"os.truncate({str(f)!r}, 0)", "os.truncate")
    assert f.read_text() == "content"


def test_chdir_outside_refused(py_ok, outside):
    before = os.getcwd()
    refused(py_ok, f"os.chdir({str(outside)!r})", "os.chdir")
    assert os.getcwd() == before


def test_tilde_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "out").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    py = RunPython(host_ns(), ok_dests=["~/out"])
    assert run(py, f"open({str(home / 'out' / 'a.txt')!r}, 'w').write('x')") == 1
    assert (home / "out" / "a.txt").exists()
    refused(py, f"open({str(home / 'b.txt')!r}, 'w')", "open")
    assert not (home / "b.txt").exists()


def test_pathlike_and_bytes_ok_dests(ok):
    for dests in ([ok], [os.fsencode(str(ok))], (str(ok),)):
        py = RunPython(host_ns(), ok_dests=dests)
        name = f"f{uuid.uuid4().hex}.txt"
        assert run(py, f"open({str(ok / name)!r}, 'w').write('y')") == 1
        assert (ok / name).exists()


def test_refusal_message_names_ok_dests(py_ok, ok, outside):
    target = str(outside / "x.txt")
    msg = refused(py_ok, f"open({target!r}, 'w')", "open", repr(target),
                  "ok_dests", "open a file for writing")
    assert str(ok) in msg


def test_write_inside_cell_function_refused(py_ok, outside):
    target = outside / "fn.txt"
    py_ok.g["target"] = str(target)
    refused(py_ok, "def w(): open(target, 'w').write('x')\nw()", "open")
    assert not target.exists()


@pytest.mark.parametrize("code", [
    "Path(T).touch()",
    "os.makedirs(os.path.join(T, 'a', 'b'))",
    "Path(T).mkdir(parents=True)",
    "import io\nio.open(T, 'w')",
    "import codecs\ncodecs.open(T, 'w')",
    "import sqlite3\nsqlite3.connect(T)",
    "os.link('/etc/hostname', T)",
    "os.symlink('/etc', T)",
    "import numpy as np\nnp.save(T, np.arange(3))",
    "import pandas as pd\npd.DataFrame({'a': [1]}).to_csv(T)",
])
def test_library_writes_outside_refused(py_ok, outside, code):
    target = outside / "lib-target"
    py_ok.g["T"] = str(target)
    with pytest.raises(PermissionError) as info:
        run(py_ok, code)
    assert "safepyrun refused" in str(info.value)
    assert not os.path.lexists(target)
    assert not os.path.lexists(str(target) + ".npy")


def test_library_writes_inside_allowed(py_ok, ok):
    py_ok.g["d"] = str(ok)
    run(py_ok, "import numpy as np, pandas as pd\n"
               "np.save(os.path.join(d, 'a.npy'), np.arange(3))\n"
               "pd.DataFrame({'a': [1]}).to_csv(os.path.join(d, 'a.csv'))\n"
               "Path(d, 'sub', 'deep').mkdir(parents=True)\n"
               "Path(d, 'sub', 'deep', 't').touch()")
    assert (ok / "a.npy").exists() and (ok / "a.csv").exists()
    assert (ok / "sub" / "deep" / "t").exists()

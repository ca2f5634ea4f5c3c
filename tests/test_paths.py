"""Tests for src/paths.c: ok_dests normalisation, path resolution and the
write check, through safepyrun._engine's thin wrappers."""
import errno
import os
import pathlib
import pwd

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepyrun import _engine

normalise = _engine.normalise_dests
resolve = _engine.resolve
check = _engine.check_write

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


class FsPath:
    """A minimal os.PathLike that is not a str or bytes."""

    def __init__(self, value):
        self.value = value

    def __fspath__(self):
        return self.value


class BadFsPath:
    def __fspath__(self):
        raise ZeroDivisionError("no path for you")


class StrSub(str):
    pass


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp_path/work is the cwd and the usual ok_dest; tmp_path/outside is a
    sibling that must never be writable through it."""
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (work / "subdir").mkdir()
    (outside / "secret.txt").write_text("x")
    monkeypatch.chdir(work)
    return work, outside


# --- normalise_dests -----------------------------------------------------


def test_normalise_none():
    assert normalise(None) is None


@pytest.mark.parametrize("container", [list, tuple, set, frozenset])
def test_normalise_containers(container):
    assert normalise(container(["/tmp"])) == ("/tmp",)


def test_normalise_keeps_order_and_relative_entries_as_written():
    got = normalise([".", "out", "a/../b", "/x/./y/"])
    assert got == (".", "out", "a/../b", "/x/./y/")
    assert type(got) is tuple


def test_normalise_empty_list():
    assert normalise([]) == ()


def test_normalise_entry_kinds():
    got = normalise([b"/b", pathlib.Path("/p"), FsPath(b"/fb"), FsPath("/fs"),
                     StrSub("/sub")])
    assert got == ("/b", "/p", "/fb", "/fs", "/sub")
    assert all(type(x) is str for x in got)


def test_normalise_bytes_undecodable_roundtrips():
    (entry,) = normalise([b"/tmp/\xff"])
    assert os.fsencode(entry) == b"/tmp/\xff"


@pytest.mark.parametrize("value, name", [("/tmp", "str"), (b"/tmp", "bytes"),
                                         (5, "int"), ({"/tmp": 1}, "dict"),
                                         (iter(["/tmp"]), "list_iterator")])
def test_normalise_rejects_non_containers(value, name):
    with pytest.raises(TypeError, match=f"ok_dests must be a list of paths, not {name}$"):
        normalise(value)


@pytest.mark.parametrize("entry, name", [(1, "int"), (None, "NoneType"),
                                         (bytearray(b"/x"), "bytearray"),
                                         (["/x"], "list")])
def test_normalise_rejects_bad_entries(entry, name):
    with pytest.raises(TypeError, match=f"not {name}$"):
        normalise(["/ok", entry])


@pytest.mark.parametrize("entry", ["", b"", FsPath("")])
def test_normalise_rejects_empty(entry):
    with pytest.raises(ValueError, match="must not be empty"):
        normalise([entry])


@pytest.mark.parametrize("entry", ["a\0b", b"a\0b", "~\0", "~root\0x"])
def test_normalise_rejects_nul(entry):
    with pytest.raises(ValueError, match="embedded null character"):
        normalise([entry])


def test_normalise_rejects_too_long():
    with pytest.raises(ValueError, match="too long"):
        normalise(["/" + "a" * PATH_MAX])


def test_normalise_rejects_unencodable():
    with pytest.raises(ValueError):
        os.fsencode("/\ud800")  # the premise: not a possible file name
    with pytest.raises(ValueError):
        normalise(["/\ud800"])


def test_normalise_fspath_exception_propagates():
    with pytest.raises(ZeroDivisionError, match="no path for you"):
        normalise([BadFsPath()])


def test_normalise_fspath_returning_int():
    with pytest.raises(TypeError):
        normalise([FsPath(3)])


def test_normalise_expands_home(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    assert normalise(["~", "~/x", "~/", "a/~", "/~"]) == (
        "/home/someone", "/home/someone/x", "/home/someone/", "a/~", "/~")


def test_normalise_home_trailing_slash_and_root(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone//")
    assert normalise(["~/x"]) == ("/home/someone/x",)
    monkeypatch.setenv("HOME", "/")
    assert normalise(["~", "~/x"]) == ("/", "/x")


def test_normalise_home_unset_uses_passwd(monkeypatch):
    monkeypatch.delenv("HOME", raising=False)
    home = pwd.getpwuid(os.getuid()).pw_dir.rstrip("/") or "/"
    assert normalise(["~"]) == (home,)


def test_normalise_tilde_user():
    me = pwd.getpwuid(os.getuid())
    home = me.pw_dir.rstrip("/")
    assert normalise([f"~{me.pw_name}/x"]) == (f"{home}/x",)
    assert normalise(["~no_such_user_xyz/x"]) == ("~no_such_user_xyz/x",)


# --- resolve -------------------------------------------------------------


def test_resolve_relative_uses_cwd(tree):
    work, _ = tree
    assert resolve("test.txt") == str(work / "test.txt")
    assert resolve("sub/x") == str(work / "sub/x")
    assert resolve(".") == str(work)
    assert resolve("") == str(work)
    assert resolve("./a//b/") == str(work / "a/b")


def test_resolve_absolute_and_root(tree):
    assert resolve("/") == "/"
    assert resolve("//") == "/"
    assert resolve("/..") == "/"
    assert resolve("/../../etc") == "/etc"


def test_resolve_dotdot_is_physical(tree):
    work, outside = tree
    (outside / "deep").mkdir()
    os.symlink(outside / "deep", work / "link")
    # 'link/..' is outside, not work: '..' applies after the link.
    assert resolve("link/..") == str(outside)
    assert resolve("link/../x") == str(outside / "x")
    assert resolve("link/../x", follow=False) == str(outside / "x")


def test_resolve_missing_components_are_lexical(tree):
    work, _ = tree
    assert resolve("nope/x") == str(work / "nope/x")
    assert resolve("nope/../x") == str(work / "x")
    assert resolve("nope/../../x") == str(work.parent / "x")


def test_resolve_follow_last_component(tree):
    work, outside = tree
    os.symlink(outside / "secret.txt", work / "link")
    assert resolve("link") == str(outside / "secret.txt")
    assert resolve("link", follow=False) == str(work / "link")
    assert resolve(work / "link", follow=False) == str(work / "link")


def test_resolve_dot_dotdot_or_slash_last_resolve_fully(tree):
    work, outside = tree
    os.symlink(outside, work / "link")
    assert resolve("link/", follow=False) == str(outside)
    assert resolve("link/.", follow=False) == str(outside)
    assert resolve("link/..", follow=False) == str(outside.parent)


def test_resolve_chain_and_relative_targets(tree):
    work, outside = tree
    os.symlink("../outside/secret.txt", work / "l1")
    os.symlink("l1", work / "l2")
    os.symlink(work / "l2", work / "subdir" / "l3")
    assert resolve("subdir/l3") == str(outside / "secret.txt")
    assert resolve("subdir/l3", follow=False) == str(work / "subdir/l3")


def test_resolve_dangling_link(tree):
    work, outside = tree
    os.symlink(outside / "new" / "file", work / "dangle")
    assert resolve("dangle") == str(outside / "new/file")
    assert resolve("dangle", follow=False) == str(work / "dangle")


def test_resolve_loop_raises_eloop(tree):
    work, _ = tree
    os.symlink("b", work / "a")
    os.symlink("a", work / "b")
    with pytest.raises(OSError) as info:
        resolve("a")
    assert info.value.errno == errno.ELOOP
    assert info.value.filename == "a"
    assert resolve("a", follow=False) == str(work / "a")
    with pytest.raises(OSError) as info:
        resolve("a/x", follow=False)
    assert info.value.errno == errno.ELOOP


def test_resolve_long_chain_within_limit(tree):
    work, _ = tree
    for i in range(30):
        os.symlink(f"l{i + 1}", work / f"l{i}")
    assert resolve("l0") == str(work / "l30")


def test_resolve_through_file_is_lexical(tree):
    work, _ = tree
    (work / "f").write_text("x")
    assert resolve("f/x") == str(work / "f/x")
    assert resolve("f/../y") == str(work / "y")


def test_resolve_dir_fd(tree, tmp_path):
    work, outside = tree
    fd = os.open(outside, os.O_RDONLY)
    try:
        assert resolve("x", dir_fd=fd) == str(outside / "x")
        assert resolve("../work/y", dir_fd=fd) == str(work / "y")
        # An absolute path ignores dir_fd, as the *at calls do.
        assert resolve("/etc/z", dir_fd=fd) == "/etc/z"
    finally:
        os.close(fd)


def test_resolve_dir_fd_not_a_directory(tree):
    r, w = os.pipe()
    try:
        with pytest.raises(NotADirectoryError):
            resolve("x", dir_fd=r)
    finally:
        os.close(r)
        os.close(w)


def test_resolve_bad_dir_fd(tree):
    fd = os.open(".", os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        resolve("x", dir_fd=fd)
    assert info.value.errno == errno.EBADF


def test_resolve_int_fd(tree):
    work, _ = tree
    fd = os.open("f.txt", os.O_WRONLY | os.O_CREAT)
    try:
        assert resolve(fd) == str(work / "f.txt")
        assert resolve(fd, follow=False) == str(work / "f.txt")
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        resolve(fd)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize("fd", [-1, 2**31, 2**80, -(2**80)])
def test_resolve_out_of_range_fd(fd):
    with pytest.raises(OSError) as info:
        resolve(fd)
    assert info.value.errno == errno.EBADF


def test_resolve_path_kinds(tree):
    work, _ = tree
    want = str(work / "a")
    assert resolve(b"a") == want
    assert resolve(pathlib.Path("a")) == want
    assert resolve(FsPath(b"a")) == want
    assert resolve(StrSub("a")) == want
    assert resolve(b"\xff") == os.fsdecode(bytes(work) + b"/\xff")


def test_resolve_bad_path_objects():
    with pytest.raises(ZeroDivisionError, match="no path for you"):
        resolve(BadFsPath())
    with pytest.raises(TypeError):
        resolve(FsPath(1.5))
    with pytest.raises(TypeError):
        resolve(object())
    with pytest.raises(TypeError):
        resolve(None)


@pytest.mark.parametrize("path", ["a\0b", b"a\0", FsPath("\0")])
def test_resolve_embedded_nul(path):
    with pytest.raises(ValueError, match="embedded null byte"):
        resolve(path)


def test_resolve_too_long():
    with pytest.raises(OSError) as info:
        resolve("/" + "a" * PATH_MAX)
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        resolve(b"x" * 100_000)
    assert info.value.errno == errno.ENAMETOOLONG


def test_resolve_long_relative_overflowing_after_cwd(tree):
    # Fits PATH_MAX alone, but not once joined to the cwd: refused, not cut.
    part = "/".join(["n" * 100] * 40)
    assert len(part) < PATH_MAX
    with pytest.raises(OSError) as info:
        resolve(part)
    assert info.value.errno == errno.ENAMETOOLONG


def test_resolve_near_path_max(tree):
    path = "/" + "/".join(["m" * 200] * 19) + "/" + "z" * 100
    assert len(path) < PATH_MAX
    assert resolve(path) == path
    assert resolve(path + "/..") == path.rsplit("/", 1)[0]


def test_resolve_link_target_overflows(tree):
    work, _ = tree
    os.symlink("/" + "/".join(["q" * 200] * 20), work / "long")
    tail = "/".join(["t" * 100] * 5)
    with pytest.raises(OSError) as info:
        resolve("long/" + tail)
    assert info.value.errno == errno.ENAMETOOLONG


def test_resolve_is_reentrant(tree):
    work, _ = tree

    class Nested:
        def __fspath__(self):
            assert check("inner", ["."]) is True
            return resolve("inner") + "/../outer"

    assert resolve(Nested()) == str(work / "outer")


# A tree with links, for comparing against os.path.realpath.
@pytest.fixture(scope="module")
def link_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("links")
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "a" / "f").write_text("x")
    os.symlink("a/b", root / "lb")
    os.symlink(root / "c", root / "a" / "lc")
    os.symlink("../../c/nope", root / "a" / "b" / "dangle")
    os.symlink("..", root / "c" / "up")
    return root


component = st.sampled_from(["a", "b", "c", "f", "lb", "lc", "up", "dangle",
                             "nope", ".", "..", ""])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(component, min_size=1, max_size=7))
def test_resolve_matches_realpath(link_tree, parts):
    path = str(link_tree) + "/" + "/".join(parts)
    assert resolve(path) == os.path.realpath(path)
    head, tail = os.path.split(path)
    if tail in ("", ".", ".."):
        want = os.path.realpath(path)
    else:
        want = os.path.join(os.path.realpath(head), tail)
    assert resolve(path, follow=False) == want


# --- check_write ---------------------------------------------------------


def test_check_spec_examples_cwd(tree, tmp_path):
    work, _ = tree
    assert check("test.txt", ["."]) is True
    assert check("sub/x", ["."]) is True
    assert check("subdir/x", ["."]) is True
    assert check("../escape.txt", ["."]) is False
    assert check("subdir/../../escape.txt", ["."]) is False
    assert check(str(tmp_path / "outside" / "x"), ["."]) is False
    assert check("/etc/passwd", ["."]) is False


def test_check_dest_itself_needs_self_ok(tree):
    work, _ = tree
    for path in [str(work), ".", "", "subdir/..", str(work) + "/"]:
        assert check(path, ["."]) is False, path
        assert check(path, ["."], self_ok=True) is True, path
    # self_ok is only about equality, never about the parent.
    assert check("..", ["."], self_ok=True) is False


def test_check_tmp_dest():
    assert check("/tmp/test_write.txt", ["/tmp"]) is True
    assert check("/tmp/a/b/c", ("/tmp",)) is True
    assert check("/etc/evil.txt", ["/tmp"]) is False
    assert check("/root/bad.txt", ["/tmp"]) is False
    assert check("/tmpx/evil.txt", ["/tmp"]) is False
    assert check("/tmp/../etc/x", ["/tmp"]) is False


def test_check_sibling_prefix_is_not_inside(tree, tmp_path):
    (tmp_path / "work2").mkdir()
    assert check(str(tmp_path / "work2" / "x"), ["."]) is False
    assert check(str(tmp_path / "work2" / "x"), [str(tmp_path / "work")]) is False


def test_check_root_dest():
    assert check("/etc/x", ["/"]) is True
    assert check("/", ["/"]) is False
    assert check("/", ["/"], self_ok=True) is True
    assert check("/etc/x", ["//"]) is True


def test_check_empty_dests_refuse_all(tree):
    assert check("x", []) is False
    assert check("x", (), self_ok=True) is False
    assert check("/tmp/x", set()) is False


def test_check_none_allows_all():
    assert check("/etc/passwd", None) is True


def test_check_symlink_leaf_pointing_outside(tree):
    work, outside = tree
    os.symlink(outside / "secret.txt", work / "link")
    assert check("link", ["."]) is False               # open(): writes the target
    assert check("link", ["."], follow=False) is True  # unlink(): removes the link
    os.symlink(outside / "not_yet", work / "dangle")
    assert check("dangle", ["."]) is False
    assert check("dangle", ["."], follow=False) is True


def test_check_symlink_leaf_needs_both_ends(tree):
    work, outside = tree
    (work / "real.txt").write_text("x")
    os.symlink(work / "real.txt", outside / "in_link")
    os.symlink("real.txt", work / "ok_link")
    assert check("ok_link", ["."]) is True
    # The link lives outside: following it to an allowed file is not enough.
    assert check(str(outside / "in_link"), ["."]) is False
    assert check(str(outside / "in_link"), ["."], follow=False) is False
    # Both ends allowed by different dests.
    assert check(str(outside / "in_link"), [".", str(outside)]) is True


def test_check_symlink_chain(tree):
    work, outside = tree
    os.symlink(outside / "secret.txt", work / "l2")
    os.symlink("l2", work / "l1")
    assert check("l1", ["."]) is False
    assert check("l1", ["."], follow=False) is True


def test_check_symlinked_parent_pointing_outside(tree):
    work, outside = tree
    os.symlink(outside, work / "out_dir")
    for follow in (True, False):
        assert check("out_dir/new.txt", ["."], follow=follow) is False
        assert check("out_dir/secret.txt", ["."], follow=follow) is False
        assert check("out_dir/../escape", ["."], follow=follow) is False
    assert check("out_dir", ["."], follow=False) is True
    assert check("out_dir/", ["."], follow=False) is False


def test_check_dotdot_through_link_escapes(tree):
    work, outside = tree
    (outside / "deep").mkdir()
    os.symlink(outside / "deep", work / "subdir" / "jump")
    assert check("subdir/jump/../x", ["."]) is False
    assert check("subdir/nope/../x", ["."]) is True


def test_check_home_dest(tree, tmp_path, monkeypatch):
    work, outside = tree
    monkeypatch.setenv("HOME", str(outside))
    assert check(str(outside / "x"), ["~"]) is True
    assert check(str(outside / "sub" / "x"), ["~/sub"]) is True
    assert check(str(outside / "x"), ["~/sub"]) is False
    assert check("x", ["~"]) is False


def test_check_dot_follows_chdir(tree, tmp_path, monkeypatch):
    work, outside = tree
    dests = normalise(["."])
    assert check(str(work / "x"), dests) is True
    monkeypatch.chdir(outside)
    assert check(str(work / "x"), dests) is False
    assert check(str(outside / "x"), dests) is True
    assert check("x", dests) is True


def test_check_relative_dest(tree):
    work, _ = tree
    assert check("out/x", ["out"]) is True
    assert check("x", ["out"]) is False
    assert check(str(work / "out" / "a" / "b"), ["out"]) is True
    assert check("out2/x", ["out"]) is False


def test_check_dest_is_resolved(tree):
    work, outside = tree
    os.symlink(outside, work / "dest_link")
    assert check(str(outside / "x"), ["dest_link"]) is True
    assert check("dest_link/x", ["dest_link"]) is True
    assert check("x", ["dest_link"]) is False
    assert check("x", ["subdir/.."]) is True
    assert check("x", ["subdir/x/../.."]) is True
    assert check("subdir/x", ["./subdir/"]) is True


def test_check_dest_resolved_on_every_check(tree):
    work, outside = tree
    (work / "d1").mkdir()
    os.symlink(work / "d1", work / "dest")
    dests = normalise(["dest"])
    assert check("d1/x", dests) is True
    os.remove(work / "dest")
    os.symlink(outside, work / "dest")
    assert check("d1/x", dests) is False
    assert check(str(outside / "x"), dests) is True


def test_check_dest_looping_raises(tree):
    work, _ = tree
    os.symlink("loop", work / "loop")
    with pytest.raises(OSError) as info:
        check("x", ["loop"])
    assert info.value.errno == errno.ELOOP
    assert info.value.filename == "loop"


def test_check_dir_fd(tree, tmp_path, monkeypatch):
    work, outside = tree
    monkeypatch.chdir(tmp_path)
    fd = os.open(work, os.O_RDONLY)
    try:
        assert check("x", [str(work)], dir_fd=fd) is True
        assert check("../x", [str(work)], dir_fd=fd) is False
        assert check("x", [str(outside)], dir_fd=fd) is False
        assert check(str(outside / "x"), [str(outside)], dir_fd=fd) is True
        # Relative dests still use the cwd, not dir_fd.
        assert check("x", ["work"], dir_fd=fd) is True
        assert check("x", ["."], dir_fd=fd) is True
        assert check("x", ["outside"], dir_fd=fd) is False
    finally:
        os.close(fd)


def test_check_fd_path(tree):
    work, outside = tree
    inside_fd = os.open("f.txt", os.O_WRONLY | os.O_CREAT)
    outside_fd = os.open(outside / "secret.txt", os.O_RDONLY)
    r, w = os.pipe()
    try:
        assert check(inside_fd, ["."]) is True
        assert check(outside_fd, ["."]) is False
        assert check(outside_fd, ["/"]) is True
        assert check(w, ["/"]) is False  # "pipe:[N]" is not a path
    finally:
        for fd in (inside_fd, outside_fd, r, w):
            os.close(fd)
    with pytest.raises(OSError) as info:
        check(inside_fd, ["."])
    assert info.value.errno == errno.EBADF


def test_check_path_kinds(tree):
    assert check(b"x", ["."]) is True
    assert check(b"../x", ["."]) is False
    assert check(pathlib.Path("x"), [b"."]) is True
    assert check(StrSub("x"), [StrSub(".")]) is True
    assert check(FsPath("x"), {pathlib.Path(".")}) is True


def test_check_bad_input(tree):
    with pytest.raises(TypeError, match="ok_dests must be a list of paths, not str"):
        check("x", "/tmp")
    with pytest.raises(TypeError, match="not int"):
        check("x", [1])
    with pytest.raises(ValueError, match="embedded null character"):
        check("x", ["a\0b"])
    with pytest.raises(ValueError, match="embedded null byte"):
        check("a\0b", ["."])
    with pytest.raises(ZeroDivisionError, match="no path for you"):
        check(BadFsPath(), ["."])
    with pytest.raises(TypeError):
        check(1.5, ["."])
    with pytest.raises(OSError) as info:
        check("/" + "a" * PATH_MAX, ["/"])
    assert info.value.errno == errno.ENAMETOOLONG


def test_check_unreadable_dir_is_an_error_not_lexical(tree):
    work, _ = tree
    locked = work / "locked"
    locked.mkdir()
    os.symlink("/etc", locked / "l")
    locked.chmod(0)
    try:
        try:
            os.lstat(locked / "l")
        except PermissionError:
            pass
        else:
            pytest.skip("this process can search any directory (root)")
        with pytest.raises(PermissionError):
            check("locked/l/../x", ["."])
    finally:
        locked.chmod(0o755)


def test_resolve_overlong_component_is_an_error_not_lexical(tree):
    # lstat() fails with ENAMETOOLONG, which might hide a symlink: raise
    # rather than let the '..' that follows cancel the component lexically.
    with pytest.raises(OSError) as info:
        resolve("a" * 300 + "/../x")
    assert info.value.errno == errno.ENAMETOOLONG
    # A final component that is not followed is never looked at.
    work, _ = tree
    assert resolve("a" * 300, follow=False) == str(work / ("a" * 300))


fuzz_part = st.one_of(component, st.text(alphabet="ab.\0/", max_size=300))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(fuzz_part, max_size=40), st.booleans(), st.booleans())
def test_resolve_and_check_never_misbehave(link_tree, parts, follow, absolute):
    # Whatever the input, the answer is an absolute str or a clean error
    # (ValueError for NULs, OSError for ENAMETOOLONG/ELOOP).
    path = "/".join(parts)
    if absolute:
        path = str(link_tree) + "/" + path
    try:
        got = resolve(path, follow=follow)
    except ValueError:
        assert "\0" in path
        return
    except OSError as exc:
        assert exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)
        return
    assert got.startswith("/") and "//" not in got
    assert check(path, [str(link_tree)], follow=follow) in (True, False)

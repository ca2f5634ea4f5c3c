"""The policies used directly and through allow()."""
import os
from pathlib import Path

import pytest

from safepyrun import (AllowPolicy, OpenWritePolicy, PathWritePolicy,
                       PosAllowPolicy, RunPython, allow, chk_dest)

from conftest import run
from trust_helpers import clean_registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")


def test_chk_dest_list_and_data(tmp_path):
    chk_dest(str(tmp_path / "a"), [str(tmp_path)])
    chk_dest(tmp_path / "a", {"ok_dests": [str(tmp_path)]})
    with pytest.raises(PermissionError):
        chk_dest("/etc/passwd", [str(tmp_path)])
    with pytest.raises(PermissionError):
        chk_dest(str(tmp_path / ".." / "x"), [str(tmp_path)])
    chk_dest("/etc/x", {"ok_dests": None})  # write checks off


def test_pos_allow_policy_direct(tmp_path):
    p = PosAllowPolicy(0, "path")
    data = {"ok_dests": [str(tmp_path)]}
    p(None, [str(tmp_path / "a")], {}, data)
    p(None, [], {"path": str(tmp_path / "a")}, data)
    with pytest.raises(PermissionError):
        p(None, ["/etc/x"], {}, data)
    with pytest.raises(PermissionError):
        p(None, [], {"path": "/etc/x"}, data)
    import io
    p(None, [io.BytesIO()], {}, data)  # buffers pass
    p(None, [], {}, data)  # nothing to check


def test_path_write_policy_direct(tmp_path):
    p = PathWritePolicy(target_pos=0)
    data = {"ok_dests": [str(tmp_path)]}
    p(tmp_path / "a", [tmp_path / "b"], {}, data)
    with pytest.raises(PermissionError):
        p(Path("/etc/a"), [], {}, data)
    with pytest.raises(PermissionError):
        p(tmp_path / "a", [Path("/etc/b")], {}, data)
    PathWritePolicy(target_kw="target")(tmp_path / "a", [], {"target": tmp_path / "c"}, data)
    with pytest.raises(PermissionError):
        PathWritePolicy(target_kw="target")(tmp_path / "a", [], {"target": "/etc/c"}, data)


def test_open_write_policy_direct(tmp_path):
    p = OpenWritePolicy()
    data = {"ok_dests": [str(tmp_path)]}
    p(None, ["/etc/passwd"], {}, data)
    p(None, ["/etc/passwd", "r"], {}, data)
    p(None, [str(tmp_path / "a"), "w"], {}, data)
    for mode in ("w", "a", "x", "r+", "wb"):
        with pytest.raises(PermissionError):
            p(None, ["/etc/x", mode], {}, data)
    with pytest.raises(PermissionError):
        p(None, ["/etc/x"], {"mode": "w"}, data)


class Store:
    """A host tool whose write methods take a path (they use os.open so the
    engine's write check is not what refuses)."""

    def save(self, path, text="x"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, text.encode())
        os.close(fd)
        return "saved"


def write_file(file, mode="r"):
    """A trusted tool whose own effect (running `true`) is allowed only
    when its policy accepts the arguments."""
    import subprocess
    subprocess.run(["true"])
    return mode


def test_pos_allow_policy_through_allow_refuses_outside(g, tmp_path):
    allow({Store: [("save", PosAllowPolicy(0, "path"))]})
    g.update(s=Store(), d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    assert run(py, "s.save(d + '/in.txt')") == "saved"
    with pytest.raises(PermissionError, match="is outside ok_dests"):
        run(py, "s.save(path='/etc/h3-out.txt')")
    assert not Path("/etc/h3-out.txt").exists()


def test_path_write_policy_through_allow(g, tmp_path):
    class P:
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return str(self.p)

        def touch_into(self, other):
            return "ok"
    allow({P: [("touch_into", PathWritePolicy(target_pos=0))]})
    g.update(P=P, d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    assert run(py, "P(d + '/a').touch_into(d + '/b')") == "ok"
    with pytest.raises(PermissionError):
        run(py, "P('/etc/a').touch_into(d + '/b')")
    with pytest.raises(PermissionError):
        run(py, "P(d + '/a').touch_into('/etc/b')")


def test_open_write_policy_through_allow(g, tmp_path):
    allow(write_file, allow_policy=OpenWritePolicy())
    g.update(write_file=write_file, d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    assert run(py, "write_file('/etc/passwd')") == "r"
    assert run(py, "write_file(d + '/x', 'w')") == "w"
    with pytest.raises(PermissionError, match="is outside ok_dests"):
        run(py, "write_file('/etc/x', mode='a')")
    with pytest.raises(PermissionError):
        run(py, "write_file('/etc/x', 'w')")


class OnlyCsv(AllowPolicy):
    def __call__(self, obj, args, kwargs, data):
        path = str(args[0] if args else kwargs["path"])
        if not path.endswith(".csv"):
            raise PermissionError(f"OnlyCsv refused {path!r}")


def test_custom_policy_direct():
    OnlyCsv()(None, ["a.csv"], {}, {})
    with pytest.raises(PermissionError):
        OnlyCsv()(None, ["a.sh"], {}, {})
    assert "OnlyCsv" in repr(OnlyCsv())


def test_custom_policy_refuses_a_write_inside_ok_dests(g, tmp_path):
    allow({Store: [("save", OnlyCsv())]})
    g.update(s=Store(), d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    assert run(py, "s.save(d + '/data.csv')") == "saved"
    with pytest.raises(PermissionError, match="OnlyCsv refused"):
        run(py, "s.save(d + '/evil.sh')")
    assert (tmp_path / "data.csv").exists()
    assert not (tmp_path / "evil.sh").exists()
    # outside runs the method is unaffected
    Store().save(str(tmp_path / "host.sh"))
    assert (tmp_path / "host.sh").exists()


def test_custom_policy_sees_data(g, tmp_path):
    class Quota(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            if data.get("h3_readonly"):
                raise PermissionError("read-only session")
    allow({Store: [("save", Quota())]})
    g.update(s=Store(), d=str(tmp_path))
    with pytest.raises(PermissionError, match="read-only session"):
        run(RunPython(g, ok_dests=[str(tmp_path)], h3_readonly=True),
            "s.save(d + '/a.csv')")
    assert not (tmp_path / "a.csv").exists()
    assert run(RunPython(g, ok_dests=[str(tmp_path)]), "s.save(d + '/a.csv')") == "saved"


def test_policy_error_other_than_permission_error_propagates(g, tmp_path):
    class Broken(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            raise ValueError("policy bug")
    allow({Store: [("save", Broken())]})
    g.update(s=Store(), d=str(tmp_path))
    with pytest.raises(ValueError, match="policy bug"):
        run(RunPython(g, ok_dests=[str(tmp_path)]), "s.save(d + '/a.csv')")
    assert not (tmp_path / "a.csv").exists()


def test_function_policy_gates_the_call_before_its_body(g, tmp_path):
    """allow(fn, allow_policy=p): the policy runs when the cell calls fn,
    before fn's body, even when the body's effect is allowed by ok_dests."""
    ran = []

    def only_csv(obj, args, kwargs, data):
        if not str(args[0]).endswith(".csv"):
            raise PermissionError("only .csv files")

    def save(path):
        ran.append(path)
        Path(path).write_text("x")

    allow(save, allow_policy=only_csv)
    g["save"] = save
    py = RunPython(g, ok_dests=[str(tmp_path)])
    target = tmp_path / "x.sh"
    with pytest.raises(PermissionError, match="only .csv files"):
        run(py, f"save({str(target)!r})")
    assert ran == []
    assert not target.exists()
    run(py, f"save({str(tmp_path / 'x.csv')!r})")
    assert (tmp_path / "x.csv").read_text() == "x"
    save(str(target))  # outside a run the policy does not apply
    assert target.exists()

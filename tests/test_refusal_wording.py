"""Refusals say what to do (issue 11, item 3): the audit hook and the write
policies word a refused write the same way, and every refusal ends with the
remedy the host has."""
import pytest

from safepyrun import LocalWritePolicy, PosAllowPolicy, RunPython, allow, chk_dest

from conftest import host_ns, run
from trust_helpers import clean_registry  # noqa: F401

WRITE_REMEDY = (" Remedy: only the host can allow this, by adding the directory "
                "to ok_dests (or trusting the function that writes with "
                "allow()); do not retry it another way.")
TRUST_REMEDY = (" Remedy: only the host can allow this, by trusting a function "
                "that does it with allow(); do not retry it another way.")


def refusal(py, code):
    with pytest.raises(PermissionError) as info:
        run(py, code)
    return str(info.value)


def test_hook_write_refusal_exact(tmp_path):
    ok, out = tmp_path / "ok", tmp_path / "out"
    ok.mkdir(), out.mkdir()
    py = RunPython(host_ns(), ok_dests=[str(ok)])
    target = str(out / "x.txt")
    msg = refusal(py, f"open({target!r}, 'w')")
    assert msg == (f"safepyrun refused to open a file for writing: {target!r} "
                   f"is outside ok_dests [{str(ok)!r}] (audit event 'open'; "
                   "call chain: <pyrun_" + msg.split("<pyrun_")[1].split(">")[0]
                   + ">:1 <module>)." + WRITE_REMEDY)
    assert not (out / "x.txt").exists()


def test_policy_write_refusal_same_wording(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    data = {"ok_dests": (str(ok),)}
    for policy in (PosAllowPolicy(0), LocalWritePolicy(0)):
        with pytest.raises(PermissionError) as info:
            policy(None, ["/etc/x"], {}, data)
        assert str(info.value) == (
            f"safepyrun refused to write a file: '/etc/x' is outside ok_dests "
            f"[{str(ok)!r}] (write policy check)." + WRITE_REMEDY)
    with pytest.raises(PermissionError) as info:
        chk_dest("/etc/x", [])
    assert str(info.value) == (
        "safepyrun refused to write a file: '/etc/x' (no writes are allowed: "
        "ok_dests is empty) (write policy check)." + WRITE_REMEDY)


def test_empty_ok_dests_hook_wording(tmp_path):
    py = RunPython(host_ns(), ok_dests=[])
    target = str(tmp_path / "y.txt")
    msg = refusal(py, f"open({target!r}, 'w')")
    assert msg.startswith(f"safepyrun refused to open a file for writing: "
                          f"{target!r} (no writes are allowed: ok_dests is "
                          "empty) (audit event 'open'; call chain: <pyrun_")
    assert msg.endswith(">:1 <module>)." + WRITE_REMEDY)
    assert not (tmp_path / "y.txt").exists()


def test_program_refusal_names_allow_remedy(tmp_path):
    marker = tmp_path / "m"
    py = RunPython(host_ns(), ok_dests=[str(tmp_path)])
    msg = refusal(py, f"import os\nos.system('touch {marker}')")
    assert msg.startswith("safepyrun refused to run a shell command: "
                          f"'touch {marker}' (audit event 'os.system'; "
                          "call chain: <pyrun_")
    assert msg.endswith(">:2 <module>)." + TRUST_REMEDY)
    assert not marker.exists()


def test_policy_refusal_through_trusted_call_ends_with_remedy(tmp_path,
                                                              clean_registry):
    ok = tmp_path / "ok"
    ok.mkdir()

    def save(path):
        open(path, "w").close()

    allow(save, allow_policy=LocalWritePolicy(0))
    py = RunPython(host_ns(save=save), ok_dests=[str(ok)])
    msg = refusal(py, f"save({str(tmp_path / 'no')!r})")
    assert msg == (f"safepyrun refused the call "
                   "test_policy_refusal_through_trusted_call_ends_with_remedy."
                   "<locals>.save(): safepyrun refused to write a file: "
                   f"{str(tmp_path / 'no')!r} is outside ok_dests "
                   f"[{str(ok)!r}] (write policy check)." + WRITE_REMEDY)
    assert not (tmp_path / "no").exists()

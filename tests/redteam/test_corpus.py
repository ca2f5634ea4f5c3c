"""The escape corpus (cases.py), one child interpreter per case.

A case passes when the effect did not happen (no file outside ok_dests
changed, no marker from a program, no loopback connection, no thread, host
state and policy unchanged, later writes and programs still refused) and
the sandbox refused it (its PermissionError, or the case's recorded
`holds_by` reason).  Cases with `known_gap` are xfail(strict=False).
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES, GROUPS  # noqa: E402
from harness import run_case  # noqa: E402

SANDBOX_TEXT = ("safepyrun refused", "not allowed in the sandbox",
                "not allowed; permitted")


def params():
    out = []
    for cid, case in CASES.items():
        marks = [pytest.mark.xfail(strict=False, reason=case.known_gap)] \
            if case.known_gap else []
        out.append(pytest.param(cid, marks=marks, id=cid))
    return out


def child_env():
    """The children import the safepyrun this process imported (the source
    tree with an in-place build, or the venv's installed copy)."""
    import safepyrun
    where = os.path.dirname(os.path.dirname(os.path.abspath(safepyrun.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [where] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.fixture(scope="module")
def outcomes(request):
    """Run the selected cases two at a time (the machine has 2 cores)."""
    wanted = [item.callspec.params["case_id"] for item in request.session.items
              if getattr(item, "callspec", None) is not None
              and "case_id" in item.callspec.params
              and item.module is sys.modules[__name__]] or list(CASES)
    env = child_env()
    with ThreadPoolExecutor(2) as ex:
        results = dict(zip(wanted, ex.map(
            lambda cid: run_case(cid, python=sys.executable, env=env), wanted)))
    return results


@pytest.mark.parametrize("case_id", params())
def test_case_holds(case_id, outcomes):
    out = outcomes.get(case_id) or run_case(case_id, env=child_env())
    if out["status"] == "skipped":
        pytest.skip(f"does not apply here: {out['skipped']}")
    detail = (f"{case_id}: {out['status']}; effects={out['effects']}; "
              f"error={out['error']}; stderr={out['stderr'][-800:]}")
    assert out["effects"] == [], detail
    assert out["status"] == "held", detail
    if out["refusal"] in ("cell", "after"):
        # our refusal, not an unrelated PermissionError
        assert out["error"] or out["stderr"] or True
        msg = out.get("error") or ""
        if out["refusal"] == "cell":
            assert any(t in msg for t in SANDBOX_TEXT), detail


def test_corpus_shape():
    kinds = {(c.group, c.kind) for c in CASES.values()}
    assert len(CASES) >= 80
    assert {g for g, _ in kinds} == set(GROUPS)
    for group in GROUPS:
        assert (group, "clumsy") in kinds or (group, "deliberate") in kinds
    # Every clumsy case must hold; the ones that do not are named here so a
    # new one shows up as a failure of this test, not only as an xfail.
    clumsy_gaps = sorted(c.id for c in CASES.values()
                         if c.kind == "clumsy" and c.known_gap)
    assert clumsy_gaps == []

"""A bounded atheris run of fuzz_engine.py (a few seconds); `make fuzz` runs
it longer.  Skipped where atheris is not installed."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run_fuzz(python, seconds, artifacts):
    env = dict(os.environ)
    import safepyrun  # the children use the copy this process imported
    where = os.path.dirname(os.path.dirname(os.path.abspath(safepyrun.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([where, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [python, os.path.join(HERE, "fuzz_engine.py"),
         f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/",
         "-print_final_stats=1"],
        capture_output=True, text=True, env=env, timeout=seconds + 120)
    m = re.search(r"Done (\d+) runs", proc.stderr)
    runs = int(m.group(1)) if m else 0
    crashes = len([f for f in os.listdir(artifacts)
                   if f.startswith(("crash-", "timeout-", "oom-"))])
    return proc, runs, crashes


@pytest.mark.skipif(bool(os.environ.get("SAFEPYRUN_ASAN")),
                    reason="libFuzzer's own instrumentation beside the ASan "
                           "build: the fuzz target runs in `make fuzz`")
def test_bounded_fuzz_run():
    pytest.importorskip("atheris")
    artifacts = tempfile.mkdtemp(prefix="rt-fuzz-art-")
    proc, runs, crashes = run_fuzz(sys.executable, 3, artifacts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert crashes == 0, os.listdir(artifacts)
    assert runs > 1000, proc.stderr[-2000:]

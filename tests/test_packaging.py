"""Packaging a user can trust (issue 11, item 6): the sdist and wheel carry
the LICENSE, the metadata names the licence, versions and platform, the sdist
carries the tests, and the build prints no deprecation warnings."""
import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import safepyrun

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(),
                                reason="not run from a source tree")


def test_version_is_a_plain_string():
    assert isinstance(safepyrun.__version__, str)
    assert safepyrun.__version__.count(".") == 2
    assert all(p.isdigit() for p in safepyrun.__version__.split("."))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the sdist and the wheel from a copy of the source tree."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "*.so", "__pycache__",
        ".hypothesis", ".pytest_cache"))
    out = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir",
         str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    sdists = list((tmp / "dist").glob("*.tar.gz"))
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1
    return out.stdout + out.stderr, sdists[0], wheels[0]


@pytest.mark.slow
def test_build_prints_no_deprecation_warning(built):
    log, _, _ = built
    assert "deprecat" not in log.lower(), log


@pytest.mark.slow
def test_sdist_carries_license_sources_and_tests(built):
    _, sdist, _ = built
    top = f"safepyrun-{safepyrun.__version__}/"
    assert sdist.name == f"safepyrun-{safepyrun.__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        license_text = tar.extractfile(top + "LICENSE").read().decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    for needed in ("src/engine.c", "src/state.h", "src/compat.h", "setup.py",
                   "tests/conftest.py", "tests/trust_helpers.py",
                   "tests/test_mcp.py", "tests/mcp_tools/h11_tools.py",
                   "examples/demo.py", "README.md", "SECURITY.md"):
        assert top + needed in names, needed
    assert not [n for n in names if n.endswith((".so", ".pyc"))]


@pytest.mark.slow
def test_wheel_metadata_and_license(built):
    _, _, wheel = built
    dist_info = f"safepyrun-{safepyrun.__version__}.dist-info/"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = email.message_from_bytes(zf.read(dist_info + "METADATA"))
        license_text = zf.read(dist_info + "licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert meta["Version"] == safepyrun.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier")
    for c in ("Operating System :: POSIX :: Linux",
              "Programming Language :: Python :: 3.11",
              "Programming Language :: Python :: 3.12",
              "Programming Language :: Python :: 3.13",
              "Programming Language :: C"):
        assert c in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert meta.get_all("Requires-Dist") and all(
        "extra ==" in r for r in meta.get_all("Requires-Dist"))  # core: none
    assert 'mcp<3,>=2; extra == "mcp"' in meta.get_all("Requires-Dist")
    assert any(n.startswith("safepyrun/_engine") and n.endswith(".so")
               for n in names)
    assert "safepyrun/__main__.py" in names and "safepyrun/py.typed" in names

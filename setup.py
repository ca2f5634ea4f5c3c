"""Build the safepyrun C engine (safepyrun._engine).

Extra compiler flags come from SAFEPYRUN_CFLAGS (the Makefile's debug,
sanitizer and -Werror builds use it); a plain `pip install .` needs nothing.
"""
import glob
import hashlib
import os
import shlex

from setuptools import Extension, setup

extra = shlex.split(os.environ.get("SAFEPYRUN_CFLAGS", ""))
link = [f for f in extra if f.startswith("-fsanitize")]

# The release, sanitizer and debug builds must never share object files:
# each set of flags builds in a directory of its own.
flavour = hashlib.sha256(" ".join(extra).encode()).hexdigest()[:12]

setup(
    options={"build": {"build_base": f"build/{flavour}"}},
    ext_modules=[
        Extension(
            "safepyrun._engine",
            sources=sorted(glob.glob("src/*.c")),
            depends=sorted(glob.glob("src/*.h")),
            extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"] + extra,
            extra_link_args=link,
        )
    ]
)

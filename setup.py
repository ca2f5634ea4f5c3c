"""Build the safepyrun C engine (safepyrun._engine).

Extra compiler flags come from SAFEPYRUN_CFLAGS (the Makefile's debug,
sanitizer and -Werror builds use it); a plain `pip install .` needs nothing.
"""
import glob
import os
import shlex

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ForcedBuildExt(build_ext):
    """Always recompile: the release, sanitizer and debug builds share the
    build directory, and objects built with other flags must not be reused."""

    def initialize_options(self):
        super().initialize_options()
        self.force = True


extra = shlex.split(os.environ.get("SAFEPYRUN_CFLAGS", ""))
link = [f for f in extra if f.startswith("-fsanitize")]

setup(
    cmdclass={"build_ext": ForcedBuildExt},
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

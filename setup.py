"""Builds the compiled frame layer (fastpf/_frames.pyx and the parts it includes, fastpf/frames/*.pxi;
cythonize rebuilds when any part changes).

FASTPF_CYTHON_ANNOTATE=1 writes the Cython annotation HTML; FASTPF_CYTHON_TRACE=1 enables
line tracing for profilers. Generated .c files are not committed.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

trace = os.environ.get("FASTPF_CYTHON_TRACE") == "1"
macros = [("CYTHON_TRACE", "1")] if trace else []

extensions = [
    Extension(
        "fastpf._frames",
        ["fastpf/_frames.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("FASTPF_CYTHON_ANNOTATE") == "1",
        compiler_directives={"linetrace": trace, "embedsignature": True},
    )
)

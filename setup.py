"""Builds the compiled layer: fastpf/_frames.pyx (the codecs, with the parts it includes,
fastpf/frames/*.pxi; cythonize rebuilds when any part changes) fastpf/_pump.pyx (relay pump) and fastpf/_tls.pyx (TLS record loops).

FASTPF_CYTHON_ANNOTATE=1 writes the Cython annotation HTML; FASTPF_CYTHON_TRACE=1 enables
line tracing for profilers. Generated .c files are not committed.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

trace = os.environ.get("FASTPF_CYTHON_TRACE") == "1"
macros = [("CYTHON_TRACE", "1")] if trace else []

FLAGS = ["-O2", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
extensions = [
    # the codecs (frame layouts), and the relay's per-byte pump
    Extension("fastpf._frames", ["fastpf/_frames.pyx"], define_macros=macros, extra_compile_args=FLAGS),
    Extension("fastpf._pump", ["fastpf/_pump.pyx"], define_macros=macros, extra_compile_args=FLAGS),
    # TLS records in and out (bound at run time to the libssl of Python's ssl module)
    Extension("fastpf._tls", ["fastpf/_tls.pyx"], define_macros=macros, extra_compile_args=FLAGS),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("FASTPF_CYTHON_ANNOTATE") == "1",
        compiler_directives={"linetrace": trace, "embedsignature": True},
    )
)

"""Build the Cython hot path. Everything else is plain Python, declared in pyproject.toml.

FASTPROXY_MODULES=_http,_core builds only those modules (handy while one of them is being written).
FASTPROXY_DEBUG=1 makes the debug build: live connection objects are counted (fastproxy/_debug.pxd).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

ALL_MODULES = ["_http", "_accesslog", "_counters", "_shm", "_balancer", "_transport", "_buffers", "_timers", "_loop",
               "_backend", "_pool", "_exchange", "_client", "_filters", "_routing", "_core"]
wanted = os.environ.get("FASTPROXY_MODULES")
modules = wanted.split(",") if wanted else ALL_MODULES
debug = os.environ.get("FASTPROXY_DEBUG") == "1"

extensions = [
    Extension(
        f"fastproxy.{name}",
        [f"fastproxy/{name}.pyx"],
        extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
        define_macros=[("FASTPROXY_DEBUG", "1")] if debug else [],
    )
    for name in modules
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        annotate=bool(os.environ.get("FASTPROXY_ANNOTATE")),
    ),
)

"""Build the Cython hot path. Everything else is plain Python, declared in pyproject.toml.

FASTPROXY_MODULES=_http,_core builds only those modules (handy while one of them is being written).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

ALL_MODULES = ["_http", "_accesslog", "_counters", "_shm", "_balancer", "_core"]
wanted = os.environ.get("FASTPROXY_MODULES")
modules = wanted.split(",") if wanted else ALL_MODULES

extensions = [
    Extension(
        f"fastproxy.{name}",
        [f"fastproxy/{name}.pyx"],
        extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
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

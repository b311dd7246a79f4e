"""Build the Cython fast path in dataplane/ into overlaynet.dataplane.* extension modules."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "overlaynet.dataplane.fastpath",
        sources=[
            "dataplane/fastpath.pyx",
            "dataplane/csrc/fp_frame.c",
            "dataplane/csrc/fp_tables.c",
            "dataplane/csrc/fp_engine.c",
            "dataplane/csrc/fp_tap.c",
            "dataplane/csrc/fp_udp.c",
            "dataplane/csrc/fp_tx.c",
            "dataplane/csrc/fp_rx.c",
            "dataplane/csrc/fp_worker.c",
        ],
        include_dirs=["dataplane/csrc"],
        depends=["dataplane/csrc/fp.h", "dataplane/csrc/fp_engine.h"],
        extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wno-unused-function"],
        extra_link_args=["-pthread"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)

"""Build the Cython fast path in dataplane/ into overlaynet.dataplane.* extension modules."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "overlaynet.dataplane.vxlan",
        sources=["dataplane/vxlan.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)

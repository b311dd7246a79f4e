"""Build the Cython fast path in dataplane/ into overlaynet.dataplane.* extension modules."""

import shlex
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup


def libcrypto_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags for OpenSSL's libcrypto (Debian: libssl-dev), from pkg-config if it
    knows it, else plain -lcrypto."""
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", "libcrypto"], check=True, capture_output=True,
                                text=True).stdout
        libs = subprocess.run(["pkg-config", "--libs", "libcrypto"], check=True, capture_output=True,
                              text=True).stdout
        return shlex.split(cflags), shlex.split(libs)
    except (OSError, subprocess.CalledProcessError):
        return [], ["-lcrypto"]


CRYPTO_CFLAGS, CRYPTO_LIBS = libcrypto_flags()
COMPILE_ARGS = ["-O3", "-std=gnu11", "-Wall", "-Wno-unused-function"]

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
            "dataplane/csrc/fp_sa.c",
            "dataplane/csrc/fp_esp.c",
        ],
        include_dirs=["dataplane/csrc"],
        depends=["dataplane/csrc/fp.h", "dataplane/csrc/fp_engine.h"],
        extra_compile_args=COMPILE_ARGS + CRYPTO_CFLAGS,
        extra_link_args=["-pthread"] + CRYPTO_LIBS,
    ),
    # The ESP codec alone (docs/encryption.md): for tests, the control side and measurements.
    Extension(
        "overlaynet.dataplane.esp",
        sources=["dataplane/esp.pyx", "dataplane/csrc/fp_esp.c"],
        include_dirs=["dataplane/csrc"],
        depends=["dataplane/csrc/fp.h"],
        extra_compile_args=COMPILE_ARGS + CRYPTO_CFLAGS,
        extra_link_args=CRYPTO_LIBS,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)

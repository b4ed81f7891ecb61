"""Build script for segone.

The Python package lives in ``engine/`` (imported as ``segone``) and the
kernels in ``kernels/`` (imported as ``segone.kernels``).  The Cython
extensions are built from ``kernels/*.pyx``.

OpenMP is probed at build time (compile, link and run a tiny program).  When
the probe fails the kernels are built serial and a warning says so.  Set
``SEGONE_NO_OPENMP=1`` to skip OpenMP on purpose.  Set
``SEGONE_CYTHON_DEBUG=1`` to turn bounds checks back on for debugging.

No ``-march=native``: binaries stay portable; CPU-specific code paths are
chosen at run time inside the kernels.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}
if os.environ.get("SEGONE_CYTHON_DEBUG", "0") not in ("", "0"):
    CYTHON_DIRECTIVES.update(boundscheck=True, wraparound=True, initializedcheck=True)


OPENMP_TEST = textwrap.dedent(
    r"""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\n", n > 0);
        return 0;
    }
    """
)


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if unavailable."""
    if os.environ.get("SEGONE_NO_OPENMP", "0") not in ("", "0"):
        print("segone: SEGONE_NO_OPENMP set: building serial kernels")
        return None
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    elif compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="segone-omp-")
    try:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                exe = os.path.join(tmp, "omp_probe")
                compiler.link_executable(objs, exe, extra_postargs=lflags)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip() == "1":
                    return cflags, lflags
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP"
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


class BuildExt(build_ext):
    """build_ext that probes OpenMP and applies portable optimisation flags."""

    def build_extensions(self):
        flags = _openmp_flags(self.compiler)
        if flags is None and os.environ.get("SEGONE_NO_OPENMP", "0") in ("", "0"):
            warnings.warn(
                "segone: the C compiler does not support OpenMP; the Cython "
                "kernels are built serial (n_threads is ignored by the cython "
                "backend). Install an OpenMP runtime (libgomp / libomp) and "
                "rebuild for multi-threaded kernels.",
                stacklevel=1,
            )
        is_msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            if not is_msvc:
                ext.extra_compile_args += ["-O3", "-fno-math-errno", "-Wno-unused-function"]
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
            ext.define_macros.append(("SEGONE_OPENMP", "1" if flags is not None else "0"))
        super().build_extensions()


def extensions():
    exts = []
    for pyx in sorted(glob(os.path.join("kernels", "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        exts.append(
            Extension(
                f"segone.kernels.{name}",
                [pyx],
                include_dirs=[np.get_include(), "kernels"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
            )
        )
    return cythonize(
        exts,
        compiler_directives=CYTHON_DIRECTIVES,
        build_dir=os.path.join("build", "cython"),
        quiet=True,
    )


setup(
    packages=["segone", "segone.kernels", "segone.describe", "segone.report", "segone.io", "segone.privacy",
              "segone.track"],
    package_dir={"segone": "engine", "segone.kernels": "kernels"},
    package_data={"segone.kernels": ["*.pyx", "*.pxd", "*.h"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)

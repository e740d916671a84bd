"""Build of the optional native extension ``layerscope._C``.

The extension is optional: when no C++ compiler is available the build carries on without it and
layerscope falls back to its torch kernels with one warning at run time. Without OpenMP it is built
single-threaded. It never links against PyTorch; tensors reach it through the buffer protocol.
Flags are portable (no -march=native unless LAYERSCOPE_NATIVE_ARCH=1 for a local build): the hot
loops carry AVX-512/AVX2/baseline clones chosen at load time (see csrc/common.hpp).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
OPENMP_FLAGS = {"/openmp", "-fopenmp"}


class OptionalBuildExt(build_ext):
    """Builds the extension; retries without OpenMP; on failure says why and carries on (torch path)."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            return
        except Exception as exc:  # compiler or OpenMP missing, …
            first = exc
        if OPENMP_FLAGS & set(ext.extra_compile_args):
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a not in OPENMP_FLAGS]
            ext.extra_link_args = [a for a in ext.extra_link_args if a not in OPENMP_FLAGS]
            try:
                super().build_extension(ext)
                sys.stderr.write(f"\nlayerscope: {ext.name} built WITHOUT OpenMP (one thread): {first}\n\n")
                return
            except Exception as exc:
                first = exc
        sys.stderr.write(
            f"\nlayerscope: the native extension {ext.name} was not built ({first}).\n"
            "layerscope will use its torch kernels instead. Install a C++17 compiler to build it.\n\n"
        )


def _flags() -> tuple[list[str], list[str]]:
    if sys.platform == "win32":  # MSVC
        return ["/O2", "/openmp", "/fp:precise"], []
    compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off"]
    if os.environ.get("LAYERSCOPE_NATIVE_ARCH") == "1":  # local builds only; never in a wheel
        compile_args.append("-march=native")
    return compile_args, ["-fopenmp"]


def _extensions():
    if not SOURCES or os.environ.get("LAYERSCOPE_NO_NATIVE") == "1":
        return []
    from pybind11.setup_helpers import Pybind11Extension

    compile_args, link_args = _flags()
    ext = Pybind11Extension(
        "layerscope._C",
        SOURCES,
        include_dirs=["csrc"],
        depends=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.hpp")),
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        cxx_std=17,
    )
    ext.optional = True
    return [ext]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})

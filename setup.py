"""Build of the optional native extension ``layerscope._C``.

The extension is optional: when no C++ compiler (or OpenMP) is available the build carries on
without it and layerscope falls back to its torch kernels with one warning at run time.
It never links against PyTorch; tensors reach it through the buffer protocol.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))


class OptionalBuildExt(build_ext):
    """Builds the extension, and on failure says why and carries on (torch path only)."""

    def build_extension(self, ext):  # noqa: D401 - setuptools hook
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler missing, OpenMP missing, …
            sys.stderr.write(
                f"\nlayerscope: the native extension {ext.name} was not built ({exc}).\n"
                "layerscope will use its torch kernels instead. Install a C++17 compiler to build it.\n\n"
            )


def _extensions():
    if not SOURCES or os.environ.get("LAYERSCOPE_NO_NATIVE") == "1":
        return []
    from pybind11.setup_helpers import Pybind11Extension

    compile_args = ["-O3", "-fopenmp", "-fno-math-errno"]
    link_args = ["-fopenmp"]
    if os.environ.get("LAYERSCOPE_NATIVE_ARCH") == "1":  # local builds only; never in a wheel
        compile_args.append("-march=native")
    ext = Pybind11Extension(
        "layerscope._C",
        SOURCES,
        include_dirs=["csrc"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        cxx_std=17,
    )
    ext.optional = True
    return [ext]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})

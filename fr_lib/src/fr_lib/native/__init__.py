"""fr_lib's native CPU backend: building and loading its operators.

``python -m fr_lib.native build [--force]`` compiles them (with a progress
line and the time it took) into the cache that :mod:`fr_lib.ops` loads from;
``scripts/setup.sh`` and ``fr_install`` run it after installing. Everything
here is :mod:`fr_lib.ops`; see there for the cache, the cached build failure,
``FR_LIB_NATIVE``, ``FR_LIB_ISA`` and ``FR_LIB_CXXFLAGS``.
"""
from ..ops import (NativeBuildError, NativeExportError, available, build,  # noqa: F401
                   failure_path, library_path, load, plain_symbol)

__all__ = ["NativeBuildError", "NativeExportError", "available", "build",
           "failure_path", "library_path", "load", "plain_symbol"]

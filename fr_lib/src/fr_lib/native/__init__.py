"""fr_lib's native CPU backend: the explicit switch, the build, the loading.

- :func:`to_native` / :func:`to_mxnet` / :func:`mxnet_engine` and the one
  ``engine=`` vocabulary (``'auto' | 'native' | 'mxnet'``):
  :mod:`fr_lib.native.backend`; the native forms of the blocks:
  :mod:`fr_lib.native.blocks`.
- ``python -m fr_lib.native build [--force]`` compiles the operators (with a
  progress line and the time it took) into the cache that :mod:`fr_lib.ops`
  loads from; ``scripts/setup.sh`` and ``fr_install`` run it after
  installing. See :mod:`fr_lib.ops` for the cache, the cached build failure,
  ``FR_LIB_NATIVE``, ``FR_LIB_ISA`` and ``FR_LIB_CXXFLAGS``.
"""
from ..ops import (NativeBuildError, NativeExportError, available, build,  # noqa: F401
                   failure_path, library_path, load, load_error, plain_symbol)
from .backend import (ENGINES, check_engine, mxnet_engine, native_blocks,  # noqa: F401
                      resolve_engine, to_mxnet, to_native)

__all__ = ["ENGINES", "NativeBuildError", "NativeExportError", "available", "build",
           "check_engine", "failure_path", "library_path", "load", "load_error",
           "mxnet_engine", "native_blocks", "plain_symbol", "resolve_engine",
           "to_mxnet", "to_native"]

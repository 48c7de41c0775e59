"""Native CPU operators, compiled on first use and loaded into MXNet.

Why: MXNet 1.9 has no fast per-channel PReLU on CPU. Its own
``LeakyReLU(act_type='prelu')`` spends most of a MobileFaceNet training step
in its backward pass, and any composition of broadcast operators makes four
or more passes over every activation. ``fr_prelu`` does one pass forward and
one backward; with it a MobileFaceNet + ArcFace training step on 2 cores is
about 2x faster (``benchmarks/bench_train.py``).

A third operator, ``fr_fused_net`` (``csrc/fr_fused.cc``), runs a whole
MobileFaceNet forward pass for inference: see :mod:`fr_lib.model_zoo.fused`.
``fr_pw_conv``, ``fr_dw_conv`` and ``fr_bn_act`` (``csrc/fr_train.cc``) are
channels-last training operators with backward passes, and ``fr_pw_bn_act``
and ``fr_dw_bn_act`` each a convolution with its BatchNorm + PReLU in one
operator (fewer passes over the activations), used by
:class:`fr_lib.model_zoo.NativeTrainingView` (the trainer's default engine
for MobileFaceNet on CPU).

How: the C++ sources ``csrc/*.cc`` ship with the package. ``scripts/setup.sh``
and ``fr_install`` build them once after installing, as does
``python -m fr_lib.native build`` (or ``python -m fr_lib.ops``), with a
progress line and the time it took. Otherwise the first call that needs them
compiles them with the system C++ compiler (``$CXX``, ``c++``, ``g++`` or
``clang++``; 30 s on an idle 2-core machine, more on a loaded one) and says so
on stderr before it starts. They are compiled against the headers that come
with the ``mxnet`` wheel (``mxnet/include/mxnet/lib_api.h``) and loaded with
:func:`mxnet.library.load`. The library is cached under
``~/.cache/fr_lib/native/<key>/`` (``FR_LIB_NATIVE_DIR`` moves it); the key
hashes the sources, the MXNet version, the compiler (path and modification
time) and its command, so an upgrade rebuilds. It is written to a temporary
name and renamed, so concurrent builds (several notebooks, distributed
workers) cannot load a half-written file.

A failed build is cached too (``libfr_ops.so.failed`` next to where the
library would be, holding the compiler's last lines): it is reported in full
once, and later processes fall back to MXNet at once, without compiling again,
until the sources or the compiler change or ``python -m fr_lib.native build
--force`` retries.

The hot loops are compiled three times (GCC ``target_clones``: AVX-512,
AVX2+FMA, baseline x86-64) and one is picked when the library loads.
``FR_LIB_ISA=avx512|avx2|generic`` builds (and caches separately) a library
with only that variant, so the tests execute every one of them;
``FR_LIB_CXXFLAGS`` adds compiler flags (e.g. ``-Wall``).

Nothing uses them implicitly: fr_lib's blocks run their MXNet formulas
unless converted with :func:`fr_lib.native.to_native` (the trainer, the
evaluator and ``prepare_for_inference`` do so on CPU with ``engine='auto'``).
Everything degrades gracefully: without a compiler or with
``FR_LIB_NATIVE=0``, ``engine='auto'`` means the MXNet formulas (same
results, slower on CPU). Graphs
meant for other programs (:func:`fr_lib.deploy.export_model`, ONNX) are
always traced without native operators, and once the operators are loaded a
plain ``HybridBlock.export`` writes ``fr_prelu`` as MXNet's own
``LeakyReLU(act_type='prelu')`` (the same function) and refuses to write any
other native operator (:class:`NativeExportError` says what to do instead).

Usage::

    python -m fr_lib.native build [--force]   # build (if needed) and report
    python -m fr_lib.ops [--force]            # the same
"""
# Three parts: library.py (compile and cache the library), loading.py (load it
# into MXNet once, or fall back), export.py (exported graphs stay plain MXNet).
from .export import NativeExportError, plain_symbol
from .library import (NativeBuildError, _compiler, _cpu_flags, build,  # noqa: F401
                      failure_path, library_path, source_path)
from .loading import _state, available, load, load_error, native_ops, use_native  # noqa: F401

__all__ = ["NativeBuildError", "NativeExportError", "build", "load",
           "available", "load_error", "use_native", "native_ops", "source_path",
           "library_path", "plain_symbol"]

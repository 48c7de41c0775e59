"""Building fr_lib's native operators: the progress and first-use lines, a
failed build cached with its reason (printed in full once, then read at once
without compiling), ``--force``; every clone of the hot loops executed
(``FR_LIB_ISA`` forces one) and FMA in the AVX2 clone; a clang++ build with
``-Wall -Werror``.

The builds run in subprocesses (the native library cannot be unloaded). The
forced-clone and clang builds are cached like any other build, so they cost
a compile (about 40 s each on 2 cores) only the first time.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from fr_lib import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def _env(**changes):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _python(code, env, timeout=900):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def failing_compiler(tmp_path):
    """A C++ "compiler" that counts its calls and fails with a known error."""
    calls = tmp_path / "calls"
    cxx = tmp_path / "bad-c++"
    cxx.write_text("#!/bin/sh\n"
                   f"echo x >> {calls}\n"
                   "echo 'fr_ops.cc:1:1: error: simulated compiler failure 4711' >&2\n"
                   "exit 1\n")
    cxx.chmod(0o755)
    return str(cxx), calls


def _calls(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


LOAD = "from fr_lib import ops; print('loaded', ops.load())"


def test_failed_build_is_cached_with_its_reason(tmp_path, failing_compiler):
    cxx, calls = failing_compiler
    env = _env(CXX=cxx, FR_LIB_NATIVE_DIR=str(tmp_path / "cache"),
               FR_LIB_NATIVE=None, FR_LIB_ISA=None, FR_LIB_CXXFLAGS=None)
    first = _python(LOAD, env)
    assert first.returncode == 0, first.stderr
    assert "loaded False" in first.stdout
    # said before compiling, with where to prebuild
    assert "compiling fr_lib's native CPU operators once" in first.stderr
    assert "python -m fr_lib.native build" in first.stderr
    assert "FAILED after" in first.stderr
    assert first.stderr.count("simulated compiler failure 4711") == 1
    compiled = _calls(calls)
    assert compiled >= 1
    markers = list((tmp_path / "cache").glob("*/libfr_ops.so.failed"))
    assert len(markers) == 1
    assert "simulated compiler failure 4711" in markers[0].read_text()

    # a later process: no compile, no first-use line, one short warning
    second = _python(LOAD, env)
    assert "loaded False" in second.stdout
    assert _calls(calls) == compiled
    assert "compiling" not in second.stderr
    assert "an earlier build failed" in second.stderr
    assert str(markers[0]) in second.stderr
    assert "--force" in second.stderr

    # other flags are another build: compiled again
    third = _python(LOAD, _env(**{**env, "FR_LIB_CXXFLAGS": "-DFR_TEST_KEY=1"}))
    assert "loaded False" in third.stdout and _calls(calls) > compiled
    compiled = _calls(calls)

    # --force retries (and fails again, exit status 1, the reason printed)
    forced = subprocess.run([sys.executable, "-m", "fr_lib.native", "build", "--force"],
                            env=env, capture_output=True, text=True, cwd=ROOT)
    assert forced.returncode == 1
    assert _calls(calls) > compiled
    assert "simulated compiler failure 4711" in forced.stderr


def test_cli_usage_and_bad_isa(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fr_lib.native"], env=_env(),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "python -m fr_lib.native build" in out.stderr
    bad = _python(LOAD, _env(FR_LIB_ISA="sse9", FR_LIB_NATIVE_DIR=str(tmp_path)))
    assert "loaded False" in bad.stdout
    assert "FR_LIB_ISA='sse9'" in bad.stderr and "avx2" in bad.stderr


def _cpu_has(*flags):
    return all(f in (ops._cpu_flags() or ()) for f in flags)


needs_native = pytest.mark.skipif(not ops.available(),
                                  reason="fr_lib native operators unavailable")
x86 = pytest.mark.skipif(not _cpu_has("avx2", "fma"),
                         reason="needs an x86-64 CPU with AVX2 and FMA")

# A small subset of the native checks: the fused MobileFaceNet against
# MXNet's operators (GEMM and depthwise clones, vector and row tails), a
# GEMM-based training operator and the BN+PReLU one against NumPy, and
# fr_prelu against NumPy.
SUBSET = [os.path.join(TESTS, "test_fused.py") + "::test_odd_widths_and_strides",
          os.path.join(TESTS, "test_native_train.py") + "::test_pw_conv_matches_numpy",
          os.path.join(TESTS, "test_native_train.py") + "::test_bn_act_forward_and_gradient",
          os.path.join(TESTS, "test_native_fused.py"),
          os.path.join(TESTS, "test_ops.py") + "::test_prelu_matches_numpy"]


def _build_and_check(env, expect_in_stderr=(), skip_if=None):
    """Build (or reuse) the library for ``env`` in a fresh process, check
    it is not the default build, then run SUBSET under it. A cached failure
    of an earlier run is retried once (the environment may have been fixed
    since); ``skip_if(stderr)`` returns a reason to skip instead of failing."""
    built = _python("""
        import os, time
        from fr_lib import ops
        start = time.perf_counter()
        if os.path.exists(ops.failure_path()):
            ops.build(force=True)
        assert ops.load(), ops._state["error"]
        print("LIB", ops.library_path())
        print("SECONDS", time.perf_counter() - start)
        """, env)
    if built.returncode != 0 and skip_if is not None and skip_if(built.stderr):
        pytest.skip(skip_if(built.stderr))
    assert built.returncode == 0, built.stderr[-3000:]
    path = re.search(r"^LIB (.*)$", built.stdout, re.M).group(1)
    assert path != ops.library_path()  # a build of its own, cached separately
    for text in expect_in_stderr:
        if "built in" in built.stderr:  # compiled now, not read from the cache
            assert text in built.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *SUBSET], env=env, capture_output=True, text=True,
                         timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "skipped" not in run.stdout.splitlines()[-1], run.stdout[-1000:]
    return path


@needs_native
@x86
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_forced_clone_runs_the_native_checks(isa):
    """The AVX-512 clone is what the default build runs on an AVX-512 CPU
    (the rest of the suite); these force the other two."""
    path = _build_and_check(_env(FR_LIB_ISA=isa, FR_LIB_NATIVE=None, CXX=None,
                                 FR_LIB_CXXFLAGS=None),
                            expect_in_stderr=(f"clones: {isa}",))
    objdump = shutil.which("objdump")
    if objdump is None or "clang" in os.path.basename(ops._compiler() or ""):
        return
    # the library holds that clone only: no AVX-512 registers; AVX2 with FMA,
    # or (generic) no AVX at all
    code = subprocess.run([objdump, "-d", "--no-show-raw-insn", path],
                          capture_output=True, text=True, check=True).stdout
    assert "zmm" not in code
    if isa == "avx2":
        assert code.count("vfmadd") > 100 and "ymm" in code
    else:
        assert "ymm" not in code and "vfmadd" not in code


@needs_native
@x86
def test_avx2_clone_uses_fma():
    """``target_clones("avx2,fma")``: the AVX2 clone of the GEMM (GCC names
    it after its last feature, ``.fma``) contains fused multiply-adds."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) not installed")
    if "clang" in os.path.basename(ops._compiler() or ""):
        pytest.skip("the default build uses clang++ (no target_clones)")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", ops.library_path()],
                          capture_output=True, text=True, check=True).stdout
    counts, name = {}, None
    for line in text.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            name = head.group(1)
        elif name and "vfmadd" in line:
            counts[name] = counts.get(name, 0) + 1
    gemm = {n: c for n, c in counts.items() if "4Gemm" in n}
    avx2 = [c for n, c in gemm.items() if n.endswith((".fma", ".avx2"))]
    assert avx2 and avx2[0] > 50, gemm
    assert any(n.endswith(".avx512f") for n in gemm), gemm


# -Wall warnings are errors; clang's optimizer notes that a loop marked
# `omp simd` was not vectorized (-Wpass-failed) stay warnings: they are about
# speed, and the GCC build is the fast one (target_clones)
CLANG_FLAGS = "-Wall -Werror -Wno-error=pass-failed"


@needs_native
def test_clang_build_with_warnings_runs_the_checks():
    clang = shutil.which("clang++")
    if clang is None:
        pytest.skip("clang++ not installed (Debian/Ubuntu: apt install clang)")
    env = _env(CXX=clang, FR_LIB_CXXFLAGS=CLANG_FLAGS, FR_LIB_ISA=None,
               FR_LIB_NATIVE=None)
    start = time.perf_counter()

    def no_openmp(stderr):
        if "'omp.h' file not found" in stderr or "-lomp" in stderr:
            return "clang's OpenMP runtime is missing (Debian/Ubuntu: apt install libomp-dev)"
        return None

    _build_and_check(env, expect_in_stderr=("clang++",), skip_if=no_openmp)
    assert time.perf_counter() - start < 900


def test_killed_compiler_is_not_cached(tmp_path):
    """A compiler killed by a signal (out of memory, interrupted) says
    nothing about the sources: the next process tries again."""
    cxx = tmp_path / "killed-c++"
    cxx.write_text("#!/bin/sh\nkill -9 $$\n")
    cxx.chmod(0o755)
    env = _env(CXX=str(cxx), FR_LIB_NATIVE_DIR=str(tmp_path / "cache"),
               FR_LIB_NATIVE=None, FR_LIB_ISA=None, FR_LIB_CXXFLAGS=None)
    out = _python(LOAD, env)
    assert "loaded False" in out.stdout
    assert "not cached: the compiler was killed" in out.stderr
    assert not list((tmp_path / "cache").rglob("*.failed"))
    again = _python(LOAD, env)
    assert "compiling fr_lib's native CPU operators once" in again.stderr

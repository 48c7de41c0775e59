"""The compatibility layer: NumPy 1.x and 2.x, distutils, CUDA 11 preload, clear errors."""
import ast
import math
import os
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fr_numpy_compat
from fr_lib import _compat
from fr_lib._compat import CompatibilityError


def fake_numpy2():
    """The real NumPy minus every name NumPy 2.0 removed (as NumPy 2 has it)."""
    fake = types.ModuleType("numpy")
    fake.__dict__.update({k: v for k, v in np.__dict__.items()
                          if k not in fr_numpy_compat.ALIASES
                          and k not in ("_fr_numpy_compat", "__deprecated_attrs__",
                                        "__getattr__")})
    fake.__version__ = "2.2.6"
    fake.bool = np.bool_  # NumPy 2.0 brought np.bool back
    return fake


def test_aliases_restored_for_numpy2():
    fake = fake_numpy2()
    assert not hasattr(fake, "PZERO") and not hasattr(fake, "mirr")
    _compat.check_numpy(fake)
    assert fake.bool is np.bool_  # NumPy 2's own, left alone
    assert fake.PZERO == 0.0 and math.copysign(1, fake.PZERO) == 1
    assert fake.NZERO == 0.0 and math.copysign(1, fake.NZERO) == -1
    assert fake.PINF == fake.Inf == fake.Infinity == math.inf
    assert fake.NINF == -math.inf
    assert math.isnan(fake.NAN) and math.isnan(fake.NaN)
    assert fake.float_ is np.float64 and fake.complex_ is np.complex128
    assert fake.compat.basestring is str
    a = np.array([[3, 1], [2, 5], [1, 4]])
    assert_allclose(fake.msort(a), [[1, 1], [2, 4], [3, 5]])
    assert fake.alltrue([True, True]) and not fake.alltrue([True, False])
    assert fr_numpy_compat.patched(fake)


def test_bool_alias_for_numpy_1_24_to_1_26():
    fake = fake_numpy2()
    del fake.bool
    fake.__version__ = "1.26.4"
    _compat.check_numpy(fake)
    assert fake.bool is np.bool_


def test_names_numpy_still_has_are_not_replaced():
    fake = fake_numpy2()
    sentinel = object()
    fake.NaN = sentinel
    fake.__deprecated_attrs__ = {"Inf": None}  # NumPy 1.20-1.23 serve these
    added = fr_numpy_compat.patch(fake)
    assert fake.NaN is sentinel and "NaN" not in added
    assert "Inf" not in fake.__dict__ and "PZERO" in added


def test_too_old_numpy_is_refused():
    fake = fake_numpy2()
    fake.__version__ = "1.20.3"
    with pytest.raises(CompatibilityError, match="NumPy >= 1.21, found 1.20.3"):
        _compat.check_numpy(fake)


def test_financial_functions_match_hand_calculations():
    import fr_numpy_financial as f  # what fr_numpy_compat adds as np.fv, np.pmt, ...
    # payment of a 15-year, 200,000 loan at 7.5 % a year, monthly
    r, n, pv = 0.075 / 12, 15 * 12, 200000.0
    by_hand = -pv * r * (1 + r) ** n / ((1 + r) ** n - 1)
    assert_allclose(f._pmt(r, n, pv), by_hand, rtol=1e-12)
    assert_allclose(f._pmt(r, n, pv), -1854.0247200054619, rtol=1e-12)  # NumPy 1.17 docs
    assert_allclose(f._pmt(0.0, 10, 1000), -100.0)
    # fv and pv invert each other
    fv = f._fv(0.05 / 12, 120, -100, -100)
    assert_allclose(fv, 15692.928894335748, rtol=1e-12)  # NumPy 1.17 docs
    assert_allclose(f._pv(0.05 / 12, 120, -100, fv), -100.0, rtol=1e-12)
    # npv: the first value is at time 0
    values = [-100, 39, 59, 55, 20]
    assert_allclose(f._npv(0.281, values),
                    sum(v / 1.281 ** t for t, v in enumerate(values)), atol=1e-12)
    assert_allclose(f._npv(0.281, values), -0.0084785916384548798, atol=1e-12)
    # principal + interest = payment; the principal parts repay the loan
    per = np.arange(1, 61)
    ppmt = f._ppmt(0.1 / 12, per, 60, 55000)
    ipmt = f._ipmt(0.1 / 12, per, 60, 55000)
    assert_allclose(ppmt + ipmt, f._pmt(0.1 / 12, 60, 55000), rtol=1e-12)
    assert_allclose(ppmt.sum(), -55000, rtol=1e-10)
    assert_allclose(ipmt[0], -55000 * 0.1 / 12, rtol=1e-12)  # first month's interest
    # rate: 3500 grows to 10000 in 10 periods
    rate = f._rate(10, 0, -3500, 10000)
    assert_allclose(3500 * (1 + rate) ** 10, 10000, rtol=1e-9)
    # mirr by its definition
    cash = np.array([-4500, -800, 800, 800, 600, 600, 800, 800, 700, 3000.0])
    fin, rein = 0.08, 0.055
    pos = sum(v * (1 + rein) ** (len(cash) - 1 - t) for t, v in enumerate(cash) if v > 0)
    neg = -sum(v / (1 + fin) ** t for t, v in enumerate(cash) if v < 0)
    assert_allclose(f._mirr(cash, fin, rein),
                    (pos / neg) ** (1 / (len(cash) - 1)) - 1, rtol=1e-12)
    assert math.isnan(f._mirr([1, 2, 3], fin, rein))


def mxnet_numpy_names():
    """Every ``onp.X`` / ``_np.X`` that MXNet's Python code reads at import."""
    import importlib.util
    spec = importlib.util.find_spec("mxnet")
    root = os.path.dirname(spec.origin)
    names = set()
    for rel in ["numpy/fallback.py", "numpy/utils.py", "ndarray/numpy/_op.py",
                "symbol/numpy/_symbol.py", "ndarray/ndarray.py"]:
        tree = ast.parse(open(os.path.join(root, rel), encoding="utf-8").read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ("onp", "_np")):
                names.add(node.attr)
    return names


def test_every_numpy_name_mxnet_uses_exists():
    names = mxnet_numpy_names()
    assert {"PZERO", "NAN", "mirr", "msort", "bool", "compat"} <= names
    fr_numpy_compat.patch(np)
    missing = sorted(n for n in names if not hasattr(np, n))
    assert not missing, f"NumPy {np.__version__} lacks {missing}"


def run_python(code, env=None, args=()):
    env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_pth_hook_is_installed_and_lazy():
    # `import fr_lib` (this test module did it) re-creates the .pth if missing.
    import sysconfig
    pth = os.path.join(sysconfig.get_paths()["purelib"], fr_numpy_compat.PTH_NAME)
    assert os.path.exists(pth)
    result = run_python("""
        import sys
        assert 'fr_numpy_compat' in sys.modules, 'the .pth did not run'
        assert 'numpy' not in sys.modules, 'numpy imported at start-up'
        import numpy
        print(numpy.__dict__.get('_fr_numpy_compat') is not None)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    off = run_python("import numpy; print(hasattr(numpy, '_fr_numpy_compat'))",
                     env={"FR_NUMPY_COMPAT": "0"})
    assert off.stdout.split() == ["False"], off.stderr


def test_hook_patches_a_numpy2_at_import(tmp_path):
    # A stand-in NumPy 2 package first on the path: the hook must patch
    # whatever `import numpy` finds, before the importer sees it.
    pkg = tmp_path / "numpy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        __version__ = '2.9.0'
        bool_ = bool
        float64, complex128 = float, complex
        def __getattr__(name):
            raise AttributeError(f'`np.{name}` was removed in the NumPy 2.0 release.')
    """))
    result = run_python("""
        import numpy
        assert numpy.__version__ == '2.9.0', numpy.__file__
        print(numpy.PZERO, numpy.NaN, numpy.Inf, numpy.float_ is float,
              numpy.bool is bool)
    """, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.0", "nan", "inf", "True", "True"]


def test_stale_pth_without_the_module_is_silent(tmp_path):
    (tmp_path / fr_numpy_compat.PTH_NAME).write_text(fr_numpy_compat.pth_line())
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import site; site.addsitedir({str(tmp_path)!r}); print('ok')"],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert result.stdout.strip() == "ok" and result.stderr == "", result.stderr


def test_mxnet_alone_imports_and_computes():
    # No fr_lib: what a kvstore server process or `python -c "import mxnet"` does.
    result = run_python("""
        import mxnet as mx, numpy as np
        assert 'fr_lib' not in __import__('sys').modules
        print(mx.np.PZERO, (mx.nd.ones((2, 3)) * 2).sum().asscalar(), np.__version__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["0.0", "12.0"]


def test_missing_mxnet_gives_install_command():
    result = run_python("""
        import importlib.util
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, package=None: (
            None if name == "mxnet" else _find(name, package))
        import fr_lib
    """)
    assert result.returncode != 0
    assert "fr_lib needs MXNet 1.9.1, which is not installed" in result.stderr
    assert "python -m fr_install" in result.stderr
    assert "pip install --no-deps mxnet==1.9.1" in result.stderr


def test_gpu_build_missing_cuda_library_names_the_gpu_install(tmp_path):
    # A stand-in mxnet-cu117 whose libmxnet.so cannot find libnvToolsExt.
    (tmp_path / "mxnet").mkdir()
    (tmp_path / "mxnet" / "__init__.py").write_text(
        "raise OSError('libnvToolsExt.so.1: cannot open shared object file: "
        "No such file or directory')\n")
    info = tmp_path / "mxnet_cu117-1.9.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mxnet-cu117\n"
                                   "Version: 1.9.1\n")
    result = run_python("import fr_lib", env={
        "PYTHONPATH": str(tmp_path), "FR_CUDA11_DIR": str(tmp_path / "cuda11")})
    assert result.returncode != 0
    err = result.stderr
    assert "mxnet-cu117" in err and "libnvToolsExt.so.1" in err
    assert "fr_install" in err and "CUDA 11" in err
    assert "pip install --no-deps mxnet==" not in err  # not the CPU build


def build_so(cc, out, source, needed=(), soname=None, libdir=None):
    cmd = [cc, "-shared", "-fPIC", "-o", str(out), "-x", "c", "-"]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    cmd += ["-x", "none"] + [str(path) for path in needed]
    subprocess.run(cmd, input=source, text=True, check=True, capture_output=True)


def test_cuda11_preload_loads_in_dependency_order(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build stub libraries")
    # libfra (base) <- libfrb (needs libfra); named so that sorting tries b
    # first, as cuDNN's sub-libraries come before what they need.
    root = tmp_path / "cuda11"
    a = root / "nvidia" / "zz_base" / "lib" / "libfra.so.1"
    b = root / "nvidia" / "aa_user" / "lib" / "libfrb.so.1"
    for p in (a, b):
        p.parent.mkdir(parents=True)
    build_so(cc, a, "int fra(void) { return 41; }", soname="libfra.so.1")
    build_so(cc, b, "int fra(void); int frb(void) { return fra() + 1; }",
             needed=[a], soname="libfrb.so.1")
    (root / "nvidia" / "aa_user" / "lib" / "libOpenCL.so.1").write_text("not ELF")
    # libmxnet stand-in: needs both by soname only (as libmxnet.so does)
    mx = tmp_path / "libfakemx.so"
    build_so(cc, mx, "int frb(void); int fakemx(void) { return frb() * 2; }",
             needed=[b])
    code = f"""
        import ctypes, sys
        try:
            ctypes.CDLL({str(mx)!r})
            sys.exit('loaded without the preload: the test proves nothing')
        except OSError:
            pass
        import fr_numpy_compat
        loaded, failed = fr_numpy_compat.preload_cuda11({str(root)!r})
        assert not failed, failed
        print(len(loaded), ctypes.CDLL({str(mx)!r}).fakemx())
    """
    result = run_python(code, env={"FR_NUMPY_COMPAT": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "84"]
    # `import mxnet` alone (no fr_lib): the .pth hook preloads the folder
    # before a stand-in mxnet whose __init__ loads the libmxnet stand-in.
    stub = tmp_path / "stub"
    (stub / "mxnet").mkdir(parents=True)
    (stub / "mxnet" / "__init__.py").write_text(
        f"import ctypes\nanswer = ctypes.CDLL({str(mx)!r}).fakemx()\n")
    result = run_python("import mxnet; print(mxnet.answer)", env={
        "PYTHONPATH": str(stub), "FR_CUDA11_DIR": str(root)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["84"]


def test_default_threads_one_per_core_unless_set():
    code = "import os, fr_lib; print(os.environ['OMP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    assert out == str(len(os.sched_getaffinity(0)))
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    assert out == "1"
    from fr_lib._compat import set_default_threads
    fake = {}
    assert set_default_threads(fake) == fake["OMP_NUM_THREADS"]
    assert set_default_threads({"OMP_NUM_THREADS": "3"}) == "3"


def test_version_parsing():
    assert _compat._version_tuple("1.26.4") == (1, 26, 4)
    assert _compat._version_tuple("2.0.0rc1") == (2, 0, 0)
    assert _compat._version_tuple("1.24.dev0") == (1, 24, 0)


def test_check_reports_a_missing_pth(tmp_path, monkeypatch):
    # fr_install --check looks in every site directory, not only purelib
    # (pip install --user puts the file in the user site).
    monkeypatch.setattr(fr_numpy_compat, "site_dirs", lambda: [str(tmp_path)])
    assert fr_numpy_compat.find_pth() is None
    import fr_install
    gaps = fr_install.missing("lib", caps=[], probe=False)
    assert any(fr_numpy_compat.PTH_NAME in g for g in gaps), gaps
    path = fr_numpy_compat.write_pth(str(tmp_path))
    assert path == str(tmp_path / fr_numpy_compat.PTH_NAME)
    assert fr_numpy_compat.find_pth() == path
    assert fr_numpy_compat.write_pth() is None  # already there: left alone
    assert not any(fr_numpy_compat.PTH_NAME in g
                   for g in fr_install.missing("lib", caps=[], probe=False))


def test_recordio_pack_without_tostring_matches_mxnet():
    # NumPy 2.3 removed ndarray.tostring, which mxnet.recordio.pack/pack_img
    # call; the replacements must write the same bytes as MXNet's own.
    import mxnet as mx
    cv2 = pytest.importorskip("cv2")
    fixed = types.ModuleType("mxnet.recordio")
    fixed.__dict__.update(mx.recordio.__dict__)
    if not hasattr(np.ndarray, "tostring"):  # NumPy >= 2.3: already replaced
        assert mx.recordio.pack.__code__.co_filename == fr_numpy_compat.__file__
        pytest.skip("MXNet's own pack cannot run on this NumPy to compare with")
    assert fr_numpy_compat.patch_mxnet_recordio(fixed, force=True)
    assert fixed.pack is not mx.recordio.pack
    for label in (3.0, [1.0, 2.5, -4.0], np.arange(5, dtype=np.float64)):
        header = mx.recordio.IRHeader(0, label, 17, 0)
        assert fixed.pack(header, b"payload") == mx.recordio.pack(header, b"payload")
    img = np.random.RandomState(0).randint(0, 255, (12, 10, 3)).astype(np.uint8)
    header = mx.recordio.IRHeader(0, [4.0, 1.0], 3, 0)
    for fmt, quality in ((".jpg", 90), (".png", 3)):
        assert (fixed.pack_img(header, img, quality, fmt)
                == mx.recordio.pack_img(header, img, quality, fmt))
    assert cv2 is not None

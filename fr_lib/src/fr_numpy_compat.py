"""Restore the NumPy names that MXNet 1.9.1 still uses, in every Python process.

MXNet 1.9.1 (2022, the last release) has no compiled NumPy code -- it talks to
``libmxnet.so`` through ctypes -- but its Python code names aliases that NumPy
1.24 (``np.bool``) and NumPy 2.0 (``np.PZERO``, ``np.NAN``, ``np.Inf``,
``np.float_``, ``np.mirr``, ``np.msort``, ``np.compat`` ...) removed. This
module puts them back, so MXNet imports and runs on the NumPy the environment
already has (1.23 through 2.x), with no downgrade.

It must work for *every* interpreter of the environment -- ``python -c "import
mxnet"``, a notebook kernel, the kvstore scheduler and servers that
``fr_lib.train.launch`` starts -- not only after ``import fr_lib``. So the file
``fr_numpy_compat.pth`` in site-packages (installed with fr_lib, re-created by
``import fr_lib`` and ``python -m fr_install`` when missing) imports this
module at interpreter start. That costs almost nothing: NumPy is *not*
imported then. :func:`install` puts a finder at the front of ``sys.meta_path``
that wraps NumPy's own loader and adds the aliases right after ``numpy`` has
been executed, before anyone else sees it. An alias NumPy still has is never
replaced.

The same finder prepares ``import mxnet`` for MXNet's GPU wheels: when
fr_lib's private CUDA 11 directory exists (see :func:`cuda11_dir`; ``python -m
fr_install`` fills it with the ``nvidia-*-cu11`` wheels via ``pip install
--target``, so no other package's CUDA libraries are replaced), its libraries
are loaded with ``RTLD_GLOBAL`` before ``libmxnet.so``, which then finds them.

Set ``FR_NUMPY_COMPAT=0`` to switch the hook off.
"""
import os
import sys

__all__ = ["ALIASES", "install", "patch", "patched", "pth_line",
           "write_pth", "find_pth", "site_dirs", "PTH_NAME", "cuda11_dir",
           "preload_cuda11"]

PTH_NAME = "fr_numpy_compat.pth"

# name -> expression evaluated with ``np`` (the numpy module) and this module's
# helpers in scope. Only names MXNet 1.9.1 uses or NumPy removed recently.
ALIASES = {
    # removed in NumPy 1.24 (np.bool came back in 2.0 as np.bool_)
    "bool": "np.bool_",
    # removed in NumPy 2.0
    "PZERO": "0.0",
    "NZERO": "-0.0",
    "PINF": "float('inf')",
    "NINF": "float('-inf')",
    "Inf": "float('inf')",
    "Infinity": "float('inf')",
    "infty": "float('inf')",
    "NAN": "float('nan')",
    "NaN": "float('nan')",
    "float_": "np.float64",
    "complex_": "np.complex128",
    "longfloat": "np.longdouble",
    "singlecomplex": "np.complex64",
    "cfloat": "np.complex128",
    "unicode_": "np.str_",
    "string_": "np.bytes_",
    "alltrue": "_alltrue",
    "sometrue": "_sometrue",
    "product": "_product",
    "cumproduct": "_cumproduct",
    "round_": "np.round",
    "msort": "_msort",
    "in1d": "_in1d",
    "trapz": "_trapz",
    "compat": "_compat_module()",
    # numpy.lib.financial, removed in NumPy 1.20 (MXNet's mxnet.numpy.fallback
    # re-exports them; they live on in the numpy-financial package and, for
    # fr_lib, in fr_numpy_financial.py next to this file)
    "fv": "_financial().fv",
    "pmt": "_financial().pmt",
    "ipmt": "_financial().ipmt",
    "ppmt": "_financial().ppmt",
    "pv": "_financial().pv",
    "npv": "_financial().npv",
    "mirr": "_financial().mirr",
    "rate": "_financial().rate",
}


def _np():
    return sys.modules["numpy"]


def _alltrue(a, axis=None, out=None, keepdims=False):
    return _np().all(a, axis=axis, out=out, keepdims=keepdims)


def _sometrue(a, axis=None, out=None, keepdims=False):
    return _np().any(a, axis=axis, out=out, keepdims=keepdims)


def _product(a, *args, **kwargs):
    return _np().prod(a, *args, **kwargs)


def _cumproduct(a, *args, **kwargs):
    return _np().cumprod(a, *args, **kwargs)


def _msort(a):
    """Sort along the first axis (NumPy's removed ``np.msort``)."""
    return _np().sort(a, axis=0)


def _in1d(ar1, ar2, assume_unique=False, invert=False, **kwargs):
    np = _np()
    return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique,
                   invert=invert, **kwargs)


def _trapz(y, x=None, dx=1.0, axis=-1):
    return _np().trapezoid(y, x=x, dx=dx, axis=axis)


def _compat_module():
    import types
    compat = types.ModuleType("numpy.compat")
    compat.basestring = str
    compat.unicode = str
    compat.bytes = bytes
    compat.long = int
    compat.integer_types = (int,)
    return compat


def _financial():
    """The module of the financial functions (:mod:`fr_numpy_financial`)."""
    import fr_numpy_financial
    return fr_numpy_financial


def patch(np=None):
    """Add the missing aliases to the ``numpy`` module; return the names added."""
    if np is None:
        np = sys.modules.get("numpy")
        if np is None:
            return []
    added = []
    scope = dict(globals(), np=np)
    # NumPy 1.20-1.23 still serve np.bool & co. (with a warning) from
    # __deprecated_attrs__: leave those to NumPy.
    still_served = np.__dict__.get("__deprecated_attrs__", {})
    for name, expr in ALIASES.items():
        if name in np.__dict__ or name in still_served:
            continue
        try:
            value = eval(expr, scope)  # noqa: S307 -- the constant table above
        except (AttributeError, ImportError):  # e.g. np.trapezoid before NumPy 2.0
            continue
        np.__dict__[name] = value
        added.append(name)
    np.__dict__["_fr_numpy_compat"] = tuple(added)
    return added


def patched(np=None):
    """True if :func:`patch` has run on this NumPy module."""
    np = sys.modules.get("numpy") if np is None else np
    return np is not None and "_fr_numpy_compat" in np.__dict__


def cuda11_dir():
    """Where fr_lib keeps the CUDA 11 libraries of MXNet's GPU wheels:
    ``$FR_CUDA11_DIR``, else ``<site-packages>/fr_lib_cuda11`` (a plain folder,
    not an importable package, so it cannot shadow torch's ``nvidia`` ones)."""
    path = os.environ.get("FR_CUDA11_DIR")
    if path:
        return path
    import sysconfig
    return os.path.join(sysconfig.get_paths()["purelib"], "fr_lib_cuda11")


_PRELOADED_DIRS = {}


def preload_cuda11(directory=None):
    """Load every ``nvidia/*/lib/*.so*`` under ``directory`` with RTLD_GLOBAL.

    A library whose own dependencies are not loaded yet fails; the loop tries
    the failures again until nothing more loads, so the result is a valid
    dependency order whatever the file names. Returns ``(loaded, failed)``:
    paths, and ``(path, error)`` pairs. An absent directory loads nothing.
    """
    import ctypes
    import glob
    directory = cuda11_dir() if directory is None else directory
    if directory in _PRELOADED_DIRS:  # the import hook did it already
        return _PRELOADED_DIRS[directory]
    pending = sorted(
        p for p in glob.glob(os.path.join(directory, "nvidia", "*", "lib", "*.so*"))
        # the OpenCL ICD loader comes with cuda-runtime; MXNet does not use it
        if not os.path.basename(p).startswith("libOpenCL"))
    loaded, errors = [], {}
    while pending:
        still = []
        for path in pending:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as err:
                errors[path] = str(err)
                still.append(path)
            else:
                loaded.append(path)
                errors.pop(path, None)
        if len(still) == len(pending):
            break
        pending = still
    result = loaded, [(p, errors[p]) for p in pending]
    if loaded and not pending:
        _PRELOADED_DIRS[directory] = result
    return result


def patch_mxnet_recordio(module, force=False):
    """``mxnet.recordio.pack``/``pack_img`` call ``ndarray.tostring()``, which
    NumPy 2.3 removed; use ``tobytes()`` (the same bytes) where it is gone."""
    np = sys.modules.get("numpy")
    if np is None or (hasattr(np.ndarray, "tostring") and not force):
        return False
    import numbers
    import struct
    mod = module

    def pack(header, s):
        header = mod.IRHeader(*header)
        if isinstance(header.label, numbers.Number):
            header = header._replace(flag=0)
        else:
            label = np.asarray(header.label, dtype=np.float32)
            header = header._replace(flag=label.size, label=0)
            s = label.tobytes() + s
        return struct.pack(mod._IR_FORMAT, *header) + s

    def pack_img(header, img, quality=95, img_fmt=".jpg"):
        cv2 = mod.cv2
        assert cv2 is not None
        encode_params = None
        if img_fmt.upper() in (".JPG", ".JPEG"):
            encode_params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        elif img_fmt.upper() in (".PNG",):
            encode_params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
        ret, buf = cv2.imencode(img_fmt, img, encode_params)
        assert ret, "failed to encode image"
        return pack(header, buf.tobytes())

    for fixed in (pack, pack_img):
        original = getattr(module, fixed.__name__, None)
        fixed.__doc__ = getattr(original, "__doc__", None)
        fixed.__module__ = module.__name__
        setattr(module, fixed.__name__, fixed)
    return True


# module -> what to do right after it has been executed
_AFTER_EXEC = {"numpy": patch, "mxnet.recordio": patch_mxnet_recordio}


class _NumpyLoader:
    """Runs the module's own loader, then its entry of ``_AFTER_EXEC``."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _AFTER_EXEC[module.__name__](module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _NumpyFinder:
    """A ``sys.meta_path`` entry that acts only for ``numpy`` and
    ``mxnet.recordio`` (wraps their loaders to patch them right after they
    ran) and ``mxnet`` (loads the CUDA 11 libraries first, if any)."""

    _busy = False
    _cuda_done = False

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "mxnet" and not cls._cuda_done:
            cls._cuda_done = True
            try:
                if os.path.isdir(cuda11_dir()):
                    preload_cuda11()
            except Exception:  # noqa: BLE001 -- import mxnet reports what is missing
                pass
            return None
        if fullname not in _AFTER_EXEC or cls._busy:
            return None
        import importlib.machinery
        import importlib.util
        cls._busy = True
        try:
            if path is None:
                spec = importlib.util.find_spec(fullname)
            else:  # a submodule: search its package's path, as Python would
                spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        finally:
            cls._busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _NumpyLoader(spec.loader)
        return spec


def install():
    """Patch NumPy now if it is imported, else when it is; idempotent."""
    if os.environ.get("FR_NUMPY_COMPAT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "numpy" in sys.modules:
        patch(sys.modules["numpy"])
    if not any(f is _NumpyFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _NumpyFinder)
    return True


def pth_line():
    """The one line of ``fr_numpy_compat.pth``: import this module if it exists
    (so a stale ``.pth`` left by an uninstall does not print an error)."""
    return ("import sys; exec('try:\\n import fr_numpy_compat\\n"
            "except ImportError:\\n pass')\n")


def site_dirs():
    """The directories whose ``.pth`` files this interpreter runs at start."""
    import site
    import sysconfig
    dirs = [sysconfig.get_paths()["purelib"]]
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # old virtualenv's site.py
        pass
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    seen = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_pth():
    """Path of the installed ``fr_numpy_compat.pth``, or None."""
    for directory in site_dirs():
        path = os.path.join(directory, PTH_NAME)
        if os.path.exists(path):
            return path
    return None


def write_pth(directory=None):
    """Write ``fr_numpy_compat.pth`` into ``directory`` (default: this
    interpreter's site-packages) if it is missing or different.

    Returns the path written, or None when it was already there or the
    directory is not writable.
    """
    if directory is None:
        if find_pth() is not None:  # e.g. a `pip install --user` put it there
            return None
        import sysconfig
        directory = sysconfig.get_paths()["purelib"]
    path = os.path.join(directory, PTH_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == pth_line():
                return None
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(pth_line())
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return None
    return path


install()

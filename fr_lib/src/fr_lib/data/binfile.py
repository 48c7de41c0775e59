"""Verification pair files (``<name>.bin``): reading and writing.

A ``.bin`` file (InsightFace's ``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin`` ...) is
a pickle of ``(bins, issame_list)``: ``2N`` images and ``N`` booleans; images
``2i`` and ``2i+1`` form pair ``i``, a pair of the same person when
``issame_list[i]`` is true. The images are encoded JPEGs, stored as

- ``str`` in files pickled by Python 2 (they load in Python 3 only with
  ``encoding='latin1'`` or ``'bytes'``; gluon-face crashed on one of the two
  kinds),
- ``bytes`` in files pickled by Python 3,
- 1-d ``uint8`` numpy arrays of the JPEG bytes,

or already decoded: 3-d ``uint8`` (H, W, 3) RGB arrays, or one (2N, H, W, 3)
array. :func:`read_bin` reads all of these; :func:`write_bin` writes the standard
kind.

Pickles can run code when loaded. :func:`read_bin` therefore accepts only the
few globals a ``.bin`` file needs (numpy arrays, ``bytes``) and refuses others.
"""
import io
import os
import pickle

import numpy as np
import mxnet as mx

from ..utils.checks import check_int
from ..utils.fileio import atomic_write_bytes
from .transforms import decode_image, encode_jpeg, flip_batch, normalize_batch

__all__ = ["VerificationSet", "read_bin", "write_bin"]

# What a .bin pickle may reference: numpy arrays/scalars and bytes helpers.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.multiarray", "_reconstruct"),  # written by NumPy 2
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    ("_codecs", "encode"),  # Python 3 writes bytes as _codecs.encode at protocol < 3
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "bool"),
}


class _BinUnpickler(pickle.Unpickler):
    def __init__(self, f, path, **kwargs):
        super().__init__(f, **kwargs)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self._path}: the pickle refers to {module}.{name}, which a .bin "
            "verification file never needs; refusing to load it")


def _unpickle(path):
    with open(path, "rb") as f:
        data = f.read()
    try:  # Python 3 pickles (and Python 2 pickles of ASCII-only strings)
        return _BinUnpickler(io.BytesIO(data), path).load()
    except UnicodeDecodeError:
        pass
    # Python 2 pickles: str holds bytes; latin-1 maps each byte to one
    # character, so encoding back to latin-1 restores them exactly (and numpy
    # arrays pickled by Python 2 need exactly this encoding).
    return _BinUnpickler(io.BytesIO(data), path, encoding="latin1").load()


class VerificationSet:
    """The pairs of one ``.bin`` file, decoded and normalised.

    Attributes
    ----------
    name : str
        File name without ``.bin`` (``lfw``, ``cfp_fp`` ...).
    path : str
    images : NDArray
        ``(2N, 3, H, W)`` float32, RGB, ``(x - 127.5) / 128``; rows ``2i`` and
        ``2i+1`` are pair ``i``.
    issame : numpy.ndarray
        ``(N,)`` bool.
    raw : numpy.ndarray or None
        ``(2N, H, W, 3)`` uint8 RGB when read with ``keep_raw=True``.
    """

    def __init__(self, name, path, images, issame, raw=None):
        self.name, self.path = name, path
        self.images, self.issame, self.raw = images, issame, raw

    def __len__(self):
        return len(self.issame)

    @property
    def num_pairs(self):
        return len(self.issame)

    def pairs(self):
        """Yield ``(first, second, issame)`` per pair; images (3, H, W) float32."""
        for i, same in enumerate(self.issame.tolist()):
            yield self.images[2 * i], self.images[2 * i + 1], same

    __iter__ = pairs

    def batches(self, batch_size=128, flip=True, ctx=None):
        """Yield the 2N images in order, in batches, as the protocol needs them.

        To embed a set, call :func:`fr_lib.metrics.embed` with ``self.images``
        (it batches, mirrors and runs the network the same way); this
        generator is for code that drives the network itself.

        Parameters
        ----------
        batch_size : int
        flip : bool
            Also yield the mirrored batch: the embedding of an image is
            ``net(x) + net(flip(x))`` before L2 normalisation.
        ctx : mxnet.Context or None
            Copy the batches there.

        Yields
        ------
        NDArray or (NDArray, NDArray)
            ``X`` or ``(X, X_flipped)``, each ``(B, 3, H, W)``.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        n = self.images.shape[0]
        for lo in range(0, n, batch_size):
            x = self.images[lo:min(lo + batch_size, n)]
            if ctx is not None:
                x = x.as_in_context(ctx)
            yield (x, flip_batch(x)) if flip else x

    def __repr__(self):
        shape = tuple(self.images.shape)
        return (f"VerificationSet({self.name!r}, pairs={len(self)}, "
                f"same={int(self.issame.sum())}, images={shape})")


def _entry_bytes(entry):
    if isinstance(entry, str):  # a Python 2 str read with encoding='latin1'
        return entry.encode("latin1")
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return bytes(entry)
    return None


def read_bin(path, image_size=(112, 112), keep_raw=False, resize=False):
    """Read a verification ``.bin`` file.

    Book: introduced in ``chapter_data/bin-pairs`` (`.bin` 验证对).

    Parameters
    ----------
    path : str
    image_size : tuple (height, width)
        Size the images must have.
    keep_raw : bool
        Also keep the decoded uint8 images in ``.raw``.
    resize : bool
        Resize images of another size to ``image_size`` (bilinear) instead of
        raising an error.

    Returns
    -------
    VerificationSet

    Raises
    ------
    ValueError
        If the file is not ``(bins, issame_list)``, holds no pairs, if
        ``len(bins) != 2 * len(issame_list)`` (both counts are named), or if
        an image has the wrong size.
    fr_lib.data.BadImageError
        If an entry is not a decodable image (its index is named).
    """
    from .recordio import BadImageError
    path = os.path.expanduser(path)
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        obj = _unpickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, ImportError, IndexError) as err:
        raise ValueError(f"{path}: not a readable .bin pickle ({err})") from err
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled pair (bins, issame_list), "
                         f"found {type(obj).__name__}"
                         + (f" of length {len(obj)}" if hasattr(obj, "__len__")
                            else ""))
    bins, issame = obj
    try:
        issame = np.asarray(issame)
    except Exception as err:  # pragma: no cover - exotic containers
        raise ValueError(f"{path}: issame_list is not a list of booleans") from err
    if issame.ndim != 1 or not (issame.dtype == bool or (
            issame.dtype.kind in "iuf" and np.isin(issame, [0, 1]).all())):
        raise ValueError(f"{path}: issame_list must be a flat list of booleans, "
                         f"found {issame.dtype} of shape {issame.shape}")
    issame = issame.astype(bool)
    n_images = len(bins)
    if n_images != 2 * len(issame):
        raise ValueError(f"{path}: {n_images} images but {len(issame)} pairs in "
                         f"issame_list; a .bin needs exactly 2 images per pair "
                         f"({2 * len(issame)})")
    if n_images == 0:
        raise ValueError(f"{path}: the .bin holds no pairs (0 images, empty "
                         "issame_list); a verification set needs at least one pair")
    h, w = image_size
    raw = np.empty((n_images, h, w, 3), dtype=np.uint8)
    if isinstance(bins, np.ndarray) and bins.ndim == 4:
        entries = bins  # one (2N, H, W, 3) array
    else:
        entries = list(bins)
    for i in range(n_images):
        entry = entries[i]
        data = _entry_bytes(entry)
        if data is not None:
            img = decode_image(data)
        elif isinstance(entry, np.ndarray) and entry.ndim == 1:
            img = decode_image(np.ascontiguousarray(entry, dtype=np.uint8))
        elif isinstance(entry, np.ndarray) and entry.ndim == 3:
            if entry.dtype != np.uint8 or entry.shape[2] != 3:
                raise ValueError(f"{path}: entry {i} is an array of {entry.dtype} "
                                 f"{entry.shape}; decoded images must be uint8 "
                                 "(H, W, 3) RGB")
            img = entry
        else:
            raise ValueError(f"{path}: entry {i} is a {type(entry).__name__}, not "
                             "encoded image bytes or an image array")
        if img is None:
            size = len(data) if data is not None else entry.size
            raise BadImageError(f"{path}: entry {i} ({size} bytes) is not a "
                                "decodable image")
        if img.shape[:2] != (h, w):
            if not resize:
                raise ValueError(f"{path}: entry {i} is {img.shape[0]}x"
                                 f"{img.shape[1]}, expected {h}x{w} (pass "
                                 "resize=True to resize, or another image_size)")
            img = mx.image.imresize(mx.nd.array(img, dtype=np.uint8), w, h,
                                    interp=1).asnumpy()
        raw[i] = img
    images = normalize_batch(mx.nd.array(raw, dtype=np.uint8))
    return VerificationSet(name, path, images, issame, raw if keep_raw else None)


def write_bin(path, images_or_jpeg_bytes, issame, protocol=pickle.DEFAULT_PROTOCOL,
              quality=95, encode=True):
    """Write a verification ``.bin`` file atomically.

    Book: introduced in ``chapter_data/bin-pairs`` (`.bin` 验证对).

    Parameters
    ----------
    path : str
    images_or_jpeg_bytes : sequence
        ``2N`` encoded images (bytes), or uint8 (H, W, 3) RGB arrays / one
        (2N, H, W, 3) array (NDArrays are accepted too).
    issame : sequence of bool
        ``N`` flags.
    protocol : int
        Pickle protocol; 2 gives a file Python 2 can read too.
    quality : int
        JPEG quality used when encoding arrays.
    encode : bool
        Encode array images as JPEG (the standard); ``False`` stores the arrays
        as they are (lossless, larger).

    Returns
    -------
    str
        The path written.
    """
    if isinstance(images_or_jpeg_bytes, mx.nd.NDArray):
        images_or_jpeg_bytes = images_or_jpeg_bytes.asnumpy()
    issame = [bool(s) for s in issame]
    n = len(images_or_jpeg_bytes)
    if n != 2 * len(issame):
        raise ValueError(f"{path}: {n} images but {len(issame)} pairs in issame; "
                         f"need exactly {2 * len(issame)} images")
    bins = []
    for i, img in enumerate(images_or_jpeg_bytes):
        if isinstance(img, mx.nd.NDArray):
            img = img.asnumpy()
        if isinstance(img, (bytes, bytearray, memoryview)):
            bins.append(bytes(img))
        elif isinstance(img, np.ndarray) and img.ndim == 3:
            if img.dtype != np.uint8 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got "
                                 f"{img.dtype} {img.shape}")
            bins.append(encode_jpeg(img, quality) if encode else img)
        else:
            raise TypeError(f"image {i}: expected bytes or a uint8 (H, W, 3) "
                            f"array, got {type(img).__name__}")
    return atomic_write_bytes(path, pickle.dumps((bins, issame), protocol=protocol))

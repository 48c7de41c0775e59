"""Writing ``.rec``/``.idx``/``property`` sets atomically (``write_face_rec``):
RecordIO chunks as dmlc-core writes them, InsightFace's header and identity
records, an optional shuffle. The temporary folders it writes into are
:mod:`.workdirs`'s; re-encoding rotated JPEGs is :mod:`.upright`'s."""
import numbers
import os
import shutil
import struct
import tempfile

import numpy as np
import mxnet as mx

from ...utils.fileio import fsync_dir
from ..transforms import decode_image, encode_jpeg
from .format import (MAGIC, _IR_SIZE, _MAGIC_BYTES, BadImageError, _RecFile,
                     _class_id, _pack)
# remove_stale_work_dirs and LEGACY_WORK_DIR_AGE stay importable from here.
from .workdirs import (LEGACY_WORK_DIR_AGE, _umask, _work_prefix,  # noqa: F401
                       remove_stale_work_dirs)


class _RecWriter:
    """Writes RecordIO chunks exactly as dmlc-core does (splitting at magic)."""

    def __init__(self, f):
        self.f = f
        self.pos = f.tell()

    def write(self, payload):
        if len(payload) >= 1 << 29:
            raise ValueError("RecordIO records must be smaller than 2**29 bytes")
        start = self.pos
        mv = memoryview(payload)
        n = len(payload)
        cuts = []
        i = payload.find(_MAGIC_BYTES)
        while i != -1 and i + 4 <= n:
            if i % 4 == 0:
                cuts.append(i)
                i = payload.find(_MAGIC_BYTES, i + 4)
            else:
                i = payload.find(_MAGIC_BYTES, i + 1)
        prev = 0
        for j, cut in enumerate(cuts):
            self._chunk(1 if j == 0 else 2, mv[prev:cut])
            prev = cut + 4
        self._chunk(3 if cuts else 0, mv[prev:])
        pad = (-n) % 4
        if pad:
            self.f.write(b"\x00" * pad)
            self.pos += pad
        return start

    def _chunk(self, cflag, data):
        self.f.write(struct.pack("<II", MAGIC, (cflag << 29) | len(data)))
        self.f.write(data)
        self.pos += 8 + len(data)


def _as_encoded(image, quality, i):
    """(encoded bytes, (h, w) or None) of an item's image."""
    if isinstance(image, mx.nd.NDArray):
        image = image.asnumpy()
    if isinstance(image, np.ndarray) and image.ndim == 3:
        if image.dtype != np.uint8 or image.shape[2] != 3:
            raise ValueError(f"item {i}: an image array must be uint8 (H, W, 3) "
                             f"RGB, got {image.dtype} {image.shape}")
        return encode_jpeg(image, quality), image.shape[:2]
    if isinstance(image, np.ndarray):
        image = image.tobytes()
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"item {i}: the image must be encoded bytes or a uint8 "
                        f"(H, W, 3) array, got {type(image).__name__}")
    return bytes(image), None


def write_face_rec(out_dir, items, layout="insightface", shuffle_seed=None,
                   image_size=None, num_classes=None, quality=95, verify=True,
                   prefix="train", progress=False):
    """Write ``<prefix>.rec``, ``<prefix>.idx`` and ``property`` atomically.

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

    Parameters
    ----------
    out_dir : str
        Output directory (created if missing).
    items : iterable of (label, image)
        ``image`` is encoded bytes (JPEG, PNG ...) or a uint8 (H, W, 3) RGB array
        (encoded as JPEG). For ``layout='insightface'`` the label is an int and
        the items come grouped by identity with labels 0, 1, 2, ... in order.
        For ``layout='plain'`` the label is an int or an array of floats (its
        element 0 is the class id).
    layout : {'insightface', 'plain'}
        InsightFace's layout (header record 0, images 1..n, identity records)
        or a plain rec where every record is an image (for DALI / im2rec tools).
    shuffle_seed : int or None
        ``layout='plain'`` only: write the records in a random order (a second
        pass over a temporary file, so memory stays small). Each record keeps
        its item number as ``IRHeader.id`` and ``.idx`` key.
    image_size : tuple (height, width) or None
        Expected size; default: the first image's.
    num_classes : int or None
        For ``property``; default: largest class id + 1.
    quality : int
        JPEG quality for array images.
    verify : bool
        Decode every encoded image to check it is an image of the right size.
    prefix : str
        File name stem (``train``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``rec``, ``idx``, ``property`` paths, ``num_images``, ``num_classes``,
        ``image_size``, ``layout``.

    Notes
    -----
    Everything is written under temporary names in the output directory and
    fsynced; only then are the files renamed into place (``.rec`` last). An
    exception (or a crash) while items are being written leaves any previous
    files untouched and no new ``.rec`` at all. When ``out_dir`` does not exist
    yet, the files are written into a temporary sibling directory that is renamed
    as a whole, which is atomic.
    """
    if layout not in ("insightface", "plain"):
        raise ValueError(f"layout must be 'insightface' or 'plain', got {layout!r}")
    if shuffle_seed is not None and layout != "plain":
        raise ValueError("shuffle_seed needs layout='plain': the InsightFace "
                         "layout keeps each identity's images contiguous")
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    stale = remove_stale_work_dirs(out_dir)
    new_dir = not os.path.isdir(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=_work_prefix(out_dir), suffix=".tmp",
                            dir=parent if new_dir else out_dir)
    names = {"rec": prefix + ".rec", "idx": prefix + ".idx", "property": "property"}
    tmp = {k: os.path.join(work, v) for k, v in names.items()}
    try:
        info = _write_into(tmp, items, layout, shuffle_seed, image_size,
                           num_classes, quality, verify, progress)
        if new_dir:
            # mkdtemp makes the folder 0700; the data folder follows the umask.
            os.chmod(work, 0o777 & ~_umask())
            fsync_dir(work)
            os.rename(work, out_dir)
            work = None
        else:
            for k in ("idx", "property", "rec"):  # .rec last: it marks completion
                os.replace(tmp[k], os.path.join(out_dir, names[k]))
            fsync_dir(out_dir)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    info.update({k: os.path.join(out_dir, v) for k, v in names.items()})
    info["layout"] = layout
    info["removed_stale"] = stale
    return info


def _write_into(tmp, items, layout, shuffle_seed, image_size, num_classes,
                quality, verify, progress):
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="writing records", unit="img")
    size = tuple(image_size) if image_size else None
    max_class, count = -1, 0
    insight = layout == "insightface"
    identities = []  # [start_key, stop_key) per identity
    idx_lines, offsets = [], []
    with open(tmp["rec"], "wb") as f:
        w = _RecWriter(f)
        if insight:  # placeholder header, patched at the end (fixed size)
            offsets.append((0, w.write(_pack([0.0, 0.0], b"", 0))))
        for i, item in enumerate(items):
            try:
                label, image = item
            except (TypeError, ValueError):
                raise TypeError(f"item {i}: expected a (label, image) pair") from None
            body, shape = _as_encoded(image, quality, i)
            if verify and shape is None:
                img = decode_image(body)
                if img is None:
                    raise BadImageError(f"item {i} (label {label!r}): its "
                                        f"{len(body)} bytes are not a decodable "
                                        "image")
                shape = img.shape[:2]
            if shape is not None:
                if size is None:
                    size = tuple(shape)
                elif tuple(shape) != size:
                    raise ValueError(f"item {i}: image is {shape[0]}x{shape[1]}, "
                                     f"expected {size[0]}x{size[1]}")
            if insight:
                if not isinstance(label, numbers.Real) or \
                        label != int(label):
                    raise ValueError(f"item {i}: layout='insightface' needs an "
                                     f"integer class id, got {label!r}")
                label = int(label)
                if label != max_class:
                    if label != max_class + 1:
                        raise ValueError(
                            f"item {i} has label {label} after label {max_class}: "
                            "layout='insightface' needs the items grouped by "
                            "identity with labels 0, 1, 2, ... in order")
                    identities.append([count + 1, count + 1])
                    max_class = label
                identities[-1][1] = count + 2
                key = count + 1
            else:
                cls = _class_id(label, "items", f"item {i}")
                max_class = max(max_class, cls)
                key = count
            payload = _pack(label if isinstance(label, numbers.Number)
                            else np.asarray(label, np.float32), body, key)
            offsets.append((key, w.write(payload)))
            count += 1
        if insight:
            first = count + 1
            for j, (lo, hi) in enumerate(identities):
                offsets.append((first + j, w.write(
                    _pack([float(lo), float(hi)], b"", first + j))))
            end = first + len(identities)
            f.seek(8 + _IR_SIZE)  # the two label floats of record 0
            f.write(np.asarray([first, end], np.float32).tobytes())
            f.seek(0, os.SEEK_END)
        f.flush()
        os.fsync(f.fileno())
    if count == 0:
        raise ValueError("no items to write")
    if shuffle_seed is not None:
        offsets = _shuffle_rec(tmp["rec"], offsets, shuffle_seed)
    idx_lines = "".join(f"{k}\t{o}\n" for k, o in offsets)
    with open(tmp["idx"], "w") as f:
        f.write(idx_lines)
        f.flush()
        os.fsync(f.fileno())
    classes = int(num_classes) if num_classes is not None else max_class + 1
    if classes <= max_class:
        raise ValueError(f"num_classes={classes} but the items have class id "
                         f"{max_class}")
    if size is None:
        raise ValueError("image_size is unknown (verify=False and no array "
                         "images): pass image_size=(height, width)")
    with open(tmp["property"], "w") as f:
        f.write(f"{classes},{size[0]},{size[1]}\n")
        f.flush()
        os.fsync(f.fileno())
    return {"num_images": count, "num_classes": classes, "image_size": size}


def _shuffle_rec(path, offsets, seed):
    """Rewrite ``path`` with its records in a random order; new (key, offset)s."""
    order = np.random.RandomState(seed).permutation(len(offsets))
    src = _RecFile(path)
    shuffled = path + ".shuffled"
    new = []
    try:
        with open(shuffled, "wb") as f:
            w = _RecWriter(f)
            for j in order.tolist():
                key, off = offsets[j]
                payload, _ = src.read(off, f"record {key}")
                new.append((key, w.write(payload)))
            f.flush()
            os.fsync(f.fileno())
    finally:
        src.close()
    os.replace(shuffled, path)
    return new


def __getattr__(name):
    # find_rotated_jpegs and write_upright_rec moved to .upright (which imports
    # this module): still importable from here.
    if name in ("find_rotated_jpegs", "write_upright_rec"):
        from . import upright
        return getattr(upright, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

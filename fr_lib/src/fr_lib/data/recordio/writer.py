"""Writing ``.rec``/``.idx``/``property`` sets atomically (``write_face_rec``) and re-encoding rotated JPEGs (``write_upright_rec``)."""
import numbers
import os
import re
import shutil
import socket
import struct
import tempfile
import time

import numpy as np
import mxnet as mx

from ...utils.fileio import fsync_dir, pid_alive
from ..transforms import decode_image, encode_jpeg
from .format import (MAGIC, _IR_SIZE, _MAGIC_BYTES, BadImageError, _RecFile,
                     _class_id, _pack, _parse_header)
from .dataset import FaceRecordDataset


# -- writing --------------------------------------------------------------------

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


def find_rotated_jpegs(dataset, prefix=4096):
    """The image records holding a JPEG with an EXIF orientation other than 1.

    Such a JPEG is stored on its side (or upside down, or mirrored) and only
    a decoder that applies the tag shows it upright: OpenCV (the Gluon path)
    does; MXNet's ``imdecode`` and DALI 1.35's decoders do not. ``fr-data
    folder2rec`` never writes one; recs from other tools may hold some.

    Parameters
    ----------
    dataset : FaceRecordDataset
    prefix : int
        Bytes of each payload read to find the tag (it sits in the first
        segments of the file).

    Returns
    -------
    list of (key, orientation)
    """
    from ..tools import jpeg_orientation
    out = []
    rec, path = dataset._rec, dataset.rec_path
    for key, off in zip(dataset.keys.tolist(), dataset._offsets.tolist()):
        where = dataset._where(key)
        head, _ = rec.read_prefix(off, where, prefix)
        start = _parse_header(head, path, where)[3]
        orientation = jpeg_orientation(head[start:])
        if orientation != 1:
            out.append((key, orientation))
    return out


def write_upright_rec(src, out_dir, quality=95, progress=False):
    """Copy a training set with every EXIF-rotated JPEG stored upright.

    Records whose JPEG carries an EXIF orientation other than 1 are decoded
    (OpenCV applies the tag) and re-encoded upright; all others keep their
    bytes. The layout, the order and the class ids are kept (array labels of
    a plain rec become their class id).

    Parameters
    ----------
    src : FaceRecordDataset or str
    out_dir : str
    quality : int
        JPEG quality of the re-encoded images.
    progress : bool

    Returns
    -------
    dict
        As :func:`write_face_rec`, plus ``rotated``: the number of images
        turned upright.
    """
    from ..tools import jpeg_orientation
    ds = src if isinstance(src, FaceRecordDataset) else FaceRecordDataset(src)
    if os.path.abspath(os.path.expanduser(out_dir)) == \
            os.path.dirname(os.path.abspath(ds.rec_path)):
        raise ValueError(f"{out_dir}: write the upright copy to another folder")
    turned = [0]

    def items():
        for i in range(len(ds)):
            raw = ds.read_raw(i)
            data = raw.data
            if data[:3] == b"\xff\xd8\xff" and jpeg_orientation(data) != 1:
                data = encode_jpeg(decode_image(data), quality)
                turned[0] += 1
            yield raw.label, data

    info = write_face_rec(out_dir, items(), layout=ds.layout,
                          num_classes=ds.num_classes, progress=progress)
    info["rotated"] = turned[0]
    return info


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_tag():
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _work_prefix(out_dir):
    """``.<name>.<host>-<pid>.``: the temporary folder names its writer, so a
    later run can tell a dead writer's leftovers from a live writer's."""
    return f".{os.path.basename(out_dir)}.{_host_tag()}-{os.getpid()}."


#: A temporary folder of the older form (no writer named) whose files have
#: not changed for this long is a dead writer's: a live one writes every image.
LEGACY_WORK_DIR_AGE = 3600.0


def _newest_mtime(path):
    newest = os.stat(path).st_mtime
    for d, _, files in os.walk(path):
        for f in files:
            try:
                newest = max(newest, os.stat(os.path.join(d, f)).st_mtime)
            except OSError:
                pass
    return newest


def remove_stale_work_dirs(out_dir, legacy_age=LEGACY_WORK_DIR_AGE):
    """Remove the temporary folders that a killed :func:`write_face_rec` of
    ``out_dir`` left behind (``.<name>.<host>-<pid>.*.tmp`` beside or inside
    ``out_dir``, written on this host by a process that no longer exists).

    A ``SIGKILL`` (or a power cut) gives the writer no chance to clean up; the
    next write of the same folder does it. Folders of live processes and of
    other hosts (a shared file system) are left alone. Folders of the form
    older fr_lib versions used (``.<name>.XXXXXXXX.tmp``, no writer named) are
    removed once nothing in them has changed for ``legacy_age`` seconds.

    Returns
    -------
    list of str
        The folders removed.
    """
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    base = re.escape(os.path.basename(out_dir))
    pattern = re.compile(r"\." + base
                         + r"\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
    legacy = re.compile(r"\." + base + r"\.[a-z0-9_]{8}\.tmp$")
    removed = []
    for folder in (os.path.dirname(out_dir), out_dir):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            m = pattern.match(name)
            if m:
                pid = int(m.group("pid"))
                if m.group("host") != _host_tag() or pid == os.getpid() or \
                        pid_alive(pid):
                    continue
            elif not legacy.match(name):
                continue
            try:
                if not os.path.isdir(path) or os.path.islink(path) or (
                        not m and time.time() - _newest_mtime(path) < legacy_age):
                    continue
            except OSError:
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed


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

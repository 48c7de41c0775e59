"""InsightFace-layout and plain RecordIO training sets: reading, checking, writing.

File facts this module relies on (MXNet 1.9.1 / dmlc-core RecordIO, InsightFace's
``face2rec2.py`` and MXNet's ``im2rec.py``):

- A ``.rec`` file is a sequence of chunks ``magic (uint32 0xced7230a) | lrec
  (uint32) | data | zero padding to 4 bytes``, little-endian. ``lrec`` holds a
  29-bit length and a 3-bit ``cflag``: 0 a whole record; 1, 2, 3 the start,
  middle and end of a record that the writer split where its data contained the
  magic number at a 4-byte aligned position (the reader puts the magic back
  between the parts).
- A ``.idx`` file has one line ``key<TAB>byte offset`` per record.
- A record's payload starts with the image-record header ``IRHeader`` packed as
  ``struct 'IfQQ'`` (flag, label, id, id2; 24 bytes). If ``flag > 0`` the label
  is instead an array of ``flag`` float32 values following the header.
- InsightFace layout: key 0 has an empty image and the label
  ``[first_identity_key, end_key]``; keys ``1 .. first-1`` are images with a
  float class id; keys ``first .. end-1`` are identity records with an empty
  image and the label ``[start, stop)`` of that identity's image keys.
  ``property`` is the text ``num_classes,height,width`` (other tools may add
  lines after it; only the first is read).
- Plain layout (``im2rec``, shuffled recs for DALI): every record is an image;
  labels are scalars or arrays (the class id is element 0).

The reader is pure Python over ``os.pread``, so it needs no shared file
position (safe in threads and in forked DataLoader workers) and it can say which
byte of which file is wrong.
"""
import concurrent.futures
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
from mxnet import gluon

from ..utils.fileio import atomic_write_bytes, fsync_dir
from .transforms import (decode_image, decode_image_bgr, encode_jpeg,
                         _normalize_bgr_into)

__all__ = ["RecordFormatError", "MissingIndexError", "BadImageError",
           "read_property", "write_property", "read_index", "rebuild_index",
           "iter_records", "FaceRecordDataset", "RawRecord", "FaceBatchify",
           "FaceRecordIter", "write_face_rec", "remove_stale_work_dirs",
           "find_rotated_jpegs", "write_upright_rec"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24
_LEN_MASK = (1 << 29) - 1
_PREFIX = 64  # bytes of payload read to get a header, label and image magic

# Leading bytes of the image formats OpenCV decodes.
_IMAGE_MAGICS = (b"\xff\xd8\xff",        # JPEG
                 b"\x89PNG\r\n\x1a\n",   # PNG
                 b"BM",                  # BMP
                 b"II*\x00", b"MM\x00*",  # TIFF
                 b"RIFF",                # WebP
                 b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
                 b"P5", b"P6")           # PGM/PPM


class RecordFormatError(ValueError):
    """A ``.rec``/``.idx`` pair is truncated, corrupt or does not belong together."""


class MissingIndexError(FileNotFoundError):
    """The ``.idx`` file next to a ``.rec`` is missing (see :func:`rebuild_index`)."""


class BadImageError(ValueError):
    """A record that should hold an image holds no decodable image."""


# -- low level: chunks, headers, index -----------------------------------------

class _RecFile:
    """A ``.rec`` file read with ``os.pread``; reopened after a fork."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        self._fd = None
        self._pid = None

    def fileno(self):
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self):
        return {"path": self.path, "size": self.size}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _chunk(self, pos, where, first):
        """(cflag, length, data_offset, next_offset) of the chunk at ``pos``."""
        if pos + 8 > self.size:
            raise RecordFormatError(
                f"{self.path}: {where}: expected a record header (8 bytes) at "
                f"byte offset {pos}, but the file ends at byte {self.size} "
                "(truncated file, or an index that belongs to another file)")
        head = os.pread(self.fileno(), 8, pos)
        if len(head) != 8:
            raise RecordFormatError(
                f"{self.path}: {where}: could read only {len(head)} of 8 header "
                f"bytes at byte offset {pos} (file truncated while reading?)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordFormatError(
                f"{self.path}: {where}: bad magic number 0x{magic:08x} at byte "
                f"offset {pos} (expected 0x{MAGIC:08x}): the file is corrupt or "
                "the index does not belong to it")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if cflag > 3 or (first and cflag not in (0, 1)) or \
                (not first and cflag not in (2, 3)):
            raise RecordFormatError(
                f"{self.path}: {where}: invalid chunk flag {cflag} at byte "
                f"offset {pos} (a record must start with flag 0 or 1 and "
                "continue with 2 or 3): the file is corrupt")
        end = pos + 8 + ((length + 3) & ~3)
        if end > self.size:
            raise RecordFormatError(
                f"{self.path}: {where}: the record at byte offset {pos} declares "
                f"{length} bytes, so it should end at byte offset {end}, but the "
                f"file ends at byte {self.size} (truncated file?)")
        return cflag, length, pos + 8, end

    def read(self, pos, where):
        """The whole payload of the record at ``pos`` and the next record's offset."""
        cflag, length, data, end = self._chunk(pos, where, True)
        payload = os.pread(self.fileno(), length, data)
        if cflag == 0:
            return payload, end
        parts = [payload]
        while cflag != 3:
            cflag, length, data, end = self._chunk(end, where, False)
            parts.append(_MAGIC_BYTES)
            parts.append(os.pread(self.fileno(), length, data))
        return b"".join(parts), end

    def read_prefix(self, pos, where, n=_PREFIX):
        """At least the first ``n`` payload bytes (fewer if the record is shorter),
        and the total payload length."""
        cflag, length, data, _ = self._chunk(pos, where, True)
        if cflag == 0:
            return os.pread(self.fileno(), min(length, n), data), length
        # A split record (its data contains the magic number): rare, read it all
        # to learn its total length.
        payload, _ = self.read(pos, where)
        return payload[:n], len(payload)


def _parse_header(payload, path, where):
    """(flag, label, id, image_offset): label is a float or a float32 array."""
    if len(payload) < _IR_SIZE:
        raise RecordFormatError(
            f"{path}: {where}: the record has {len(payload)} bytes, fewer than "
            f"the {_IR_SIZE}-byte image record header; this is not an image "
            "record file (made by im2rec/face2rec or write_face_rec)")
    flag, label, rid, _ = struct.unpack_from(_IR_FORMAT, payload, 0)
    start = _IR_SIZE
    if flag > 0:
        start += 4 * flag
        if len(payload) < start:
            raise RecordFormatError(
                f"{path}: {where}: the header declares a {flag}-value label "
                f"({4 * flag} bytes) but the record has only "
                f"{len(payload) - _IR_SIZE} bytes after the header")
        label = np.frombuffer(payload, np.float32, flag, _IR_SIZE)
    return flag, label, rid, start


def _class_id(label, path, where):
    value = float(label if isinstance(label, numbers.Number) else label[0])
    if not np.isfinite(value) or value < 0 or value != int(value):
        raise ValueError(f"{path}: {where}: label {value!r} is not a class id "
                         "(a non-negative integer)")
    return int(value)


def _pack(label, body, rid):
    """Payload of an image record, byte for byte what ``mx.recordio.pack`` makes."""
    if isinstance(label, numbers.Number):
        return struct.pack(_IR_FORMAT, 0, float(label), rid, 0) + body
    arr = np.asarray(label, dtype=np.float32).reshape(-1)
    return struct.pack(_IR_FORMAT, arr.size, 0.0, rid, 0) + arr.tobytes() + body


def read_index(idx_path, rec_size=None):
    """Read an ``.idx`` file.

    Parameters
    ----------
    idx_path : str
    rec_size : int or None
        Size of the ``.rec`` file; offsets beyond it are reported.

    Returns
    -------
    keys, offsets : numpy.ndarray of int64
        In the order of the file's lines (MXNet's ``MXIndexedRecordIO.keys``).
    """
    keys, offsets = [], []
    with open(idx_path, "r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            try:
                key, off = int(parts[0]), int(parts[1])
                if off < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise RecordFormatError(
                    f"{idx_path}: line {lineno} is {line.rstrip()!r}, expected "
                    "'<integer key>\\t<byte offset>'") from None
            if rec_size is not None and off >= rec_size:
                raise RecordFormatError(
                    f"{idx_path}: line {lineno}: record {key} is expected at "
                    f"byte offset {off}, but the .rec file has only {rec_size} "
                    "bytes (truncated .rec, or a stale index: rebuild it with "
                    "fr_lib.data.rebuild_index)")
            keys.append(key)
            offsets.append(off)
    keys = np.asarray(keys, dtype=np.int64)
    if len(np.unique(keys)) != len(keys):
        uniq, counts = np.unique(keys, return_counts=True)
        raise RecordFormatError(
            f"{idx_path}: key {int(uniq[counts > 1][0])} appears more than once")
    return keys, np.asarray(offsets, dtype=np.int64)


def iter_records(rec_path):
    """Scan a ``.rec`` file from the start.

    Yields
    ------
    offset : int
        Byte offset of the record (what an ``.idx`` line stores).
    payload : bytes
        The record's payload (header included).

    Raises
    ------
    RecordFormatError
        At the first damaged record, naming its number and byte offset.
    """
    rec = _RecFile(rec_path)
    pos, number = 0, 0
    try:
        while pos < rec.size:
            payload, nxt = rec.read(pos, f"record #{number} (sequential scan)")
            yield pos, payload
            pos, number = nxt, number + 1
    finally:
        rec.close()


def rebuild_index(rec_path, idx_path=None, keys="auto"):
    """Scan ``rec_path`` sequentially and write a new ``.idx`` atomically.

    Parameters
    ----------
    rec_path : str
        The ``.rec`` file.
    idx_path : str or None
        Where to write; default: ``rec_path`` with ``.idx`` instead of ``.rec``.
    keys : {'auto', 'id', 'position'}
        ``'id'`` uses each record's ``IRHeader.id`` as key (im2rec and
        face2rec write the key there, so this restores the original index);
        ``'position'`` numbers records 0, 1, 2, ... in file order; ``'auto'``
        uses the ids when every record has a header and the ids are unique,
        otherwise positions.

    Returns
    -------
    str
        The index path.
    """
    if keys not in ("auto", "id", "position"):
        raise ValueError(f"keys must be 'auto', 'id' or 'position', got {keys!r}")
    if not os.path.isfile(rec_path):
        raise FileNotFoundError(f"{rec_path}: no such .rec file")
    idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
    offsets, ids = [], []
    for number, (offset, payload) in enumerate(iter_records(rec_path)):
        offsets.append(offset)
        if keys != "position":
            if len(payload) >= _IR_SIZE:
                ids.append(struct.unpack_from(_IR_FORMAT, payload, 0)[2])
            elif keys == "id":
                raise RecordFormatError(
                    f"{rec_path}: record #{number} at byte offset {offset} has "
                    "no image record header, so it has no id; use "
                    "keys='position'")
            else:
                ids = None
                keys = "position"
    if keys != "position" and len(set(ids)) != len(ids):
        if keys == "id":
            raise RecordFormatError(f"{rec_path}: record ids are not unique; use "
                                    "keys='position'")
        keys = "position"
    names = ids if keys != "position" else range(len(offsets))
    text = "".join(f"{k}\t{o}\n" for k, o in zip(names, offsets))
    atomic_write_bytes(idx_path, text.encode("ascii"))
    return idx_path


def read_property(path):
    """Read a ``property`` file: ``(num_classes, height, width)``.

    Only the first line is read: it is ``num_classes,height,width``. Other
    tools write more lines after it, which are ignored (InsightFace's
    ``rec_builder.py`` adds the image count, its ``rec2shufrec.py`` the image
    count, ``shuffled`` and a date).
    """
    with open(path, "r") as f:
        text = f.read()
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    try:
        values = tuple(int(v) for v in first.split(","))
        if len(values) != 3 or min(values) <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}: expected 'num_classes,height,width' (three "
                         "positive integers) on its first line, found "
                         f"{first!r}") from None
    return values


def write_property(path, num_classes, height, width):
    """Write a ``property`` file atomically (``num_classes,height,width``)."""
    atomic_write_bytes(path, f"{int(num_classes)},{int(height)},{int(width)}\n"
                        .encode("ascii"))


def _looks_like_image(head):
    return any(head.startswith(m) for m in _IMAGE_MAGICS)


# -- the dataset ----------------------------------------------------------------

class RawRecord(tuple):
    """``(data, label, key, source)``: the encoded image of one record, undecoded."""
    __slots__ = ()

    def __new__(cls, data, label, key, source):
        return tuple.__new__(cls, (data, label, key, source))

    data = property(lambda self: self[0])
    label = property(lambda self: self[1])
    key = property(lambda self: self[2])
    source = property(lambda self: self[3])

    def __reduce__(self):
        return RawRecord, tuple(self)


class FaceRecordDataset(gluon.data.Dataset):
    """Face images and class ids from an InsightFace-layout or plain ``.rec``.

    Only image records count: InsightFace's header record (key 0) and identity
    records are read as metadata, never returned, never decoded.

    Parameters
    ----------
    root_or_rec_path : str
        A directory holding ``train.rec``, ``train.idx`` (and usually
        ``property``), or the path of a ``.rec`` file (its ``.idx`` is the same
        name with ``.idx``; ``property`` is looked for in the same directory).
    transform : callable or None
        Called as ``transform(image, label)`` like Gluon's record datasets;
        its result is returned by ``__getitem__``.
    check : bool or 'full'
        ``True`` reads every image record's header (not the image): labels,
        class ids in range, empty payloads, the image format's magic bytes and
        truncation; it also decodes the first image to check its size against
        ``property``. ``'full'`` additionally decodes every image.
        ``False`` trusts the files: for the InsightFace layout the labels then
        come from the identity records (identity ``k`` holds class ``k``, as
        face2rec writes it), which is fast for millions of images.
    skip_bad : bool
        Records whose payload is not an image are an error (default) or, with
        ``True``, left out and listed in :attr:`bad_records`.
    progress : bool
        Show a progress bar while checking.

    Attributes
    ----------
    layout : {'insightface', 'plain'}
    labels : numpy.ndarray of int64
        Class id of each image, read from the headers (no decoding).
    keys : numpy.ndarray of int64
        Record key (``.idx`` key) of each image.
    num_classes : int
    image_size : tuple (height, width) or None
        From ``property``, else from the first image when ``check`` is set.
    property : tuple or None
        ``(num_classes, height, width)`` as read from the ``property`` file.
    bad_records : list of (key, reason)
        Records left out (``skip_bad=True``) or found bad later by
        :class:`FaceRecordIter`.
    """

    def __init__(self, root_or_rec_path, transform=None, check=True,
                 skip_bad=False, progress=False):
        path = os.path.expanduser(root_or_rec_path)
        if not os.path.exists(path):
            from .root import resolve_data_dir
            path = resolve_data_dir(path)  # emore under its old name: warns
        if os.path.isdir(path):
            rec_path = os.path.join(path, "train.rec")
        else:
            rec_path = path
            if not rec_path.endswith(".rec"):
                raise ValueError(f"{path}: give a directory with train.rec or the "
                                 "path of a .rec file")
        if not os.path.isfile(rec_path):
            raise FileNotFoundError(f"{rec_path}: no such .rec file")
        idx_path = os.path.splitext(rec_path)[0] + ".idx"
        if not os.path.isfile(idx_path):
            raise MissingIndexError(
                f"{idx_path}: the index of {rec_path} is missing. Rebuild it "
                f"(one sequential scan) with fr_lib.data.rebuild_index("
                f"{rec_path!r})")
        if check not in (True, False, "full"):
            raise ValueError(f"check must be True, False or 'full', got {check!r}")
        self.rec_path, self.idx_path = rec_path, idx_path
        prop = os.path.join(os.path.dirname(os.path.abspath(rec_path)), "property")
        self.property_path = prop if os.path.isfile(prop) else None
        self.property = read_property(prop) if self.property_path else None
        self._transform = transform
        self.skip_bad = bool(skip_bad)
        self.bad_records = []
        self._progress = progress
        self._rec = _RecFile(rec_path)
        all_keys, all_offsets = read_index(idx_path, self._rec.size)
        if len(all_keys) == 0:
            raise RecordFormatError(f"{idx_path}: the index is empty")
        self._offset_of = dict(zip(all_keys.tolist(), all_offsets.tolist()))
        self._identity_keys = np.zeros(0, np.int64)
        self._detect_layout(all_keys)
        self._offsets = np.asarray([self._offset_of[k] for k in self.keys.tolist()],
                                   dtype=np.int64)
        if check:
            self._scan_headers()
        else:
            self._labels_without_check()
        self._set_num_classes()
        self.image_size = tuple(self.property[1:]) if self.property else None
        if check and len(self):
            self._check_first_image()
        if check == "full":
            self._decode_all()
        self._identity_index = None

    # layout ------------------------------------------------------------------
    def _where(self, key):
        return f"record {key}"

    def _detect_layout(self, all_keys):
        self.layout = "plain"
        self.keys = all_keys
        if 0 not in self._offset_of:
            return
        head, length = self._rec.read_prefix(self._offset_of[0], self._where(0))
        flag, label, _, start = _parse_header(head, self.rec_path, self._where(0))
        if flag < 2 or length != start:
            return  # key 0 is an image: a plain rec
        first, end = int(label[0]), int(label[1])
        if first < 1:
            raise RecordFormatError(
                f"{self.rec_path}: record 0 is an InsightFace header record with "
                f"label {label.tolist()}, but its first value must be the key "
                "of the first identity record (>= 1)")
        self.layout = "insightface"
        self.header = (first, end)
        self.keys = np.arange(1, first, dtype=np.int64)
        self._identity_keys = np.arange(first, max(first, end), dtype=np.int64)
        for kind, ks in (("image", self.keys), ("identity", self._identity_keys)):
            missing = [k for k in ks.tolist() if k not in self._offset_of]
            if missing:
                lo, hi = (1, first) if kind == "image" else (first, end)
                raise RecordFormatError(
                    f"{self.rec_path}: record 0 says the {kind} records are keys "
                    f"{lo}..{hi - 1}, but {self.idx_path} has no key "
                    f"{missing[0]} ({len(missing)} missing)")

    def _read_identities(self):
        """[(start, stop)] of the identity records, as image keys."""
        ranges = []
        for key in self._identity_keys.tolist():
            head, length = self._rec.read_prefix(self._offset_of[key],
                                                  self._where(key))
            flag, label, _, start = _parse_header(head, self.rec_path,
                                                  self._where(key))
            if flag < 2 or length != start:
                raise RecordFormatError(
                    f"{self.rec_path}: record {key} should be an identity record "
                    "(empty image, label [start, stop)) but it "
                    + ("holds an image" if length != start else
                       f"has a {flag}-value label"))
            lo, hi = int(label[0]), int(label[1])
            if not 1 <= lo <= hi <= len(self.keys) + 1:
                raise RecordFormatError(
                    f"{self.rec_path}: identity record {key} covers image keys "
                    f"[{lo}, {hi}), outside the image records 1..{len(self.keys)}")
            ranges.append((lo, hi))
        return ranges

    def _labels_without_check(self):
        if self.layout == "insightface" and len(self._identity_keys):
            labels = np.full(len(self.keys), -1, dtype=np.int64)
            for k, (lo, hi) in enumerate(self._read_identities()):
                labels[lo - 1:hi - 1] = k
            if (labels < 0).any():
                first = int(self.keys[np.argmax(labels < 0)])
                raise RecordFormatError(
                    f"{self.rec_path}: image record {first} belongs to no "
                    "identity record; open with check=True to read the labels "
                    "from the image headers")
            self.labels = labels
        else:
            self._scan_headers(strict=False)

    def _scan_headers(self, strict=True):
        """Read every image record's header: labels, and (strict) sanity checks."""
        labels = np.empty(len(self.keys), dtype=np.int64)
        keep = np.ones(len(self.keys), dtype=bool)
        rec, path = self._rec, self.rec_path
        it = zip(self.keys.tolist(), self._offsets.tolist())
        if self._progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(self.keys), desc="checking records")
        for i, (key, off) in enumerate(it):
            where = self._where(key)
            head, length = rec.read_prefix(off, where)
            flag, label, _, start = _parse_header(head, path, where)
            labels[i] = _class_id(label, path, where)
            if strict:
                reason = None
                if length == start:
                    reason = "its image payload is empty"
                elif not _looks_like_image(head[start:start + 12]):
                    reason = ("its payload does not start like an image file "
                              f"(first bytes {head[start:start + 8].hex()})")
                if reason:
                    if not self.skip_bad:
                        raise BadImageError(
                            f"{path}: {where} is not a valid image record: "
                            f"{reason} (pass skip_bad=True to leave such "
                            "records out)")
                    keep[i] = False
                    self.bad_records.append((key, reason))
        if not keep.all():
            self.keys, self._offsets = self.keys[keep], self._offsets[keep]
            labels = labels[keep]
        self.labels = labels
        if strict and self.layout == "insightface" and len(self._identity_keys):
            self._check_identities()

    def _check_identities(self):
        label_of = dict(zip(self.keys.tolist(), self.labels.tolist()))
        bad = {k for k, _ in self.bad_records}
        for k, (lo, hi) in enumerate(self._read_identities()):
            for key in range(lo, hi):
                if key in bad:
                    continue
                if label_of[key] != k:
                    raise ValueError(
                        f"{self.rec_path}: identity record "
                        f"{int(self._identity_keys[k])} (identity {k}) covers "
                        f"image keys [{lo}, {hi}), but record {key} has label "
                        f"{label_of[key]}; the identity records disagree with "
                        "the image labels")

    def _set_num_classes(self):
        n_ident = len(self._identity_keys) if self.layout == "insightface" else None
        if self.property is not None:
            num_classes = self.property[0]
            if n_ident and n_ident != num_classes:
                raise ValueError(
                    f"{self.property_path} says {num_classes} classes, but "
                    f"{self.rec_path} has {n_ident} identity records (keys "
                    f"{self.header[0]}..{self.header[1] - 1}); the property file "
                    "does not belong to this .rec")
        else:
            num_classes = n_ident or (int(self.labels.max()) + 1
                                      if len(self.labels) else 0)
        if len(self.labels) and self.labels.max() >= num_classes:
            i = int(np.argmax(self.labels >= num_classes))
            source = self.property_path or "the identity records"
            raise ValueError(
                f"{self.rec_path}: record {int(self.keys[i])} has label "
                f"{int(self.labels[i])}, out of range for {num_classes} classes "
                f"(from {source})")
        self.num_classes = int(num_classes)

    def _check_first_image(self):
        while True:
            try:
                img = self._decode(0)
                break
            except BadImageError as err:
                if not self.skip_bad:
                    raise
                self.bad_records.append((int(self.keys[0]), str(err)))
                self.keys, self._offsets = self.keys[1:], self._offsets[1:]
                self.labels = self.labels[1:]
                if not len(self.keys):
                    return
        if self.image_size is None:
            self.image_size = img.shape[:2]
        elif img.shape[:2] != self.image_size:
            raise ValueError(
                f"{self.property_path} says images are {self.image_size[0]}x"
                f"{self.image_size[1]} (height x width), but record "
                f"{int(self.keys[0])} of {self.rec_path} is {img.shape[0]}x"
                f"{img.shape[1]}")

    def _decode_all(self):
        keep = np.ones(len(self.keys), dtype=bool)
        for i in range(len(self.keys)):
            try:
                img = self._decode(i)
            except BadImageError as err:
                if not self.skip_bad:
                    raise
                keep[i] = False
                self.bad_records.append((int(self.keys[i]), str(err)))
                continue
            if img.shape[:2] != self.image_size:
                raise ValueError(
                    f"{self.rec_path}: record {int(self.keys[i])} is "
                    f"{img.shape[0]}x{img.shape[1]}, but the set's images are "
                    f"{self.image_size[0]}x{self.image_size[1]}")
        if not keep.all():
            self.keys, self._offsets = self.keys[keep], self._offsets[keep]
            self.labels = self.labels[keep]

    # access ------------------------------------------------------------------
    def __len__(self):
        return len(self.keys)

    def read_raw(self, idx):
        """The undecoded image of item ``idx`` as a :class:`RawRecord`."""
        key = int(self.keys[idx])
        payload, _ = self._rec.read(int(self._offsets[idx]), self._where(key))
        _, label, _, start = _parse_header(payload, self.rec_path, self._where(key))
        return RawRecord(payload[start:], int(self.labels[idx]), key, self.rec_path)

    def _decode(self, idx):
        raw = self.read_raw(idx)
        img = decode_image(raw.data)
        if img is None:
            raise BadImageError(f"{self.rec_path}: record {raw.key} holds "
                                f"{len(raw.data)} bytes that are not a decodable "
                                "image")
        return img

    def __getitem__(self, idx):
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} images")
        img = mx.nd.array(self._decode(idx), dtype=np.uint8)
        label = int(self.labels[idx])
        if self._transform is not None:
            return self._transform(img, label)
        return img, label

    def raw(self):
        """A Dataset of :class:`RawRecord` (undecoded), for ``FaceBatchify``."""
        return _RawView(self)

    @property
    def identity_index(self):
        """Class id → the dataset positions of its images.

        A ``range`` when the images are contiguous (InsightFace layout), else a
        sorted int64 array. Classes without images are absent.
        """
        if self._identity_index is None:
            order = np.argsort(self.labels, kind="stable")
            sorted_labels = self.labels[order]
            cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
            index = {}
            for group in np.split(order, cuts):
                if len(group) == 0:
                    continue
                label = int(self.labels[group[0]])
                lo, hi = int(group[0]), int(group[-1]) + 1
                index[label] = range(lo, hi) if hi - lo == len(group) else group
            self._identity_index = index
        return self._identity_index

    def summary(self):
        """A few lines describing the set and any bad records."""
        size = (f"{self.image_size[0]}x{self.image_size[1]}"
                if self.image_size else "unknown size")
        lines = [f"{self.rec_path}: {self.layout} layout, {len(self)} images, "
                 f"{self.num_classes} classes, {size}"]
        if self.bad_records:
            lines.append(f"{len(self.bad_records)} bad records left out:")
            lines += [f"  record {k}: {why}" for k, why in self.bad_records[:20]]
            if len(self.bad_records) > 20:
                lines.append(f"  ... and {len(self.bad_records) - 20} more")
        return "\n".join(lines)

    def __repr__(self):
        return (f"FaceRecordDataset({self.rec_path!r}, layout={self.layout!r}, "
                f"images={len(self)}, classes={self.num_classes})")


class _RawView(gluon.data.Dataset):
    def __init__(self, dataset):
        self._dataset = dataset

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, idx):
        return self._dataset.read_raw(idx)


# -- batches ------------------------------------------------------------------

class FaceBatchify:
    """Decode, mirror and normalise a list of :class:`RawRecord` into one batch.

    Usable as ``batchify_fn`` of a ``gluon.data.DataLoader`` over
    ``dataset.raw()``, and used by :class:`FaceRecordIter`. Decoding uses
    OpenCV in ``num_threads`` helper threads (it releases the GIL); the file is
    never read from these threads.

    Parameters
    ----------
    image_size : tuple (height, width) or None
        Size every image must have; ``None`` takes the first image's.
    rand_mirror : bool
        Mirror each image with probability 1/2.
    normalize : bool
        ``True`` gives float32 NCHW in the pixel convention of
        :mod:`fr_lib.data.transforms`; ``False`` gives uint8 NHWC RGB.
    num_threads : int
        Decoding threads (0: decode in the calling thread).
    skip_bad : bool
        Leave undecodable images out of the batch (listed in ``bad_records``)
        instead of raising :class:`BadImageError`.
    seed : int or None
        Seed of the mirror coin flips.
    """

    def __init__(self, image_size=None, rand_mirror=False, normalize=True,
                 num_threads=0, skip_bad=False, seed=None):
        self.image_size = tuple(image_size) if image_size else None
        self.rand_mirror = rand_mirror
        self.normalize = normalize
        self.num_threads = int(num_threads)
        self.skip_bad = skip_bad
        self.bad_records = []
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._pid = os.getpid()
        self._pool = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_pool"] = None
        return d

    def _check_process(self):
        if self._pid != os.getpid():  # a forked worker: own pool, own coins
            self._pid = os.getpid()
            self._pool = None
            self._rng = np.random.RandomState(
                None if self._seed is None else (self._seed + os.getpid()) % 2**32)

    def close(self):
        """Stop the decoding threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def flips(self, n):
        """Draw the mirror decisions for ``n`` images."""
        if not self.rand_mirror:
            return np.zeros(n, dtype=bool)
        return self._rng.randint(0, 2, size=n).astype(bool)

    def __call__(self, records):
        self._check_process()
        return self.decode(records, self.flips(len(records)))

    def decode(self, records, flips):
        """Decode ``records`` with the given mirror decisions: (data, label)."""
        return self.collect(self.submit(records, flips))

    def submit(self, records, flips):
        """Start decoding (in the pool if any); return a handle for ``collect``."""
        n = len(records)
        if self.image_size is None:
            if not n:
                raise ValueError("cannot make a batch from no records")
            for rec in records:  # the first decodable image sets the size
                first = decode_image_bgr(rec[0])
                if first is not None:
                    self.image_size = first.shape[:2]
                    break
        h, w = self.image_size or (0, 0)
        if self.normalize:
            out = np.empty((n, 3, h, w), dtype=np.float32)
        else:
            out = np.empty((n, h, w, 3), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        errors = [None] * n
        if self.num_threads > 0 and n > 1:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.num_threads, thread_name_prefix="fr_decode")
            chunks = np.array_split(np.arange(n), min(n, self.num_threads * 2))
            futures = [self._pool.submit(self._decode_range, records, flips, out,
                                         ok, errors, c[0], c[-1] + 1)
                       for c in chunks if len(c)]
        else:
            self._decode_range(records, flips, out, ok, errors, 0, n)
            futures = []
        return records, out, ok, errors, futures

    def collect(self, pending):
        records, out, ok, errors, futures = pending
        for f in futures:
            f.result()
        for i in np.flatnonzero(~ok).tolist():
            err = errors[i]
            if isinstance(err, BadImageError) and self.skip_bad:
                self.bad_records.append((records[i][2] if len(records[i]) > 2
                                         else None, str(err)))
                continue
            raise err
        if not ok.all():
            out = out[ok]
        labels = np.asarray([r[1] for r, good in zip(records, ok) if good],
                            dtype=np.float32)
        data = mx.nd.from_numpy(np.ascontiguousarray(out), zero_copy=True) \
            if len(out) else mx.nd.array(out, dtype=out.dtype)
        return data, mx.nd.array(labels, dtype=np.float32)

    def _decode_range(self, records, flips, out, ok, errors, lo, hi):
        for i in range(lo, hi):
            rec = records[i]
            img = decode_image_bgr(rec[0])
            if img is None or img.shape[:2] != self.image_size:
                ok[i] = False
                key = rec[2] if len(rec) > 2 else i
                source = (rec[3] + ": ") if len(rec) > 3 else ""
                if img is None:
                    errors[i] = BadImageError(
                        f"{source}record {key} holds {len(rec[0])} bytes that "
                        "are not a decodable image")
                else:
                    errors[i] = ValueError(
                        f"{source}record {key} is {img.shape[0]}x{img.shape[1]}, "
                        f"but the batch needs {self.image_size[0]}x"
                        f"{self.image_size[1]} (from property or the first image)")
                continue
            if self.normalize:
                _normalize_bgr_into(out[i], img, flip=bool(flips[i]))
            else:
                src = img[:, ::-1, ::-1] if flips[i] else img[:, :, ::-1]
                out[i] = src


class FaceRecordIter:
    """Fast batches from a :class:`FaceRecordDataset`.

    The file is read in the calling thread (a handful of ``pread`` calls per
    batch); decoding, mirroring and normalisation of the whole batch happen in
    :class:`FaceBatchify`, optionally in helper threads, while the next batch's
    bytes are being read. Labels and pixels are exactly those of the dataset's
    ``__getitem__`` followed by :func:`~fr_lib.data.transforms.normalize_batch`.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
        The dataset, or a path given to :class:`FaceRecordDataset`.
    batch_size : int
    shuffle : bool
        New random order every epoch (ignored with ``batch_sampler``).
    last_batch : {'keep', 'discard'}
        What to do with a final incomplete batch.
    rand_mirror : bool
        Mirror each image with probability 1/2.
    normalize : bool
        float32 NCHW in the pixel convention (default) or uint8 NHWC RGB.
    num_workers : int
        Decoding threads (0: decode in the calling thread).
    batch_sampler : iterable of lists of int or None
        Gives the dataset positions of each batch (e.g. a P×K sampler); it is
        iterated once per epoch.
    seed : int or None
        Seed for shuffling and mirroring.

    Yields
    ------
    data : NDArray
        ``(B, 3, H, W)`` float32 (or ``(B, H, W, 3)`` uint8).
    label : NDArray
        ``(B,)`` float32 class ids.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, last_batch="keep",
                 rand_mirror=False, normalize=True, num_workers=0,
                 batch_sampler=None, seed=None):
        if isinstance(dataset, str):
            dataset = FaceRecordDataset(dataset)
        if last_batch not in ("keep", "discard"):
            raise ValueError(f"last_batch must be 'keep' or 'discard', got "
                             f"{last_batch!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.last_batch = last_batch
        self.batch_sampler = batch_sampler
        self._rng = np.random.RandomState(seed)
        self.batchify = FaceBatchify(dataset.image_size, rand_mirror, normalize,
                                     num_workers, dataset.skip_bad,
                                     None if seed is None else seed + 1)

    def _batches(self):
        if self.batch_sampler is not None:
            return iter(self.batch_sampler)
        n = len(self.dataset)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.last_batch == "discard" else n
        return (order[i:min(i + self.batch_size, stop)].tolist()
                for i in range(0, stop, self.batch_size))

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.dataset)
        return n // self.batch_size if self.last_batch == "discard" else \
            -(-n // self.batch_size)

    def __iter__(self):
        read, bf = self.dataset.read_raw, self.batchify
        pending = None
        try:
            for positions in self._batches():
                records = [read(i) for i in positions]
                nxt = bf.submit(records, bf.flips(len(records)))
                if pending is not None:
                    yield bf.collect(pending)
                pending = nxt
            if pending is not None:
                batch, pending = pending, None
                yield bf.collect(batch)
        finally:
            if pending is not None:  # abandoned mid-epoch: let threads finish
                for f in pending[4]:
                    f.result()
            self._merge_bad()

    def _merge_bad(self):
        if self.batchify.bad_records:
            self.dataset.bad_records.extend(self.batchify.bad_records)
            self.batchify.bad_records = []

    def close(self):
        """Stop the decoding threads."""
        self.batchify.close()


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
    from .tools import jpeg_orientation
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
    from .tools import jpeg_orientation
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


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:  # pragma: no cover
        return True
    return True


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
                        _pid_alive(pid):
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

"""The RecordIO file format: chunks, image-record headers, ``.idx`` files and ``property``.

See :mod:`fr_lib.data.recordio` for the facts about the format this relies on.
"""
import numbers
import os
import struct

import numpy as np

from ...utils.fileio import atomic_write_bytes


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

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

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

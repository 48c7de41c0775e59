"""``FaceRecordDataset``: random access to the images and labels of a ``.rec``/``.idx`` pair."""
import os

import numpy as np
import mxnet as mx
from mxnet import gluon

from ..transforms import decode_image
from .format import (BadImageError, MissingIndexError, RecordFormatError,
                     _RecFile, _class_id, _looks_like_image, _parse_header,
                     read_index, read_property)


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

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

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
            from ..root import resolve_data_dir
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

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

The package is split by responsibility (each module's docstring says what it
holds): :mod:`.format` (chunks, headers, index, property), :mod:`.dataset`
(``FaceRecordDataset``), :mod:`.decode` (``FaceBatchify``),
:mod:`.batching` (``FaceRecordIter``, ``RecordBatches``), :mod:`.writer`
(``write_face_rec``), :mod:`.workdirs` (its temporary folders,
``remove_stale_work_dirs``) and :mod:`.upright` (``find_rotated_jpegs``,
``write_upright_rec``). Every public name is importable from here.
"""
# MAGIC and LEGACY_WORK_DIR_AGE are constants kept importable from here.
from .format import (MAGIC, RecordFormatError, MissingIndexError, BadImageError,
                     read_property, write_property, read_index, rebuild_index,
                     iter_records)
from .dataset import FaceRecordDataset, RawRecord
from .decode import FaceBatchify
from .batching import FaceRecordIter, RecordBatches
from .writer import write_face_rec
from .workdirs import remove_stale_work_dirs, LEGACY_WORK_DIR_AGE
from .upright import find_rotated_jpegs, write_upright_rec

__all__ = ["RecordFormatError", "MissingIndexError", "BadImageError",
           "read_property", "write_property", "read_index", "rebuild_index",
           "iter_records", "FaceRecordDataset", "RawRecord", "FaceBatchify",
           "FaceRecordIter", "RecordBatches", "write_face_rec", "remove_stale_work_dirs",
           "find_rotated_jpegs", "write_upright_rec"]

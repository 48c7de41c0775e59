"""The index DALI's reader is given: the image records only, this part's
share (:func:`write_dali_index`); and the check that a rec holds no JPEG stored
rotated, which DALI would decode differently from the Gluon path."""
import os
import tempfile
import zlib

from ...utils.fileio import atomic_write_bytes
from ..source import check_part, shard

__all__ = ["write_dali_index"]


def _dataset(dataset_or_path, check=True):
    from ..recordio import FaceRecordDataset
    if isinstance(dataset_or_path, FaceRecordDataset):
        return dataset_or_path
    return FaceRecordDataset(dataset_or_path, check=check)


def _index_text(dataset, positions):
    keys, offsets = dataset.keys[positions], dataset._offsets[positions]
    return "".join(f"{k}\t{o}\n" for k, o in zip(keys.tolist(), offsets.tolist()))


def _part_suffix(num_parts, part_index):
    return "" if num_parts == 1 else f"-{part_index}of{num_parts}"


def _default_index_path(rec_path, suffix=""):
    return os.path.splitext(rec_path)[0] + f".dali{suffix}.idx"


def _fallback_index_path(rec_path, suffix=""):
    tag = zlib.crc32(os.path.abspath(rec_path).encode("utf-8"))
    name = os.path.splitext(os.path.basename(rec_path))[0]
    return os.path.join(tempfile.gettempdir(), "fr_lib_dali",
                        f"{name}-{tag:08x}.dali{suffix}.idx")


def write_dali_index(dataset, idx_path=None, check=True, num_parts=1, part_index=0):
    """Write an index of the image records only, for DALI's reader.

    Book: introduced in ``chapter_data/dali`` (DALI 流水线).

    InsightFace's header record and identity records (and records left out
    with ``skip_bad=True``) are not listed, so DALI never decodes an empty
    payload. The file is written atomically, and only when its content would
    change.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
        The dataset, or a directory / ``.rec`` path opened as
        ``FaceRecordDataset(path, check=check)``.
    idx_path : str or None
        Where to write; default: ``<stem>.dali.idx`` next to the ``.rec``
        (``train.dali.idx``), or a file under the temporary directory when
        that folder is read-only.
    check : bool or 'full'
        Passed to :class:`~fr_lib.data.FaceRecordDataset` when a path is
        given: ``True`` reads every image header and refuses empty or
        non-image payloads.
    num_parts, part_index : int, default 1, 0
        List only part ``part_index`` of the image records in file order
        (:func:`~fr_lib.data.source.shard`); the default path then ends in
        ``.dali-<part_index>of<num_parts>.idx``.

    Returns
    -------
    str
        The path of the index.
    """
    ds = _dataset(dataset, check)
    if not len(ds):
        raise ValueError(f"{ds.rec_path}: no image records to index")
    num_parts, part_index = check_part(num_parts, part_index)
    positions = shard(len(ds), num_parts, part_index)
    if not positions.size:
        raise ValueError(f"part {part_index} of {num_parts} is empty: "
                         f"{ds.rec_path} has only {len(ds)} images")
    text = _index_text(ds, positions).encode("ascii")
    suffix = _part_suffix(num_parts, part_index)
    candidates = [idx_path] if idx_path else \
        [_default_index_path(ds.rec_path, suffix),
         _fallback_index_path(ds.rec_path, suffix)]
    for i, path in enumerate(candidates):
        try:
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    if f.read() == text:
                        return path
            return atomic_write_bytes(path, text)
        except OSError:
            if i == len(candidates) - 1:
                raise
    return None  # not reached


def _refuse_rotated(dataset):
    from ..recordio import find_rotated_jpegs
    rotated = find_rotated_jpegs(dataset)
    if rotated:
        key, orientation = rotated[0]
        raise ValueError(
            f"{dataset.rec_path}: {len(rotated)} image record(s) hold a JPEG "
            f"stored rotated (EXIF orientation), e.g. record {key} (orientation "
            f"{orientation}). DALI 1.35 decodes them without the rotation, "
            "unlike the Gluon path; write an upright copy with "
            "fr_lib.data.recordio.write_upright_rec(rec_folder, new_folder) "
            "(fr-data folder2rec stores photos upright)")

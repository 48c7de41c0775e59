"""Batches from a RecordIO training set through NVIDIA DALI's MXNet reader.

DALI (``nvidia-dali-cuda120==1.35.0``, the last release with the MXNet plugin,
Python 3.8-3.12) reads a ``.rec`` with ``fn.readers.mxnet``, decodes the JPEGs
on the GPU (``device='mixed'``) or in its own CPU thread pool, and mirrors and
normalises the images with ``fn.crop_mirror_normalize``. Its CPU pipelines run
without any GPU. :class:`DaliFaceIter` gives the same batches as
:class:`~fr_lib.data.FaceRecordIter`: float32 NCHW RGB with
``(x - 127.5) / 128`` and float32 class ids.

Facts about DALI's reader that this package works around:

- It decodes **every** record listed in the ``.idx``. InsightFace's header
  record (key 0) and identity records have empty images; handed to the decoder
  they stop the pipeline with an error about an unknown image format. So the
  reader is given an index of the image records only
  (:func:`write_dali_index`), never InsightFace's own ``train.idx``.
- It ignores the keys and the order of the ``.idx`` lines: it sorts the byte
  offsets, and a record's size is the distance to the next listed offset (its
  parser reads only the first record of that span, so leaving records out of
  the index is safe).
- ``random_shuffle`` draws from a buffer of ``initial_fill`` samples read in
  file order, so on a rec grouped by identity a batch sees only nearby
  identities. For a full shuffle, write a shuffled plain rec
  (``write_face_rec(..., layout='plain', shuffle_seed=0)``).
- Its own sharding (``shard_id``/``num_shards``) takes the contiguous slice
  ``[size*i//n, size*(i+1)//n)`` of the records in file order. fr_lib does
  not use it: :class:`DaliFaceIter` writes an index of its part only
  (:func:`~fr_lib.data.source.shard` of the image records in file order,
  the rule of every fr_lib data source) and reads it as one shard, so each
  worker reads one contiguous stretch of the file.
- Its decoders do not apply a JPEG's EXIF orientation tag as OpenCV (the
  Gluon path) does: ``fn.decoders.image`` ignores it, and on the CPU
  ``fn.experimental.decoders.image(adjust_orientation=True)`` swaps height
  and width of a quarter-turned photo without turning its pixels and leaves
  an upside-down one as it is (measured with 1.35.0). So the two paths agree
  by keeping rotated JPEGs out of the rec: ``fr-data folder2rec`` stores such
  photos upright, and :class:`DaliFaceIter` refuses a rec that holds one
  (found with :func:`~fr_lib.data.recordio.find_rotated_jpegs`), naming it
  and :func:`~fr_lib.data.recordio.write_upright_rec`, which writes an
  upright copy.

:class:`DaliFaceIter` is a :class:`~fr_lib.data.source.BatchSource`
(``next_batch``, ``state_dict``, ``load_state_dict``), so
:class:`~fr_lib.train.FaceTrainer` can train from it. DALI prefetches in its
own threads (``prefetch_queue_depth``); the position is that of the batches
handed out. A DALI pipeline cannot jump to a position: resuming rebuilds the
pipeline with the same seed and runs it forward to the saved position (the
batches in between are decoded and dropped, so this costs as much as reading
them), which reproduces the reader's shuffle and the mirror coins exactly.

DALI is imported only when an iterator is built, so ``fr_lib`` imports
without it.

The package is split by responsibility: :mod:`.index` (the index of image
records DALI's reader is given, and the refusal of EXIF-rotated JPEGs) and
:mod:`.iterator` (:class:`DaliFaceIter`, the pipeline). Every name is
importable from here.
"""
__all__ = ["DALI_PIP", "dali_available", "write_dali_index", "DaliFaceIter"]

DALI_PIP = 'pip install "nvidia-dali-cuda120==1.35.0"'
"""The command that installs the DALI release this package is written for."""


def _import_dali():
    """(nvidia.dali, DALIGluonIterator, LastBatchPolicy) or a clear ImportError."""
    try:
        import nvidia.dali as dali
        from nvidia.dali.plugin.mxnet import DALIGluonIterator, LastBatchPolicy
    except ImportError as err:
        raise ImportError(
            "fr_lib.data.DaliFaceIter needs NVIDIA DALI with its MXNet plugin, "
            "which ends with release 1.35.0 (Python 3.8 to 3.12; its CPU "
            f"pipelines need no GPU). Install it with: {DALI_PIP}  "
            f"(import failed: {err})") from err
    return dali, DALIGluonIterator, LastBatchPolicy


def dali_available():
    """``True`` when NVIDIA DALI and its MXNet plugin can be imported.

    Book: introduced in ``chapter_data/dali`` (DALI 流水线).

    Returns
    -------
    bool
    """
    try:
        _import_dali()
    except ImportError:
        return False
    return True


# After _import_dali: the iterator imports it from here.
from .index import write_dali_index  # noqa: E402
from .iterator import DaliFaceIter  # noqa: E402

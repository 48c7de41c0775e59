"""Batch sources: one protocol, one sharding rule, one prefetcher.

Every training batch source of fr_lib — :class:`ArrayBatches` (in-memory
arrays), :class:`~fr_lib.data.recordio.RecordBatches` and
:class:`~fr_lib.data.recordio.FaceRecordIter` (RecordIO, decoded with
OpenCV) and :class:`~fr_lib.data.dali.DaliFaceIter` (RecordIO, decoded by
NVIDIA DALI) — implements :class:`BatchSource`, the interface that
:class:`~fr_lib.train.FaceTrainer` pulls from:

``next_batch() -> (X, y)``
    The next batch as NDArrays: ``X`` the samples, ``y`` float32 class ids.
    The stream never ends: after the last batch of an epoch comes the first
    batch of the next one.
``len(source)``
    Batches per epoch (of this part).
``state_dict()`` / ``load_state_dict(state)``
    The position as a JSON-serialisable dict with at least ``epoch`` and
    ``batch`` (the next batch is batch ``batch`` of epoch ``epoch``); a
    source given a saved state continues with exactly the batches that
    would have followed. A state saved by a source with another seed,
    size, batch size or sharding is refused.
``epoch``, ``batch``
    The position as attributes (what ``state_dict()`` holds; read by
    :func:`fr_lib.train.callbacks.epoch_finished`).
``num_parts``, ``part_index``
    Which share of the data this source reads (see :func:`shard`).
``close()``
    Stop background threads; the source can still be used afterwards
    (threads start again when needed).

**Prefetching.** :class:`Prefetcher` runs any source's ``next_batch`` in a
background thread, a bounded number of batches ahead, so that reading and
decoding the next batch overlap the trainer's step. Its ``state_dict`` is the
position after the batch the *consumer* last received, not that of the
producer thread, so a checkpoint taken while batches are in flight resumes
at the right batch. An exception raised while making a batch is raised again
by the ``next_batch`` call that would have returned it, with a note naming
the position (the source's own message names the record and file).
``RecordBatches(prefetch=2)`` (its default) uses it. ``FaceRecordIter``
overlaps in its own way (its ``num_workers`` decoding threads work on the
next batch while the caller uses the current one) and ``DaliFaceIter`` in
DALI's threads; either can still be wrapped in a :class:`Prefetcher`.

**Randomness.** ``ArrayBatches``, ``RecordBatches`` and ``FaceRecordIter``
draw the order of epoch ``e`` from ``default_rng([seed, e])``
(:func:`epoch_order`) and the mirror flips of batch ``b`` from
``default_rng([seed, e, b, part_index, 1])`` (:func:`mirror_flips`), so a
position is all a resumed stream needs. DALI draws from its pipeline seed;
``DaliFaceIter`` resumes by running a new pipeline to the position.

**Sharding.** Every source splits its data between ``num_parts`` workers
with :func:`shard` (contiguous blocks, the first ``n % num_parts`` one
longer). Sources that feed a synchronous trainer
(:class:`ArrayBatches`, ``RecordBatches``, ``FaceRecordIter``) apply it to
each *global batch* — the ``num_parts * batch_size`` consecutive positions of
the epoch order that the workers consume in one step — so that ``k`` workers
with batch ``B`` see exactly the samples one worker with batch ``k·B`` sees.
:class:`~fr_lib.data.ShardSampler` applies it to the whole epoch order,
:class:`~fr_lib.data.PKSampler` to the shuffled identities and
``DaliFaceIter`` to the image records in file order (a contiguous stretch of
the file per worker). Partial FC cuts its *classes* over devices by the same
rule (:func:`~fr_lib.data.source.shard_range`, the block of one part).

The package is split by responsibility: :mod:`.sharding` (the sharding rule and
the position-keyed randomness), :mod:`.protocol` (:class:`BatchSource`) and
:mod:`.batches` (:class:`ArrayBatches` and the resumable base class it shares
with ``RecordBatches``). Every name is importable from here.
"""
from ..prefetch import Prefetcher
from .sharding import (check_part, epoch_order, global_batches, mirror_flips, shard,
                       shard_range)
from .protocol import BatchSource, check_state
from .batches import ArrayBatches, ResumableBatches

__all__ = ["shard", "shard_range", "BatchSource", "Prefetcher", "ArrayBatches"]

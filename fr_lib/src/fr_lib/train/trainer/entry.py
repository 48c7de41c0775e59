"""The entry point of recipes and the command line: :func:`train` builds the
data source a :class:`~fr_lib.train.trainer.TrainConfig` names (sharded over
the distributed workers) and runs a
:class:`~fr_lib.train.trainer.FaceTrainer` on it."""
from ...data.recordio import RecordBatches
from ...utils.checks import check_int
from .config import TrainConfig
from .face_trainer import FaceTrainer

__all__ = ["train"]


def train(config, data=None, backbone=None, head=None, val_sets=None, callbacks=()):
    """Train from a config (the entry point of recipes and the command line).

    Book: introduced in ``chapter_training/partial-fc`` (大分类层与 Partial FC).

    Parameters
    ----------
    config : TrainConfig or dict
    data : data source, optional
        Default: ``config.data_source`` (:class:`RecordBatches` or DALI's
        :class:`~fr_lib.data.dali.DaliFaceIter`) over ``config.data``, sharded over
        the distributed workers.
    backbone, head, val_sets, callbacks
        See :class:`~fr_lib.train.trainer.FaceTrainer`.

    Returns
    -------
    TrainResult
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if data is None:
        if not config.data:
            raise ValueError("give a data source or set config.data to a RecordIO "
                             "directory")

        source = str(config.data_source).lower()
        if source not in ("record", "dali"):
            raise ValueError(f"data_source must be 'record' or 'dali', got "
                             f"{config.data_source!r}")
        if source == "dali" and config.pk_k:
            raise ValueError(f"pk_k={config.pk_k}: P x K batches come from "
                             "data_source='record'; DALI reads the shard in its "
                             "own shuffled order")

        def data(num_parts, part_index):
            if source == "dali":
                from ...data.dali import DaliFaceIter
                return DaliFaceIter(config.data, batch_size=config.batch_size,
                                    shard_id=part_index, num_shards=num_parts,
                                    shuffle=True, rand_mirror=config.rand_mirror,
                                    seed=config.seed, last_batch="discard",
                                    check=config.data_check)
            sampler = None
            if config.pk_k:  # P×K batches (metric losses): P = batch_size // K
                from ...data.recordio import FaceRecordDataset
                from ...data.sampler import PKSampler
                check_int("pk_k", config.pk_k, 1)
                if config.batch_size % config.pk_k:
                    raise ValueError(f"pk_k={config.pk_k} must divide batch_size="
                                     f"{config.batch_size} (P x K batches)")
                dataset = FaceRecordDataset(config.data, check=config.data_check)
                sampler = PKSampler(dataset.identity_index,
                                    config.batch_size // config.pk_k, config.pk_k,
                                    seed=config.seed, num_parts=num_parts,
                                    part_index=part_index)
                return RecordBatches(dataset, rand_mirror=config.rand_mirror,
                                     seed=config.seed, decode_threads=config.decode_threads,
                                     batch_sampler=sampler)
            return RecordBatches(config.data, batch_size=config.batch_size,
                                 rand_mirror=config.rand_mirror, seed=config.seed,
                                 decode_threads=config.decode_threads, num_parts=num_parts,
                                 part_index=part_index, check=config.data_check)
    trainer = FaceTrainer(config, data, backbone=backbone, head=head,
                          val_sets=val_sets, callbacks=callbacks)
    return trainer.fit()

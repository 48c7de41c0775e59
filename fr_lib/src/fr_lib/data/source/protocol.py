"""The interface every training batch source implements (:class:`BatchSource`,
see :mod:`fr_lib.data.source`) and the check of a saved position."""
import abc

from ..prefetch import Prefetcher

__all__ = ["BatchSource", "check_state"]


class BatchSource(abc.ABC):
    """The interface of a training batch source (see :mod:`fr_lib.data.source`).

    Subclasses implement :meth:`next_batch`, ``__len__``, :meth:`state_dict`
    and :meth:`load_state_dict`, and set ``num_parts``/``part_index`` when
    they shard. A source is a context manager that closes itself.
    """

    num_parts = 1
    part_index = 0

    @abc.abstractmethod
    def next_batch(self):
        """The next ``(X, y)`` pair of NDArrays; moves the position on."""

    @abc.abstractmethod
    def __len__(self):
        """Batches per epoch."""

    @abc.abstractmethod
    def state_dict(self):
        """The position (JSON-serialisable dict with ``epoch`` and ``batch``)."""

    @abc.abstractmethod
    def load_state_dict(self, state):
        """Continue from a position saved by :meth:`state_dict`."""

    def close(self):
        """Stop background threads. The source stays usable: the next
        :meth:`next_batch` continues where it stopped (restarting its
        threads). :meth:`FaceTrainer.fit <fr_lib.train.trainer.FaceTrainer.fit>`
        calls it on the way out, so a prefetching source does not keep a
        thread after training."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BatchSource.register(Prefetcher)


def check_state(source, state, keys):
    """Refuse a saved position whose stream had other ``keys`` values."""
    if not isinstance(state, dict) or "epoch" not in state or "batch" not in state:
        raise ValueError(f"a data position must be a dict with 'epoch' and 'batch' "
                         f"(from state_dict()), got {state!r}")
    for key in keys:
        if key in state and state[key] != getattr(source, key):
            raise ValueError(f"cannot resume the data position: the checkpoint "
                             f"has {key}={state[key]!r}, this data source "
                             f"{getattr(source, key)!r}")
    return int(state["epoch"]), int(state["batch"])

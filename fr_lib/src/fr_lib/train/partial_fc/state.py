"""What Partial FC saves and restores: the class-centre matrix and its momentum,
joined over the shards, and written independently of the sharding.
"""
import numpy as np
import mxnet as mx

__all__ = ["PartialFCState"]


class PartialFCState:
    """The state half of :class:`~fr_lib.train.partial_fc.PartialFC`: read,
    overwrite, save and load its class centres and momentum.

    A base class of ``PartialFC`` only: it uses the head's shards
    (``_weights``, ``_moms`` on ``ctx``, classes ``shard_ranges``),
    ``num_classes``, ``in_units`` and ``num_update``.
    """

    def _join(self, arrays):
        return mx.nd.concat(*[a.as_in_context(mx.cpu()) for a in arrays], dim=0) \
            if len(arrays) > 1 else arrays[0].copyto(mx.cpu())

    def weight(self):
        """The whole class-centre matrix ``(num_classes, in_units)`` on the CPU.

        Returns
        -------
        NDArray
            A copy (the shards joined in class order).
        """
        return self._join(self._weights)

    def momentum_buffer(self):
        """The whole momentum matrix ``(num_classes, in_units)`` on the CPU.

        Returns
        -------
        NDArray
            A copy (the shards joined in class order).
        """
        return self._join(self._moms)

    def set_weight(self, weight):
        """Overwrite the class centres (e.g. from a full NormDense head).

        Parameters
        ----------
        weight : NDArray or numpy.ndarray
            Shape ``(num_classes, in_units)``.

        Raises
        ------
        ValueError
            For a wrong shape.
        """
        self._copy_in(self._weights, weight, "weight")

    def _copy_in(self, shards, value, name):
        value = value.asnumpy() if isinstance(value, mx.nd.NDArray) else np.asarray(value)
        if value.shape != (self.num_classes, self.in_units):
            raise ValueError(f"{name} must have shape ({self.num_classes}, "
                             f"{self.in_units}), got {value.shape}")
        for (start, stop), dst in zip(self.shard_ranges, shards):
            dst[:] = value[start:stop].astype(np.float32)

    def state_dict(self):
        """Everything needed to resume training, independent of the sharding.

        Returns
        -------
        dict of str to NDArray
            ``weight`` and ``momentum`` (both ``(num_classes, in_units)``, CPU)
            and ``num_update`` (a (1,) int64 array). The sampling generator's
            state is not included (:class:`~fr_lib.train.FaceTrainer` passes
            a generator per step to :meth:`forward`, a function of the run's
            seed and iteration, so it needs none).
        """
        return {"weight": self.weight(), "momentum": self.momentum_buffer(),
                "num_update": mx.nd.array([self.num_update], dtype="int64")}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output, for any number of shards.

        Parameters
        ----------
        state : dict
            With keys ``weight``, ``momentum`` and optionally ``num_update``.

        Raises
        ------
        ValueError
            For a missing key or a shape that does not match this head.
        """
        missing = {"weight", "momentum"} - set(state)
        if missing:
            raise ValueError(f"state misses {sorted(missing)}")
        self._copy_in(self._weights, state["weight"], "weight")
        self._copy_in(self._moms, state["momentum"], "momentum")
        if "num_update" in state:
            n = state["num_update"]
            self.num_update = int(n.asscalar() if isinstance(n, mx.nd.NDArray)
                                  else np.asarray(n).reshape(-1)[0])
        self._pending = None

    def save(self, path):
        """Write :meth:`state_dict` to ``path`` with ``mx.nd.save``.

        Parameters
        ----------
        path : str
            File to write.
        """
        mx.nd.save(path, self.state_dict())

    def load(self, path):
        """Read a file written by :meth:`save` into this head.

        Parameters
        ----------
        path : str
            File to read.
        """
        self.load_state_dict(mx.nd.load(path))

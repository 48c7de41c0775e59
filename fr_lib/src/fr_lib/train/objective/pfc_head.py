"""The Partial FC head of an objective (``TrainConfig.head='partial_fc'``):
built from the first embeddings, updated by the trainer after the gluon
optimizer, undone on a skipped step and saved in ``partial_fc.params``."""
import numpy as np
import mxnet as mx

__all__ = []


class _PartialFCHead:
    """The methods :class:`~fr_lib.train.objective.Objective` uses for a
    Partial FC head (``self.partial_fc``, built from ``self._pfc_args``);
    for the other heads they do nothing."""

    def _build_partial_fc(self, in_units, initial):
        from ..partial_fc import PartialFC
        args = dict(self._pfc_args)
        rng = args.pop("rng", None)
        self.partial_fc = pfc = PartialFC(self.num_classes, in_units, loss=self.loss,
                                          weight_initializer=mx.init.Zero(), **args)
        if initial:
            # the authors' N(0, 0.01²), from the trainer's generator (stream 2)
            gen = rng(2) if rng is not None else np.random.default_rng()
            pfc.set_weight(gen.normal(0.0, 0.01, (self.num_classes, in_units))
                           .astype(np.float32))
        return pfc

    # -- the Partial FC head's update, undo and checkpoint -------------------------
    def step_head(self, lr, batch_size):
        """Update a Partial FC head (the rows sampled by the last forward),
        keeping those rows and their momentum for :meth:`undo`; nothing for
        the other heads (the gluon Trainer updates them)."""
        pfc = self.partial_fc
        if pfc is None or pfc._pending is None:
            return
        moms = [mx.nd.take(pfc._moms[s], local, axis=0)
                for s, (_, local) in enumerate(pfc._pending)]
        self._pfc_saved = [(local, w_sub.detach(), m)
                           for (w_sub, local), m in zip(pfc._pending, moms)]
        pfc.learning_rate = float(lr)
        pfc.step(batch_size)

    def head_grads(self):
        """``(ctx index, gradient)`` of the rows a Partial FC head sampled in
        the last forward (empty for the other heads or after its update)."""
        pfc = self.partial_fc
        if pfc is None or pfc._pending is None:
            return []
        return [(s, w_sub.grad) for s, (w_sub, _) in enumerate(pfc._pending)]

    def head_arrays(self):
        """``(label, ctx index, array)`` of a Partial FC head's weights and
        momentum (empty for the other heads)."""
        pfc = self.partial_fc
        if pfc is None:
            return []
        return [(f"partial_fc {what} shard {s}", s, a)
                for what, arrays in (("weight", pfc._weights), ("momentum", pfc._moms))
                for s, a in enumerate(arrays)]

    def save_head(self, path):
        """Write a Partial FC head's state (:meth:`PartialFC.save`)."""
        self.partial_fc.save(path)

    def load_head(self, path):
        """Read a Partial FC head's state, building the head if needed."""
        state = mx.nd.load(path)
        if "weight" not in state:
            raise ValueError(f"{path}: not a Partial FC state (no 'weight')")
        if self.partial_fc is None:
            self._build_partial_fc(int(state["weight"].shape[1]), initial=False)
        self.partial_fc.load_state_dict(state)

    def _undo_head(self):
        """Put a Partial FC head's rows back as they were before :meth:`step_head`."""
        pfc = self.partial_fc
        if pfc is None:
            return
        if self._pfc_saved is not None:
            for s, (local, w, m) in enumerate(self._pfc_saved):
                pfc._weights[s][:] = mx.nd.contrib.index_copy(pfc._weights[s], local, w)
                pfc._moms[s][:] = mx.nd.contrib.index_copy(pfc._moms[s], local, m)
            pfc.num_update -= 1
        self._pfc_saved = None
        pfc._pending = None

"""The run-safety guards of a training step: non-finite detection, the
snapshot that undoes a bad step, and the label check.

:class:`StepGuard` is owned by :class:`~fr_lib.train.trainer.FaceTrainer`
(``trainer.guard``): before each step it copies everything the step writes
(weights, BatchNorm running statistics, optimizer state and update counters)
into buffers kept on the devices, it measures the squared norms of the
gradient and of the updated state, and it copies the snapshot back when the
step turned out non-finite. ``max_bad_steps`` such steps in a row stop
training with :class:`NonFiniteError`.
"""
import math

import numpy as np
import mxnet as mx

from ...utils.checks import label_errors

__all__ = ["NonFiniteError", "StepGuard", "check_batch_labels"]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss, gradient or update,
    or a checkpoint would have held non-finite values."""


#: What a bad step's reason means, for the messages.
REASONS = {"loss": "loss", "gradient": "gradient",
           "update": "update (it made a weight or a BatchNorm running statistic "
                     "non-finite)"}


def _flatten_state(state):
    """The NDArrays of an optimizer state (None, an array, nested tuples)."""
    if state is None:
        return []
    if isinstance(state, mx.nd.NDArray):
        return [state]
    if isinstance(state, (list, tuple)):
        return [a for s in state for a in _flatten_state(s)]
    return []


def fetch(parts):
    """One device-to-host transfer of several (1,) arrays (float64 on the host)."""
    return mx.nd.concat(*parts, dim=0).asnumpy().astype(np.float64)


def why_bad(loss_sum, grad_sq, state_sq):
    """``'loss'``, ``'gradient'`` or ``'update'``: the first of the three
    host numbers that is not finite; None when all are."""
    if not math.isfinite(loss_sum):
        return "loss"
    if not math.isfinite(grad_sq):
        return "gradient"
    if not math.isfinite(state_sq):
        return "update"
    return None


def sum_sq(arrays, ctx):
    """Sum of squares of ``arrays`` (one context) as a (1,) float32 array on ``ctx``."""
    if not arrays:
        return mx.nd.zeros((1,), ctx=ctx)
    if all(a.dtype == np.float32 for a in arrays):
        # one operator for all of them (a sum and a square per array
        # cost ~20 ms of a MobileFaceNet step)
        sq = mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).sum()
    else:
        sq = mx.nd.add_n(*[mx.nd.sum(mx.nd.square(a.astype("float32")))
                           for a in arrays])
    return sq.reshape((1,)).as_in_context(ctx)


class StepGuard:
    """Measure and undo what one training step does to the trainer's state.

    Parameters
    ----------
    params : ParameterDict
        The trained parameters (backbone and head).
    ctx : list of Context
    trainer : gluon.Trainer
        Its optimizer states and update counters are snapshotted too.
    objective : fr_lib.train.objective.Objective
        A Partial FC head keeps its own weights and gradients there.
    """

    def __init__(self, params, ctx, trainer, objective):
        self.params, self.ctx, self.trainer = params, ctx, trainer
        self.objective = objective
        self._snap, self._snap_states, self._snap_counts = {}, [], None
        self._snap_full = True

    # -- what the step wrote ---------------------------------------------------
    def grads(self, ctx_index):
        """The gradients of the trained parameters on context ``ctx_index``."""
        return [p.list_grad()[ctx_index] for p in self.params.values()
                if p.grad_req != "null"]

    def head_grads(self):
        """``(label, gradient)`` of a Partial FC head's sampled rows, per shard."""
        return self.objective.head_grads() if self.objective.partial_fc_head else []

    def head_arrays(self):
        return self.objective.head_arrays() if self.objective.partial_fc_head else []

    def grad_sq(self):
        """Squared global norm of the gradients (after allreduce every
        context holds the sum: context 0's are measured)."""
        c0 = self.ctx[0]
        parts = [sum_sq(self.grads(0), c0)]
        parts += [sum_sq([g], c0) for _, g in self.head_grads()]
        return mx.nd.add_n(*parts) if len(parts) > 1 else parts[0]

    def state_sq(self):
        """Squared norm of the weights (context 0: every context applies the
        same update) and of the running statistics of every context."""
        c0 = self.ctx[0]
        parts = []
        for i in range(len(self.ctx)):
            arrays = [p.list_data()[i] for p in self.params.values()
                      if i == 0 or p.grad_req == "null"]
            if arrays:
                parts.append(sum_sq(arrays, c0))
        parts += [sum_sq([a], c0) for label, _, a in self.head_arrays()
                  if " weight " in label]
        return mx.nd.add_n(*parts) if len(parts) > 1 else parts[0]

    def optimizer_arrays(self, i):
        """``(index, [NDArray...])`` of the optimizer state of context ``i``."""
        updaters = getattr(self.trainer, "_updaters", None) or []
        if i >= len(updaters):
            return []
        return [(idx, _flatten_state(st)) for idx, st in updaters[i].states.items()]

    # -- snapshot and undo -----------------------------------------------------
    def _keep(self, key, arr):
        buf = self._snap.get(key)
        if buf is None or buf.shape != arr.shape or buf.dtype != arr.dtype or \
                buf.context != arr.context:
            self._snap[key] = arr.copy()
        else:
            arr.copyto(buf)

    def keep_weights(self):
        """Snapshot the weights again (after Horovod's first broadcast, so
        that an undo restores rank 0's weights); only after a full snapshot."""
        if self._snap_full:
            for name, p in self.params.items():
                if p.grad_req != "null":
                    for i, arr in enumerate(p.list_data()):
                        self._keep(("p", name, i), arr)

    def snapshot(self, full=True):
        """Copy (on each device, asynchronously, into buffers kept between
        steps) everything a step writes: weights, running statistics,
        optimizer state and the optimizer's update counters (``full=False``:
        the running statistics only)."""
        self._snap_full = full
        for name, p in self.params.items():
            if full or p.grad_req == "null":
                for i, arr in enumerate(p.list_data()):
                    self._keep(("p", name, i), arr)
        self._snap_states = []
        self._snap_counts = None
        if not full:
            return
        for i in range(len(self.ctx)):
            indices = []
            for idx, arrays in self.optimizer_arrays(i):
                for j, arr in enumerate(arrays):
                    self._keep(("s", i, idx, j), arr)
                indices.append(idx)
            self._snap_states.append(set(indices))
        opt = getattr(self.trainer, "_optimizer", None)
        self._snap_counts = None if opt is None else (
            {k: dict(v) for k, v in opt._all_index_update_counts.items()}, opt.num_update)

    def restore(self):
        """Undo the step: copy the snapshot back (see :meth:`snapshot`)."""
        for name, p in self.params.items():
            if self._snap_full or p.grad_req == "null":
                for i, arr in enumerate(p.list_data()):
                    self._snap[("p", name, i)].copyto(arr)
        updaters = getattr(self.trainer, "_updaters", None) or []
        for i, keep in enumerate(self._snap_states):
            if i >= len(updaters):
                break
            for idx, arrays in self.optimizer_arrays(i):
                if idx in keep:
                    for j, arr in enumerate(arrays):
                        self._snap[("s", i, idx, j)].copyto(arr)
            for idx in [k for k in updaters[i].states if k not in keep]:
                # created by this step's update: the next one starts afresh
                del updaters[i].states[idx]
                updaters[i].states_synced.pop(idx, None)
        if self._snap_counts is not None:
            opt = self.trainer._optimizer
            counts, num_update = self._snap_counts
            for k in list(opt._all_index_update_counts):
                if k not in counts:
                    del opt._all_index_update_counts[k]
            for k, v in counts.items():  # in place: the optimizer holds references
                d = opt._all_index_update_counts.setdefault(k, {})
                d.clear()
                d.update(v)
            opt.num_update = num_update

    # -- before a checkpoint ---------------------------------------------------
    def nonfinite_tensors(self):
        """Names of the weights, running statistics and optimizer states
        holding a non-finite value (one transfer when all are finite)."""
        c0 = self.ctx[0]
        parts = [self.state_sq()]
        for i in range(len(self.ctx)):
            arrays = [a for _, arrs in self.optimizer_arrays(i) for a in arrs]
            if arrays:
                parts.append(sum_sq(arrays, c0))
        head = self.head_arrays()
        parts += [sum_sq([a], c0) for _, _, a in head]
        if math.isfinite(float(mx.nd.add_n(*parts).asscalar()) if len(parts) > 1
                         else float(parts[0].asscalar())):
            return []
        bad = []
        for name, p in self.params.items():
            for i, arr in enumerate(p.list_data()):
                if not np.isfinite(arr.asnumpy()).all():
                    bad.append(f"{name} ({self.ctx[i]})")
        for i in range(len(self.ctx)):
            for idx, arrays in self.optimizer_arrays(i):
                if any(not np.isfinite(a.asnumpy()).all() for a in arrays):
                    bad.append(f"optimizer state {idx} ({self.ctx[i]})")
        bad += [f"{label} ({self.ctx[i]})" for label, i, a in head
                if not np.isfinite(a.asnumpy()).all()]
        return bad or ["(their sum of squares overflows float32)"]


def check_batch_labels(y, num_classes, iteration, data):
    """Labels must be class ids in ``[0, num_classes)`` (checked on the host).

    A ValueError names the iteration (``iteration + 1``, the step about to
    run), the sample and, when ``data`` can say (``positions``), where it
    came from. Labels on a GPU are left to the losses (reading them here
    would wait for the device)."""
    if not num_classes:
        return
    if isinstance(y, mx.nd.NDArray):
        if y.context.device_type != "cpu":
            return  # would wait for the device; the losses check it there
        values = y.asnumpy()
    else:
        values = np.asarray(y)
    values = values.reshape(-1).astype(np.float64)
    bad = label_errors(values, num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"iteration {iteration + 1}: label {values[i]:g} of sample {i} of "
            f"the batch{_batch_origin(data, i)} is not a class id in [0, "
            f"num_classes={num_classes}) ({int(bad.sum())} bad label(s) in "
            f"this batch of {values.size}); check the data's labels, or set "
            "num_classes to the number of classes in the data")


def _batch_origin(data, i):
    """Where sample ``i`` of the batch just read came from, if the data says."""
    try:
        state = data.state_dict()
        epoch, batch = int(state["epoch"]), int(state["batch"]) - 1
        index = data.positions(epoch, batch)[i]
        return f" (data epoch {epoch}, batch {batch}, dataset index {index})"
    except Exception:  # a data source without positions
        return ""

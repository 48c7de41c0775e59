"""The objective layer: head + loss + the inputs and state a loss's contract
declares, built in one place for the training loop (issue 16, item 1).

:class:`FaceTrainer` does not know loss names.  It asks
:func:`objective_refusal` whether a loss can be trained and builds an
:class:`Objective`, which reads the loss's :class:`~fr_lib.loss.LossContract`:

==========================  ===================================================
contract                    what the objective does
==========================  ===================================================
``head='dense'``            ``Dense(C)``; ``loss(logits, y)``
``head='normdense'``        ``NormDense(C)``; ``loss(cos, y)``
``head_k_arg='k'``          ``NormDense(C·k)`` (k from the loss's arguments)
``extra_inputs=('lam',)``   λ of the trainer's iteration (SphereFace's schedule,
                            the first step is iteration 1, as in Caffe)
``extra_inputs=('norm',)``  the embedding norms ``||z||``, computed in the graph
``state=('t',)``            CurricularFace's running t, fed in and advanced here
``state=('mean','std')``    AdaFace's running norm statistics, likewise
``consumes='embeddings'``   no head: ``loss(z, y)``; a loss built with
                            ``num_classes`` holds the class parameters and
                            takes the head's place (optimised and saved)
==========================  ===================================================

Running state (t, μ, σ) is advanced by the graph, not by the loss's own
imperative ``forward``, so it works hybridized and on several contexts alike:
each context uses the statistic of its own shard for its loss (as BatchNorm
does), and the stored value is advanced once per step with the statistic of
the whole batch (with one context both are the loss's own rule).  The state
is saved in the trainer's checkpoint (:meth:`Objective.state_dict`) so a
resumed run continues exactly, and a skipped non-finite step leaves it as it
was (:meth:`Objective.undo`).

Metric losses on P×K batches (``sampler='pk'``: triplet, contrastive_batch)
train when the data source draws its batches with a
:class:`~fr_lib.data.PKSampler` (``TrainConfig.pk_k`` for ``fr-train``); their
batch loss is spread over the samples of the shard, so that the trainer's
"sum over samples / batch size" gives the loss (the mean over the shards,
weighted by their sizes, with several contexts: each context mines its own
shard, which holds whole identities when P is a multiple of the number of
contexts).  The pair loss ``contrastive`` (two embedding batches and a flag)
is refused: ``contrastive_batch`` forms every pair of a P×K batch instead.
"""
import inspect

import numpy as np
import mxnet as mx
from mxnet import gluon

from ..loss import LOSSES, LossContract, contract_of, get_loss
from ..model_zoo import NormDense

__all__ = ["Objective", "objective_refusal"]

#: extra inputs and states the objective can supply
_SUPPORTED_EXTRAS = {(), ("lam",), ("norm",), ("t",)}
_SUPPORTED_STATE = {(), ("lam",), ("t",), ("mean", "std"), ("centers",)}


def objective_refusal(loss, pk=False):
    """Why the objective layer cannot train ``loss`` (a name, class, instance
    or :class:`~fr_lib.loss.LossContract`), a sentence, or ``None``. Read from
    the loss's contract only; ``pk``: the batches are P×K (drawn by a
    :class:`~fr_lib.data.PKSampler`)."""
    c = loss if isinstance(loss, LossContract) else contract_of(loss)
    if c.consumes == "pairs":
        return ("it consumes pairs (two embedding batches and a same/different "
                "flag), which no data source yields; use 'contrastive_batch', "
                "which forms every pair of a P×K batch")
    if c.sampler == "pk" or c.consumes == "triplets":
        if pk:
            return None
        return ("it is a metric loss on P×K batches (K samples of each of P "
                "identities) and the data source is not P×K: set TrainConfig.pk_k "
                "(fr-train: train.pk_k) or give FaceTrainer ArrayBatches/"
                "RecordBatches(batch_sampler=PKSampler(...))")
    if c.extra_inputs not in _SUPPORTED_EXTRAS or c.state not in _SUPPORTED_STATE:
        return (f"the objective layer cannot supply its extra inputs "
                f"{c.extra_inputs} / state {c.state}")
    if c.consumes in ("logits", "cosines"):
        return None
    if c.consumes == "embeddings":
        if not c.needs_num_classes:
            return ("it is a regulariser on the embeddings, to be added to a "
                    "classification loss; the trainer trains one loss (sums of "
                    "losses are not supported)")
        return None
    return f"it consumes {c.consumes}, which the objective layer does not build"


def _argument(name, kwargs, arg):
    """The value of constructor argument ``arg`` (given or its default)."""
    if arg in kwargs:
        return kwargs[arg]
    param = inspect.signature(LOSSES.lookup(name)).parameters.get(arg)
    if param is None or param.default is inspect.Parameter.empty:
        raise ValueError(f"loss {name!r}: its contract names the argument {arg!r} "
                         f"(head_k_arg) but it has no default; pass it in loss_kwargs")
    return param.default


class _ObjectiveStep(gluon.HybridBlock):
    """backbone -> head -> per-sample loss, plus the extra inputs of the
    contract; returns ``loss`` or ``(loss, statistic)`` for stateful losses."""

    def __init__(self, backbone, head, loss, kind, alpha=0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.loss = backbone, loss
        if head is not None:
            self.head = head
        self._has_head = head is not None
        self._kind, self._alpha = kind, float(alpha)

    def hybrid_forward(self, F, x, y, *state):
        emb = self.backbone(x)
        if isinstance(emb, (list, tuple)):
            emb = emb[0]
        if not self._has_head:
            loss = self.loss(emb, y)
            if self._kind != "batch":
                return loss
            if isinstance(loss, (list, tuple)):  # triplet's return_fraction
                loss = loss[0]
            # one loss per batch, spread over its samples (see the module doc)
            return F.broadcast_like(loss.reshape((1,)), y.reshape((-1,)))
        out = self.head(emb)
        kind, a = self._kind, self._alpha
        if kind == "plain":
            return self.loss(out, y)
        if kind == "lam":
            return self.loss(out, y, state[0])
        norm = F.sqrt(F.sum(F.square(emb), axis=1))
        if kind == "norm":
            return self.loss(out, y, norm)
        if kind == "t":
            # CurricularFace: t advanced with this shard's mean true-class cosine
            cos_y = F.stop_gradient(F.clip(F.pick(out, y.reshape((-1,)), axis=1),
                                           -1.0, 1.0))
            t = F.broadcast_add(a * F.mean(cos_y).reshape((1,)), (1.0 - a) * state[0])
            return self.loss(out, y, t), cos_y
        # AdaFace: mean and (n-1) std of the clipped norms of this shard
        safe = F.stop_gradient(F.clip(norm, 1e-3, 100.0))
        n = F.sum(F.ones_like(safe)).reshape((1,))
        mu = F.mean(safe).reshape((1,))
        var = F.broadcast_div(F.sum(F.square(F.broadcast_sub(safe, mu))).reshape((1,)),
                              F.maximum(n - 1.0, 1.0))
        mean = a * mu + (1.0 - a) * state[0]
        std = F.where(n > 1.0, a * F.sqrt(var) + (1.0 - a) * state[1], state[1])
        return self.loss(out, y, norm, mean, std), safe


class Objective:
    """Head and loss of one registered loss, built from its contract.

    Parameters
    ----------
    name : str
        A registered loss.
    loss_kwargs : dict
        Its constructor arguments (``num_classes`` is added when the contract
        says it is needed).
    num_classes : int
    head : HybridBlock, optional
        Replaces the head the contract asks for (not allowed for losses
        without a head).
    pk : bool, default False
        The batches are P×K (needed by the metric losses).

    Attributes
    ----------
    loss : HybridBlock
    head : HybridBlock
        The block holding the class parameters: the head, or the loss itself
        for embedding losses (its parameters are trained and checkpointed as
        the head's).
    contract : LossContract

    Raises
    ------
    ValueError
        When the loss is refused (see :func:`objective_refusal`).
    """

    def __init__(self, name, loss_kwargs, num_classes, head=None, pk=False):
        self.name = key = str(name).lower()
        why = objective_refusal(key, pk)
        if why is not None:
            raise ValueError(f"loss {key!r} cannot be trained by FaceTrainer/fr-train: "
                             f"{why}")
        self.contract = c = contract_of(key)
        kwargs = dict(loss_kwargs or {})
        if c.needs_num_classes:
            kwargs.setdefault("num_classes", int(num_classes))
        self.loss = get_loss(key, **kwargs)
        if getattr(self.loss, "update", "gradient") == "paper":
            raise ValueError(f"loss {key!r} with update='paper' moves its centres "
                             "outside the graph; the trainer trains them by gradient: "
                             "use update='gradient'")
        if c.head is None:
            if head is not None:
                raise ValueError(f"loss {key!r} consumes the embeddings (its contract "
                                 "has no head): do not pass a head")
            self.head = self.loss
        elif head is not None:
            self.head = head
        else:
            width = int(num_classes)
            if c.head_k_arg is not None:
                width *= int(_argument(key, kwargs, c.head_k_arg))
            self.head = NormDense(width) if c.head == "normdense" \
                else gluon.nn.Dense(width)
        if c.sampler == "pk" or c.consumes == "triplets":
            self.kind = "batch"
        elif "norm" in c.extra_inputs:
            self.kind = "norm" if c.state == () else "adaface"
        elif c.state == ("t",):
            self.kind = "t"
        elif "lam" in c.extra_inputs:
            self.kind = "lam"
        else:
            self.kind = "plain"
        self._previous = None

    @property
    def has_head(self):
        """False for embedding losses (the loss holds the class parameters)."""
        return self.contract.head is not None

    def make_step(self, backbone):
        """The training graph ``backbone -> head -> loss`` (a HybridBlock
        called as ``step(x, y, *self.inputs(ctx, iteration))``)."""
        alpha = getattr(self.loss, "_alpha", 0.0) if self.kind in ("t", "adaface") else 0.0
        return _ObjectiveStep(backbone, self.head if self.has_head else None,
                              self.loss, self.kind, alpha)

    def init_shapes(self, emb):
        """Finish deferred shapes from one embedding batch (outside autograd)."""
        if self.has_head:
            self.head(emb)
        else:
            self.loss(emb, mx.nd.zeros((emb.shape[0],), ctx=emb.context))

    # -- extra inputs and state ------------------------------------------------
    def inputs(self, ctx, iteration):
        """The extra graph inputs of the step that makes ``iteration + 1``."""
        if self.kind == "lam":
            self.loss.iteration = iteration + 1  # Caffe counts the call first
            return [mx.nd.array([self.loss.current_lambda], ctx=ctx)]
        if self.kind == "t":
            return [self.loss._t.as_in_context(ctx).astype("float32")]
        if self.kind == "adaface":
            return [self.loss._mean.as_in_context(ctx).astype("float32"),
                    self.loss._std.as_in_context(ctx).astype("float32")]
        return []

    def split(self, outputs):
        """The per-sample losses and the statistics of the step's outputs."""
        if self.kind in ("t", "adaface"):
            return [o[0] for o in outputs], [o[1] for o in outputs]
        return list(outputs), None

    def advance(self, stats, ctx):
        """Advance the running state with the statistics of the whole batch
        (the loss's own rule, float64, asynchronous on ``ctx``)."""
        if stats is None:
            self._previous = None
            return
        values = mx.nd.concat(*[s.as_in_context(ctx).astype(np.float64) for s in stats],
                              dim=0)
        a = self.loss._alpha
        if self.kind == "t":
            self._previous = (self.loss._t,)
            self.loss._t = a * values.mean() + (1.0 - a) * self.loss._t.as_in_context(ctx)
            return
        self._previous = (self.loss._mean, self.loss._std)
        batch_mean = values.mean()
        self.loss._mean = a * batch_mean + (1.0 - a) * self.loss._mean.as_in_context(ctx)
        if values.size > 1:
            batch_std = mx.nd.sqrt(((values - batch_mean) ** 2).sum() / (values.size - 1))
            self.loss._std = a * batch_std + (1.0 - a) * self.loss._std.as_in_context(ctx)

    def undo(self):
        """Put the state back as it was before the last :meth:`advance`."""
        if self._previous is not None:
            if self.kind == "t":
                (self.loss._t,) = self._previous
            else:
                self.loss._mean, self.loss._std = self._previous
            self._previous = None

    def state_dict(self):
        """The running state (floats, for the checkpoint); empty when none."""
        if self.kind == "t":
            return {"t": self.loss.t}
        if self.kind == "adaface":
            return {"mean": self.loss.batch_mean, "std": self.loss.batch_std}
        return {}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values."""
        state = state or {}
        if self.kind == "t" and "t" in state:
            self.loss.t = state["t"]
        elif self.kind == "adaface" and "mean" in state:
            self.loss.batch_mean, self.loss.batch_std = state["mean"], state["std"]

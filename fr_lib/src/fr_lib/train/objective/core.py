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

Heads are pluggable (``TrainConfig.head``): ``'auto'`` builds the contract's
head (above); ``'partial_fc'`` replaces the ``NormDense`` of a cosine loss by
:class:`~fr_lib.train.PartialFC`: the step graph ends at the embeddings, the
embeddings and labels of all contexts are joined on the first context (the
sampling needs the labels of the whole batch), and the class centres, sharded
over the contexts, are sampled, scored and updated (row-sparse SGD) by the
Partial FC head. It takes the cosine losses that need no running state
(their extra inputs may be λ or the embedding norms); the others are refused
with the reason (:func:`objective_refusal`).
"""
import inspect

import numpy as np
import mxnet as mx
from mxnet import gluon

from ..loss import LOSSES, LossContract, contract_of, get_loss
from ..model_zoo import NormDense

__all__ = ["Objective", "objective_refusal", "HEADS"]

#: extra inputs and states the objective can supply
_SUPPORTED_EXTRAS = {(), ("lam",), ("norm",), ("t",)}
_SUPPORTED_STATE = {(), ("lam",), ("t",), ("mean", "std"), ("centers",)}
#: the heads ``TrainConfig.head`` can name
HEADS = ("auto", "normdense", "partial_fc")


def _head_refusal(c, head):
    """Why the head ``head`` cannot serve a loss of contract ``c``, or None."""
    if head not in HEADS:
        return f"head={head!r} is not one of {list(HEADS)}"
    if head == "auto":
        return None
    if c.head != "normdense":
        has = "no head (it consumes the embeddings)" if c.head is None else \
            f"a {c.head!r} head"
        return f"head={head!r} needs a cosine loss (a NormDense head); it takes {has}"
    if head == "normdense":
        return None
    if c.head_k_arg is not None:
        return ("head='partial_fc' samples one centre per class; it needs "
                f"{c.head_k_arg} centres per class (use head='auto')")
    if c.state not in ((), ("lam",)):
        return (f"head='partial_fc' cannot carry its running state {c.state} "
                "(advanced inside the NormDense graph; use head='auto')")
    if c.extra_inputs not in ((), ("lam",), ("norm",)):
        return f"head='partial_fc' cannot supply its extra inputs {c.extra_inputs}"
    return None


def objective_refusal(loss, pk=False, head="auto"):
    """Why the objective layer cannot train ``loss`` (a name, class, instance
    or :class:`~fr_lib.loss.LossContract`), a sentence, or ``None``. Read from
    the loss's contract only; ``pk``: the batches are P×K (drawn by a
    :class:`~fr_lib.data.PKSampler`); ``head``: one of :data:`HEADS`."""
    c = loss if isinstance(loss, LossContract) else contract_of(loss)
    why = _head_refusal(c, str(head).lower())
    if why is not None:
        return why
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


class _EmbeddingStep(gluon.HybridBlock):
    """backbone -> embeddings (the step graph before a Partial FC head)."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def hybrid_forward(self, F, x):
        emb = self.backbone(x)
        return emb[0] if isinstance(emb, (list, tuple)) else emb


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
    head_kind : str, default 'auto'
        One of :data:`HEADS` (``TrainConfig.head``).
    partial_fc : dict, optional
        With ``head_kind='partial_fc'``: the arguments of
        :class:`~fr_lib.train.PartialFC` besides the classes, the embedding
        size and the loss (``sample_rate``, ``softmax``, ``ctx``,
        ``momentum``, ``wd``, ``clip_gradient``), and ``rng``: a callable
        ``rng(stream) -> numpy.random.Generator`` (the trainer's
        :meth:`~fr_lib.train.FaceTrainer.rng`) from which the initial
        centres are drawn.

    Attributes
    ----------
    loss : HybridBlock
    head : HybridBlock or None
        The block holding the class parameters: the head, or the loss itself
        for embedding losses (its parameters are trained and checkpointed as
        the head's); None with Partial FC (see ``partial_fc``).
    partial_fc : PartialFC or None
        The Partial FC head, built by :meth:`init_shapes` (it needs the
        embedding size) or :meth:`load_head`.
    contract : LossContract

    Raises
    ------
    ValueError
        When the loss is refused (see :func:`objective_refusal`).
    """

    def __init__(self, name, loss_kwargs, num_classes, head=None, pk=False,
                 head_kind="auto", partial_fc=None):
        self.name = key = str(name).lower()
        self.head_kind = str(head_kind).lower()
        why = objective_refusal(key, pk, self.head_kind)
        if why is not None:
            raise ValueError(f"loss {key!r} cannot be trained by FaceTrainer/fr-train: "
                             f"{why}")
        self.contract = c = contract_of(key)
        self.num_classes = int(num_classes)
        self.partial_fc, self._pfc_args, self._pfc_saved = None, None, None
        kwargs = dict(loss_kwargs or {})
        if c.needs_num_classes:
            kwargs.setdefault("num_classes", int(num_classes))
        self.loss = get_loss(key, **kwargs)
        if getattr(self.loss, "update", "gradient") == "paper":
            raise ValueError(f"loss {key!r} with update='paper' moves its centres "
                             "outside the graph; the trainer trains them by gradient: "
                             "use update='gradient'")
        if self.head_kind == "partial_fc":
            if head is not None:
                raise ValueError("head='partial_fc' builds its own head: do not pass "
                                 "a head block")
            from .partial_fc import PartialFC
            args = dict(partial_fc or {})
            ctx = args.get("ctx") or [mx.cpu()]
            # a 'sharded' softmax with a loss that reweights other logits is
            # refused now, before any training
            args["softmax"] = PartialFC._softmax_mode(args.get("softmax", "auto"),
                                                      self.loss, len(ctx))
            if self.num_classes < len(ctx):
                raise ValueError(f"head='partial_fc': {self.num_classes} classes cannot "
                                 f"be split over {len(ctx)} contexts")
            self._pfc_args = args
            self.head = None
        elif c.head is None:
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
        called by :meth:`forward`); with Partial FC ``backbone ->
        embeddings`` (the head runs imperatively after it)."""
        if self.partial_fc_head:
            return _EmbeddingStep(backbone)
        alpha = getattr(self.loss, "_alpha", 0.0) if self.kind in ("t", "adaface") else 0.0
        return _ObjectiveStep(backbone, self.head if self.has_head else None,
                              self.loss, self.kind, alpha)

    @property
    def partial_fc_head(self):
        """True when the head is :class:`~fr_lib.train.PartialFC`."""
        return self._pfc_args is not None

    def forward(self, step, xs, ys, ctx, iteration, rng=None):
        """One forward pass of the step graph on every context (inside
        ``autograd.record()``).

        Parameters
        ----------
        step : HybridBlock
            From :meth:`make_step`.
        xs, ys : list of NDArray
            The shards of the batch, one per context.
        ctx : list of Context
        iteration : int
            Completed iterations (the step makes ``iteration + 1``).
        rng : numpy.random.Generator, optional
            Partial FC draws its negative classes from it.

        Returns
        -------
        (losses, stats)
            The per-sample losses (one array per context; one array on
            ``ctx[0]`` for the whole batch with Partial FC) and the
            statistics for :meth:`advance` (or None).
        """
        if not self.partial_fc_head:
            outs = [step(a, b, *self.inputs(c, iteration)) for a, b, c in zip(xs, ys, ctx)]
            return self.split(outs)
        home = ctx[0]
        self._pfc_saved = None  # (undo restores only what step_head changed)
        embs = [step(a) for a in xs]
        emb = embs[0] if len(embs) == 1 else \
            mx.nd.concat(*[e.as_in_context(home) for e in embs], dim=0)
        y = ys[0] if len(ys) == 1 else \
            mx.nd.concat(*[b.as_in_context(home) for b in ys], dim=0)
        extra = []
        if self.kind == "lam":
            extra = self.inputs(home, iteration)
        elif self.kind == "norm":
            extra = [mx.nd.sqrt(mx.nd.sum(mx.nd.square(emb), axis=1))]
        loss = self.partial_fc(emb, y, *extra, rng=rng)
        return [loss], None

    def init_shapes(self, emb):
        """Finish deferred shapes from one embedding batch (outside autograd);
        builds the Partial FC head."""
        if self.partial_fc_head:
            if self.partial_fc is None:
                self._build_partial_fc(int(emb.shape[1]), initial=True)
        elif self.has_head:
            self.head(emb)
        else:
            self.loss(emb, mx.nd.zeros((emb.shape[0],), ctx=emb.context))

    def _build_partial_fc(self, in_units, initial):
        from .partial_fc import PartialFC
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
        """Put the state back as it was before the last :meth:`advance` (and
        a Partial FC head's rows as they were before :meth:`step_head`)."""
        if self.partial_fc is not None:
            pfc = self.partial_fc
            if self._pfc_saved is not None:
                for s, (local, w, m) in enumerate(self._pfc_saved):
                    pfc._weights[s][:] = mx.nd.contrib.index_copy(pfc._weights[s], local, w)
                    pfc._moms[s][:] = mx.nd.contrib.index_copy(pfc._moms[s], local, m)
                pfc.num_update -= 1
            self._pfc_saved = None
            pfc._pending = None
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

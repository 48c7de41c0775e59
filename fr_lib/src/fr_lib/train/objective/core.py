"""The objective class: head + loss + extra inputs and running state of one
registered loss, from its contract (see :mod:`fr_lib.train.objective`)."""
import numpy as np
import mxnet as mx
from mxnet import gluon

from ...loss import contract_of, get_loss
from ...model_zoo import NormDense
from .pfc_head import _PartialFCHead
from .refusal import _argument, objective_refusal
from .step import _EmbeddingStep, _ObjectiveStep

__all__ = ["Objective"]


class Objective(_PartialFCHead):
    """Head and loss of one registered loss, built from its contract.

    A regulariser (``contract.regularizer_weight`` set: ``center``,
    ``ring``) gives a :class:`RegularisedObjective`, ``softmax +
    λ·regulariser``, with the same interface.

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
    regularizer_weight : float, optional
        λ of a regulariser (``TrainConfig.regularizer_weight``); None: the
        contract's default. Refused for the other losses.

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

    def __new__(cls, name, *args, **kwargs):
        if cls is Objective and contract_of(str(name).lower()).regularizer_weight \
                is not None:
            from .regularised import RegularisedObjective
            cls = RegularisedObjective
        return super().__new__(cls)

    def __init__(self, name, loss_kwargs, num_classes, head=None, pk=False,
                 head_kind="auto", partial_fc=None, regularizer_weight=None):
        self.name = key = str(name).lower()
        self.head_kind = str(head_kind).lower()
        why = objective_refusal(key, pk, self.head_kind)
        if why is not None:
            raise ValueError(f"loss {key!r} cannot be trained by FaceTrainer/fr-train: "
                             f"{why}")
        if regularizer_weight is not None:
            raise ValueError(f"regularizer_weight={regularizer_weight!r} is set but loss "
                             f"{key!r} is not a regulariser (its contract declares no "
                             "regularizer_weight)")
        self.contract = c = contract_of(key)
        self.num_classes = int(num_classes)
        self.partial_fc, self._pfc_args, self._pfc_saved = None, None, None
        kwargs = dict(loss_kwargs or {})
        if c.needs_num_classes:
            kwargs.setdefault("num_classes", int(num_classes))
        self.loss = get_loss(key, **kwargs)
        if self.head_kind == "partial_fc":
            if head is not None:
                raise ValueError("head='partial_fc' builds its own head: do not pass "
                                 "a head block")
            from ..partial_fc import PartialFC
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
        self._undo_head()
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

"""A regulariser on the embeddings added to a classification loss:
``softmax + λ·regulariser`` (Center, Ring), trained by the one loop of the
package like every other objective (see :mod:`fr_lib.train.objective`)."""
import math

import numpy as np
import mxnet as mx
from mxnet import gluon

from ...loss import contract_of, get_loss
from .core import Objective
from .refusal import BASE_LOSS, objective_refusal
from .step import _ObjectiveStep

__all__ = ["RegularisedObjective"]


class _HeadAndRegularizer(gluon.Block):
    """The class parameters a regularised objective trains besides the
    backbone: the base loss's head (child ``head``) and the regulariser's
    parameters (child ``reg``: centres, radius). Calling it gives the head's
    class scores."""

    def __init__(self, head, reg):
        super().__init__(prefix="")
        self.head, self.reg = head, reg

    def forward(self, emb):
        return self.head(emb)


class RegularisedObjective(Objective):
    r"""``base + λ·regulariser``: the per-sample loss

    .. math:: \ell_i = \mathrm{CE}(W z_i + b, y_i) + \lambda\, r(z_i, y_i)

    with the softmax cross-entropy on a ``Dense(C)`` head (the objective of
    the loss ``'softmax'``, or of ``base_loss``) and the regulariser ``r``
    named by ``name`` (its contract sets ``regularizer_weight``: ``center``,
    ``ring``). ``Objective(name, ...)`` builds this class for such a name.

    Parameters
    ----------
    name, loss_kwargs, num_classes, pk, head_kind, partial_fc
        As :class:`Objective` (``loss_kwargs`` build the regulariser, e.g.
        ``update='paper'`` for Center loss; ``head_kind`` must be 'auto').
    head : HybridBlock, optional
        Replaces the base loss's head.
    regularizer_weight : float, optional
        λ > 0; None: the contract's default (center 0.1, ring 0.01).
    base_loss : str, default 'softmax'
        The classification loss the regulariser is added to: a registered
        loss with a head (a running state, λ schedule or norms as
        :class:`Objective` supplies them).
    base_loss_kwargs : dict, optional

    Attributes
    ----------
    base : Objective
        The classification objective (its ``head`` gives the class scores).
    loss : HybridBlock
        The regulariser (a :class:`~fr_lib.loss.CenterLoss` keeps its
        centres in ``loss.centers``).
    weight : float
        λ.
    head : Block
        Holds the base head and the regulariser's parameters, which the
        trainer optimises and saves in ``head.params``; calling it gives the
        class scores.
    paper : bool
        The regulariser moves its parameters outside the graph
        (``CenterLoss(update='paper')``): after each step, by
        :meth:`advance`, with the embeddings of the whole batch (all
        contexts); every copy of the centres gets the same rows.
    """

    def __init__(self, name, loss_kwargs, num_classes, head=None, pk=False,
                 head_kind="auto", partial_fc=None, regularizer_weight=None,
                 base_loss=BASE_LOSS, base_loss_kwargs=None):
        self.name = key = str(name).lower()
        self.head_kind = str(head_kind).lower()
        why = objective_refusal(key, pk, self.head_kind)
        if why is not None:
            raise ValueError(f"loss {key!r} cannot be trained by FaceTrainer/fr-train: "
                             f"{why}")
        self.contract = c = contract_of(key)
        if c.regularizer_weight is None:
            raise ValueError(f"loss {key!r} is not a regulariser (its contract "
                             "declares no regularizer_weight): use Objective")
        weight = c.regularizer_weight if regularizer_weight is None else regularizer_weight
        try:
            self.weight = float(weight)
        except (TypeError, ValueError):
            self.weight = float("nan")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"regularizer_weight (λ of {base_loss} + λ·{key}) must be a "
                             f"positive number, got {weight!r}")
        self.base = base = Objective(base_loss, base_loss_kwargs, num_classes, head,
                                     pk=pk)
        if not base.has_head:
            raise ValueError(f"base_loss {base_loss!r} has no head: a regulariser is "
                             "added to a classification loss on a head")
        self.num_classes = base.num_classes
        kwargs = dict(loss_kwargs or {})
        if c.needs_num_classes:
            kwargs.setdefault("num_classes", self.num_classes)
        self.loss = get_loss(key, **kwargs)
        self.paper = getattr(self.loss, "update", "gradient") == "paper"
        self.head = _HeadAndRegularizer(base.head, self.loss)
        self.kind = base.kind
        self.partial_fc, self._pfc_args, self._pfc_saved = None, None, None
        self._previous = None

    @property
    def has_head(self):
        """False: the regulariser consumes the embeddings (its contract has
        no head for a warm-up loss to share); ``base.head`` scores classes."""
        return False

    def make_step(self, backbone):
        """``backbone -> z``; ``base loss(head(z), y) + λ·regulariser(z, y)``
        per sample (and z, y for the paper's centre update)."""
        b = self.base
        alpha = getattr(b.loss, "_alpha", 0.0) if b.kind in ("t", "adaface") else 0.0
        return _ObjectiveStep(backbone, b.head, b.loss, b.kind, alpha, reg=self.loss,
                              weight=self.weight, paper=self.paper)

    def init_shapes(self, emb):
        """Finish the head's and the regulariser's deferred shapes (and set
        Ring's ``radius='mean'``) from one embedding batch."""
        self.base.init_shapes(emb)
        self.loss(emb, mx.nd.zeros((emb.shape[0],), ctx=emb.context))

    def inputs(self, ctx, iteration):
        """The base loss's extra graph inputs."""
        return self.base.inputs(ctx, iteration)

    def split(self, outputs):
        """The per-sample losses, and ``(base statistics, [(z, y), ...])``
        for :meth:`advance` (None when there is nothing to advance)."""
        stateful = self.kind in ("t", "adaface")
        if not (stateful or self.paper):
            return list(outputs), None
        return [o[0] for o in outputs], (
            [o[1] for o in outputs] if stateful else None,
            [(o[-2], o[-1]) for o in outputs] if self.paper else None)

    def advance(self, stats, ctx):
        """Advance the base loss's running state; with ``paper`` move the
        centres by the paper's rule with the embeddings of the whole batch
        (on ``ctx``; the trainer's snapshot puts them back when the step is
        undone, as for every parameter without a gradient)."""
        base_stats, pairs = stats if stats is not None else (None, None)
        self.base.advance(base_stats, ctx)
        if pairs:
            x = mx.nd.concat(*[z.as_in_context(ctx) for z, _ in pairs], dim=0)
            y = np.concatenate([t.asnumpy().reshape(-1) for _, t in pairs])
            self.loss._paper_update(x, y)

    def undo(self):
        """Undo the base loss's :meth:`advance` (the centres are parameters:
        the trainer restores them)."""
        self.base.undo()

    def state_dict(self):
        """The base loss's running state (the regulariser's parameters are in
        the head's parameters)."""
        return self.base.state_dict()

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values."""
        self.base.load_state_dict(state)

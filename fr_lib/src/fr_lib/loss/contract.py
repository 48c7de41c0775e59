"""What each registered loss consumes: the loss contract (issue 16, item 1).

Every loss in :data:`fr_lib.loss.LOSSES` carries a class attribute ``contract``
(a frozen :class:`LossContract`) saying what its forward takes, which head it
needs, whether it is built with ``num_classes`` and which state it keeps outside
the graph.  Generic training code reads this declaration instead of keeping its
own tables of loss names.

>>> from fr_lib.loss import contract_of
>>> contract_of('magface').extra_inputs
('norm',)
"""
from dataclasses import dataclass

__all__ = ["LossContract", "contract_of", "CONSUMES"]

#: what a loss's first input is
CONSUMES = ("logits", "cosines", "embeddings", "pairs", "triplets")


@dataclass(frozen=True)
class LossContract:
    """The declaration of one loss.

    Attributes
    ----------
    consumes : str
        One of :data:`CONSUMES`: ``logits`` (a plain Dense head),
        ``cosines`` (the cosine matrix of a normalised head), ``embeddings``
        (the backbone output, the loss holds its own class parameters),
        ``pairs`` (two embedding batches and a same/different flag),
        ``triplets`` (a P×K batch, triplets mined inside the loss).
    extra_inputs : tuple
        Inputs after ``(x, label)``: ``'norm'`` (the embedding norms),
        ``'lam'`` (SphereFace's annealing weight), ``'t'`` (CurricularFace's
        running mean), ``'mean'``/``'std'`` (AdaFace's running norm
        statistics).
    head : str or None
        ``'dense'`` (width C, logits), ``'normdense'`` (width C·k of
        unit-norm columns), or ``None`` (no head: the loss sees embeddings).
    head_k_arg : str or None
        The constructor argument giving k (columns per class), if any.
    needs_num_classes : bool
        The constructor requires ``num_classes``.
    state : tuple
        State the caller must keep outside the graph (names), e.g.
        ``('t',)``; empty when the loss is a pure function of its inputs and
        its own parameters.
    sampler : str or None
        ``'pk'`` when the batch must hold K samples of each of P identities
        (:class:`fr_lib.data.sampler.PKSampler`), else ``None``.
    regularizer_weight : float or None
        Not ``None`` for a regulariser on the embeddings (``consumes=
        'embeddings'``): a term that does not train embeddings alone but is
        added to a classification loss, ``softmax + λ·loss`` (the objective
        layer builds that sum); the value is the default λ.
    """
    consumes: str
    extra_inputs: tuple = ()
    head: object = None
    head_k_arg: object = None
    needs_num_classes: bool = False
    state: tuple = ()
    sampler: object = None
    regularizer_weight: object = None

    def __post_init__(self):
        if self.consumes not in CONSUMES:
            raise ValueError(f"consumes must be one of {CONSUMES}, got {self.consumes!r}")
        if self.head not in (None, "dense", "normdense"):
            raise ValueError(f"head must be None, 'dense' or 'normdense', got {self.head!r}")
        if self.regularizer_weight is not None and (
                self.consumes != "embeddings" or not self.regularizer_weight > 0):
            raise ValueError("a regulariser consumes the embeddings and has a positive "
                             f"default weight, got {self.consumes!r} and "
                             f"{self.regularizer_weight!r}")

    def trainer_refusal(self):
        """Why :class:`~fr_lib.train.FaceTrainer` cannot train a loss with
        this contract (a sentence), or ``None`` when it can; decided in one
        place, :func:`fr_lib.train.objective.objective_refusal`."""
        from ..train.objective import objective_refusal
        return objective_refusal(self)


def contract_of(loss):
    """The :class:`LossContract` of a loss name, class or instance."""
    if isinstance(loss, str):
        key = loss.lower()
        if key in DECLARATIONS:
            return DECLARATIONS[key]
        raise ValueError(f"unknown loss {loss!r}; registered: {sorted(DECLARATIONS)}")
    c = getattr(loss, "contract", None)
    if c is None:
        raise ValueError(f"{loss!r} declares no loss contract (class attribute 'contract')")
    return c


# The declarations, attached to the classes by fr_lib.loss.__init__ (one table,
# so the class bodies, edited by others at the same time, stay untouched).
_COS = LossContract("cosines", head="normdense")
DECLARATIONS = {
    "softmax": LossContract("logits", head="dense"),
    "normface": _COS, "cosface": _COS, "amsoftmax": _COS, "arcface": _COS,
    "combined": _COS, "circle": _COS,
    "sphereface": LossContract("cosines", extra_inputs=("lam",), head="normdense",
                               state=("lam",)),
    "asoftmax": LossContract("cosines", extra_inputs=("lam",), head="normdense",
                             state=("lam",)),
    "subcenter_arcface": LossContract("cosines", head="normdense", head_k_arg="k"),
    "curricularface": LossContract("cosines", extra_inputs=("t",), head="normdense",
                                   state=("t",)),
    "magface": LossContract("cosines", extra_inputs=("norm",), head="normdense"),
    "adaface": LossContract("cosines", extra_inputs=("norm",), head="normdense",
                            state=("mean", "std")),
    "contrastive": LossContract("pairs"),
    "contrastive_batch": LossContract("embeddings", sampler="pk"),
    "triplet": LossContract("triplets", sampler="pk"),
    "l2softmax": LossContract("embeddings", needs_num_classes=True),
    # the regularisers: softmax + λ·loss, λ as the loss chapter trains them
    "center": LossContract("embeddings", needs_num_classes=True, state=("centers",),
                           regularizer_weight=0.1),
    "lgm": LossContract("embeddings", needs_num_classes=True),
    "ring": LossContract("embeddings", regularizer_weight=0.01),
}

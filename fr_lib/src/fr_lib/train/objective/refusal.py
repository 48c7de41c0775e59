"""Which losses and heads the objective layer can train, read from the loss
contracts only (:class:`~fr_lib.loss.LossContract`): one place that decides,
so :class:`~fr_lib.train.FaceTrainer`, ``fr-train --dry-run`` and
:meth:`LossContract.trainer_refusal <fr_lib.loss.LossContract.trainer_refusal>`
give the same reason."""
import inspect

from ...loss import LOSSES, LossContract, contract_of

__all__ = ["objective_refusal", "HEADS"]

#: extra inputs and states the objective can supply
_SUPPORTED_EXTRAS = {(), ("lam",), ("norm",), ("t",)}
_SUPPORTED_STATE = {(), ("lam",), ("t",), ("mean", "std"), ("centers",)}
#: the heads ``TrainConfig.head`` can name
HEADS = ("auto", "normdense", "partial_fc")
#: the classification loss a regulariser is added to
BASE_LOSS = "softmax"


def _head_refusal(c, head):
    """Why the head ``head`` cannot serve a loss of contract ``c``, or None."""
    if head not in HEADS:
        return f"head={head!r} is not one of {list(HEADS)}"
    if head == "auto":
        return None
    if c.regularizer_weight is not None:
        return (f"it is a regulariser on the embeddings, added to {BASE_LOSS!r} on "
                f"the Dense head that head='auto' builds; head={head!r} is not "
                "supported with it")
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
    :class:`~fr_lib.data.PKSampler`); ``head``: one of :data:`HEADS`.

    A regulariser (``contract.regularizer_weight`` set: Center, Ring) trains
    as ``softmax + λ·regulariser`` (:class:`RegularisedObjective`)."""
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
        if not c.needs_num_classes and c.regularizer_weight is None:
            return ("it consumes the embeddings without class parameters and "
                    "declares no regulariser weight (contract.regularizer_weight)")
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

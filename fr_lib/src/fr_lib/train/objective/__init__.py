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
``regularizer_weight=w``    a regulariser (Center, Ring):
                            ``softmax(Dense(C)(z), y) + λ·loss(z, y)``, λ from
                            ``TrainConfig.regularizer_weight`` (default w)
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
A regulariser trains as a :class:`RegularisedObjective`: the softmax
objective above plus ``λ·regulariser`` on the embeddings, per sample, in one
graph. Its parameters (Center's class centres, Ring's radius) are trained
and checkpointed with the Dense head; Center's ``update='paper'`` moves the
centres outside the graph after each step, with the embeddings of the whole
batch (:meth:`RegularisedObjective.advance`), and a skipped step puts them
back (the trainer's snapshot keeps every parameter without a gradient).

The modules: :mod:`~fr_lib.train.objective.refusal` (what can be trained),
:mod:`~fr_lib.train.objective.step` (the graphs),
:mod:`~fr_lib.train.objective.core` (:class:`Objective`),
:mod:`~fr_lib.train.objective.regularised` (:class:`RegularisedObjective`),
:mod:`~fr_lib.train.objective.pfc_head` (the Partial FC head's update).
"""
from .refusal import HEADS, _argument, objective_refusal  # noqa: F401
from .core import Objective
from .regularised import RegularisedObjective

__all__ = ["Objective", "RegularisedObjective", "objective_refusal", "HEADS"]

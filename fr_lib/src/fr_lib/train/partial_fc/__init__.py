r"""Partial FC: a class-centre matrix sharded over devices, trained on a sample.

Partial FC (An et al., *Partial FC: Training 10 Million Identities on a Single
Machine*, arXiv 2010.05222) replaces the full normalised-FC layer when the
number of identities is large. The class centres ``W`` (``num_classes × dim``)
are split into contiguous shards, one per device. At each step every shard
keeps

- all its *positive* centres (the classes of the samples in the global batch
  that fall in the shard), and
- uniformly drawn *negative* centres, so that about ``sample_rate ×
  shard_size`` rows are used,

the cosines ``cos θ = <x/||x||, w/||w||>`` are computed against those rows
only, any margin loss of :mod:`fr_lib.loss` is applied to the resulting
``(batch, sampled classes)`` matrix with the labels remapped into it, and only
the sampled rows (and their momentum) are updated. ``sample_rate=1.0`` is the
full softmax. The paper shows that ``r = 0.1`` keeps the accuracy of the full
FC while the logits, their gradients and the FC compute shrink tenfold.

The class is not a ``gluon.Block``: it owns its optimizer (SGD with momentum
on the sampled rows only), because a ``gluon.Trainer`` would update, and decay,
every row of a dense parameter.
"""
# Four parts: sampling.py (which centres a step uses, NumPy), softmax.py (the
# loss and the softmax across shards), head.py (PartialFC: forward and the
# sparse SGD step), state.py (its centres and momentum, saved and loaded).
from .head import PartialFC
from .sampling import PartialFCSample

__all__ = ["PartialFC", "PartialFCSample"]

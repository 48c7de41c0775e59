"""Callbacks of the training loop (:class:`~fr_lib.train.trainer.FaceTrainer`).

One loop trains every model of the book -- the MNIST pictures of the loss
chapter (:func:`~fr_lib.train.features.train_features`), the quick face
model (:func:`~fr_lib.train.quick.quick_face_model`) and the recipes of
``fr-train``.  What differs between them is what happens around the steps:
a per-epoch history with a test accuracy, a live curve in a notebook, a
bar.  That is a callback: an object with three hooks,

==============================  ===============================================
``on_begin(trainer)``           before the first step of ``fit()``
``on_iteration(trainer, rec)``  after every step; ``rec`` is ``{'iteration',
                                'loss', 'lr', 'skipped', 'images',
                                'seconds'}`` (``loss`` is None for a skipped
                                non-finite step; ``images`` and ``seconds``:
                                the batch size and the time of the step)
``on_end(trainer, result)``     after ``fit()``, with its
                                :class:`~fr_lib.train.trainer.TrainResult`
==============================  ===============================================

A plain function ``f(trainer, record)`` is a callback with only the middle
hook (calling a :class:`Callback` is its ``on_iteration``).

>>> history = EpochHistory({'test_acc': lambda trainer: evaluate(trainer.net)})
>>> trainer = FaceTrainer(config, data, callbacks=[history,
...                                                 AnimatorCallback(history)])
>>> trainer.fit(); history.history['test_acc']
"""
import math

__all__ = ["Callback", "EpochHistory", "AnimatorCallback", "ProgressBar",
           "epoch_finished"]


class Callback:
    """A training-loop callback: override any of the three hooks."""

    def on_begin(self, trainer):
        """Before the first step of :meth:`~fr_lib.train.trainer.FaceTrainer.fit`."""

    def on_iteration(self, trainer, record):
        """After every step (``record``: iteration, loss, lr, skipped,
        images, seconds)."""

    def on_end(self, trainer, result):
        """After :meth:`~fr_lib.train.trainer.FaceTrainer.fit` (``result``:
        its :class:`~fr_lib.train.trainer.TrainResult`)."""

    def __call__(self, trainer, record):
        return self.on_iteration(trainer, record)


def epoch_finished(trainer):
    """The 1-based number of the data epoch the last step completed, or None.

    Reads the position of the trainer's data source (``epoch``, ``batch``
    and ``len()`` of :class:`~fr_lib.data.source.ArrayBatches` and
    :class:`~fr_lib.data.recordio.RecordBatches`): right after the last batch of
    epoch ``e`` (0-based) the position is ``(e, len(data))``.
    """
    data = trainer.data
    try:
        epoch, batch, size = int(data.epoch), int(data.batch), len(data)
    except (AttributeError, TypeError):  # a source without a position
        return None
    return epoch + 1 if size and batch >= size else None


class EpochHistory(Callback):
    """Mean training loss of every data epoch, and metrics measured after it.

    Parameters
    ----------
    metrics : dict, optional
        ``name -> f(trainer)``, each evaluated when an epoch ends (e.g. the
        test accuracy of ``trainer.net``).

    Attributes
    ----------
    history : dict
        ``'epoch'`` (1, 2, ...), ``'loss'`` (the mean of the epoch's
        finite step losses, NaN when every step was skipped) and one list
        per metric.
    """

    def __init__(self, metrics=None):
        self.metrics = dict(metrics or {})
        self.history = {"epoch": [], "loss": []}
        self.history.update({name: [] for name in self.metrics})
        self._total, self._count = 0.0, 0

    def on_iteration(self, trainer, record):
        if record.get("loss") is not None:
            self._total += float(record["loss"])
            self._count += 1
        epoch = epoch_finished(trainer)
        if epoch is None:
            return
        self.history["epoch"].append(epoch)
        self.history["loss"].append(self._total / self._count if self._count
                                    else math.nan)
        self._total, self._count = 0.0, 0
        for name, fn in self.metrics.items():
            self.history[name].append(float(fn(trainer)))


class AnimatorCallback(Callback):
    """A live curve of an :class:`EpochHistory` (d2l's ``Animator``), one
    point per epoch, that ends as one figure.

    Parameters
    ----------
    history : EpochHistory
        Must come before this callback in the trainer's list.
    keys : sequence of str, default ('loss',)
        Entries of ``history.history`` to draw.
    legend : sequence of str, optional
        Default: ``keys``.
    **animator_kwargs
        Passed to ``d2l.Animator`` (``xlim``, ``ylim``, ``figsize`` ...).
    """

    def __init__(self, history, keys=("loss",), legend=None, **animator_kwargs):
        self.source, self.keys = history, tuple(keys)
        self.legend = list(legend) if legend is not None else list(self.keys)
        self.kwargs = dict(animator_kwargs)
        self.animator, self._drawn = None, 0

    def on_begin(self, trainer):
        if self.animator is None:
            from ..utils import Animator
            self.kwargs.setdefault("xlabel", "epoch")
            self.animator = Animator(legend=self.legend, **self.kwargs)

    def on_iteration(self, trainer, record):
        h = self.source.history
        while self._drawn < len(h["epoch"]):
            i = self._drawn
            self.animator.add(h["epoch"][i], tuple(h[k][i] for k in self.keys))
            self._drawn += 1


class ProgressBar(Callback):
    """A tqdm bar over the iterations with the loss, the learning rate and
    the throughput; :class:`~fr_lib.train.trainer.FaceTrainer` puts one first in its
    callbacks when ``TrainConfig.progress`` is set.

    Parameters
    ----------
    desc : str, default 'train'
    every : int, default 10
        Refresh the numbers shown every so many iterations (the mean loss
        and images per second since the last refresh).
    total : int, optional
        Default: the ``max_iters`` of the trainer's config.
    """

    def __init__(self, desc="train", every=10, total=None):
        self.desc, self.every, self.total = desc, max(int(every), 1), total
        self.bar = None
        self._reset()

    def _reset(self):
        self._loss, self._n, self._images, self._seconds = 0.0, 0, 0, 0.0

    def on_begin(self, trainer):
        from tqdm.auto import tqdm
        self.close()
        self._reset()
        total = self.total or trainer.config.max_iters
        self.bar = tqdm(total=total, initial=trainer.iteration, desc=self.desc,
                        unit="it", dynamic_ncols=True)

    def on_iteration(self, trainer, record):
        if self.bar is None:
            return
        self.bar.update(1)
        if record.get("loss") is not None:
            self._loss += float(record["loss"])
            self._n += 1
        self._images += record.get("images", 0)
        self._seconds += record.get("seconds", 0.0)
        it = record["iteration"]
        if it % self.every == 0 or it == self.bar.total:
            speed = self._images * getattr(trainer, "num_workers", 1) / \
                max(self._seconds, 1e-9)
            self.bar.set_postfix(
                loss=f"{self._loss / self._n:.4f}" if self._n else "nan",
                lr=f"{record['lr']:.3g}", img_s=f"{speed:.0f}", refresh=False)
            self._reset()

    def on_end(self, trainer, result):
        self.close()

    def close(self):
        """Close the bar (also when training stopped with an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

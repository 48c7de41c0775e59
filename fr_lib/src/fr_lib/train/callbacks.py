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
                                'seconds', 'max_iters'}`` (``loss`` is None
                                for a skipped non-finite step; ``images`` and
                                ``seconds``: the batch size and the time of
                                the step; ``max_iters``: where this ``fit()``
                                stops)
``on_train_end(trainer)``       after the last step of ``fit()``, before its
                                final checkpoint (which then holds what the
                                hook changed: the best verification metric)
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
import os

import numpy as np

__all__ = ["Callback", "EpochHistory", "AnimatorCallback", "ProgressBar",
           "Verification", "load_val_sets", "epoch_finished"]


class Callback:
    """A training-loop callback: override any of the hooks."""

    def on_begin(self, trainer):
        """Before the first step of :meth:`~fr_lib.train.trainer.FaceTrainer.fit`."""

    def on_iteration(self, trainer, record):
        """After every step (``record``: iteration, loss, lr, skipped,
        images, seconds)."""

    def on_train_end(self, trainer):
        """After the last step of :meth:`~fr_lib.train.trainer.FaceTrainer.fit`,
        before its final checkpoint."""

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


def load_val_sets(entries, data_dir=None):
    """``name -> VerificationSet`` of ``.bin`` files: paths, or names of
    ``<name>.bin`` files in ``data_dir`` (``TrainConfig.val_sets`` and
    ``TrainConfig.data``)."""
    from ..data.binfile import read_bin
    sets = {}
    for entry in entries:
        path = os.path.expanduser(entry)
        if not os.path.exists(path) and data_dir:
            path = os.path.join(os.path.expanduser(data_dir), entry + ".bin")
        vs = read_bin(path)
        sets[vs.name] = vs
    return sets


class Verification(Callback):
    """Verify the backbone on pair sets during training and keep the best one.

    Every ``every`` iterations (not at the last one) and once after the last
    step of each ``fit()`` (unless it just did), the backbone is evaluated
    with :class:`~fr_lib.metrics.VerificationEvaluator`. What it finds goes
    to the trainer: ``trainer.results`` (``name -> VerificationReport``),
    ``trainer.best_metric`` and ``trainer.best_iteration`` (kept in its
    checkpoints, so a resumed run knows its best) and a ``'verify'`` record
    in the log. An improvement is saved as ``checkpoints/best-<iteration>``
    (rank 0), unless the weights are those of a streak of skipped steps or
    hold a non-finite value. :class:`~fr_lib.train.trainer.FaceTrainer` adds
    one itself for ``val_sets`` / ``TrainConfig.val_sets``.

    Parameters
    ----------
    val_sets : dict or list
        ``name -> (images, issame)`` or :class:`~fr_lib.data.VerificationSet`,
        or a list of ``.bin`` paths (see :func:`load_val_sets`).
    every : int, default 0
        Verify every so many iterations (0: only at the end).
    batch_size : int, default 64
    best_metric : str, optional
        The set whose accuracy selects the best model; None: the mean
        accuracy over all sets.
    data_dir : str, optional
        Where names in a list of ``.bin`` files are looked for.
    ctx : Context, optional
        Default: the trainer's first context.

    Attributes
    ----------
    verified_at : int or None
        The iteration of the last verification.
    """

    def __init__(self, val_sets, every=0, batch_size=64, best_metric=None,
                 data_dir=None, ctx=None):
        from ..utils.checks import check_int
        self.every = check_int("every", every, 0)
        self.sets = dict(val_sets) if isinstance(val_sets, dict) else \
            load_val_sets(val_sets, data_dir)
        if not self.sets:
            raise ValueError("Verification needs at least one pair set")
        self.batch_size, self.best_metric, self.ctx = int(batch_size), best_metric, ctx
        self.evaluator, self.verified_at = None, None

    def get_evaluator(self, trainer):
        """The :class:`~fr_lib.metrics.VerificationEvaluator` (made on first use)."""
        if self.evaluator is None:
            from ..metrics.evaluator import VerificationEvaluator
            self.evaluator = VerificationEvaluator(
                self.sets, batch_size=self.batch_size,
                ctx=self.ctx if self.ctx is not None else trainer.ctx[0],
                progress=False)
        return self.evaluator

    def on_iteration(self, trainer, record):
        it = record["iteration"]
        if self.every and it % self.every == 0 and \
                it < record.get("max_iters", math.inf):
            self.verify(trainer)

    def on_train_end(self, trainer):
        if self.verified_at != trainer.iteration:
            self.verify(trainer)

    def verify(self, trainer):
        """Verify ``trainer.net`` now; returns ``name -> VerificationReport``."""
        results = self.get_evaluator(trainer).evaluate(trainer.net)
        trainer.results = results
        self.verified_at = it = trainer.iteration
        name = self.best_metric
        if name is not None and name not in results:
            raise ValueError(f"best_metric {name!r} is not one of the sets "
                             f"{list(results)}")
        metric = results[name].accuracy if name else \
            float(np.mean([r.accuracy for r in results.values()]))
        record = {"event": "verify", "iteration": it, "metric": metric}
        for k, r in results.items():
            record[k] = {"accuracy": r.accuracy, "std": r.std, "auc": r.auc, "eer": r.eer}
        # the weights of a bad streak are the restored good ones, but no
        # checkpoint is written during a streak (save_checkpoint)
        improved = (trainer.best_metric is None or metric > trainer.best_metric) \
            and trainer.saveable()
        if improved:
            trainer.best_metric, trainer.best_iteration = metric, it
            if trainer.is_writer:
                trainer.best_checkpoints.save(
                    it, {"backbone.params": trainer.net.save_parameters},
                    {"metric": metric, "iteration": it,
                     "results": {k: v for k, v in record.items()
                                 if isinstance(v, dict)}})
        record["best"] = improved
        trainer.log(record)
        return results

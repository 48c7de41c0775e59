"""Run a network over verification pair sets (lfw, cfp_fp, agedb_30, ...).

:class:`VerificationEvaluator` embeds every image of each set with the network
(and its horizontal flip), then applies the LFW protocol of
:mod:`fr_lib.metrics.verification` as InsightFace's evaluation code does.
gluon-face kept one flip metric object across sets and never reset it, so every
set after the first was polluted by the ones before; here each set, in each
call, is computed from scratch and nothing is kept on the evaluator.
"""
from collections import OrderedDict

import mxnet as mx
import numpy as np

from .embedding import _net_context, embed
from .verification import (DEFAULT_FARS, DEFAULT_THRESHOLDS, _as_issame,
                           evaluate_verification, pair_distances)

__all__ = ["VerificationEvaluator", "results_table", "plot_roc"]


def _unpack(name, pair_set):
    """(images, issame) from a tuple or an object with ``.images``/``.issame``."""
    if hasattr(pair_set, "images") and hasattr(pair_set, "issame"):
        images, issame = pair_set.images, pair_set.issame
    else:
        try:
            images, issame = pair_set
        except (TypeError, ValueError):
            raise ValueError(f"set {name!r}: expected (images, issame) or an object "
                             f"with .images and .issame") from None
    if not isinstance(images, mx.nd.NDArray):
        images = np.asarray(images)
    issame = _as_issame(issame)
    if images.ndim != 4 or images.shape[0] != 2 * issame.size:
        raise ValueError(f"set {name!r}: images must be (2N, C, H, W) with N = "
                         f"len(issame) = {issame.size}, got shape {images.shape}")
    return images, issame


class VerificationEvaluator:
    """Verification accuracy, ROC, AUC, EER and TAR@FAR of a network on pair sets.

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    Parameters
    ----------
    sets : dict
        ``name -> (images, issame)`` or ``name -> obj`` with ``obj.images`` and
        ``obj.issame``. ``images`` is an NDArray or NumPy array of shape
        (2N, C, H, W) (for face sets (2N, 3, 112, 112) float32), already in the
        network's pixel convention; images ``2i`` and ``2i+1`` form pair ``i``,
        whose label is ``issame[i]``.
    batch_size : int
        Images per forward pass.
    ctx : mxnet.Context or list of Context, optional
        Where to run the network (the first one of a list). Default: the
        context of the network's parameters.
    flip : bool
        Add the embedding of the horizontally flipped image (the protocol).
    num_folds, thresholds, fars
        Passed to :func:`~fr_lib.metrics.verification.evaluate_verification`.
    progress : bool
        Show a tqdm progress bar over the batches of each set.
    engine : {'auto', 'native', 'mxnet'}, default 'auto'
        fr_lib's engine vocabulary (:mod:`fr_lib.native`). ``'auto'``: when the network is a
        :class:`~fr_lib.model_zoo.MobileFaceNet` evaluated on CPU in float32
        and fr_lib's native operators are available, each set is embedded by
        a :func:`~fr_lib.model_zoo.fuse_network` snapshot of it taken when
        the set is evaluated (the same embeddings up to float32 rounding,
        several times faster); otherwise, and with ``'mxnet'``, by the
        network itself. ``'native'``: the snapshot, or a ValueError saying
        why it cannot be taken.

    Examples
    --------
    >>> evaluator = VerificationEvaluator({'lfw': (images, issame)})
    >>> results = evaluator.evaluate(net)
    >>> print(results_table(results))
    """

    def __init__(self, sets, batch_size=64, ctx=None, flip=True, num_folds=10,
                 thresholds=DEFAULT_THRESHOLDS, fars=DEFAULT_FARS, progress=True,
                 engine="auto"):
        from ..native.backend import check_engine
        engine = check_engine(engine)
        if not hasattr(sets, "items"):
            raise ValueError("sets must be a dict name -> (images, issame)")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.sets = OrderedDict((name, _unpack(name, s)) for name, s in sets.items())
        self.batch_size = int(batch_size)
        self.ctx = ctx[0] if isinstance(ctx, (list, tuple)) else ctx
        self.flip = flip
        self.num_folds = num_folds
        self.thresholds = thresholds
        self.fars = fars
        self.progress = progress
        self.engine = engine

    def _runner(self, net, ctx, images):
        """``net``, or a fused snapshot of it when the engine allows."""
        from ..model_zoo import fused
        from ..native.backend import resolve_engine
        if resolve_engine(self.engine, [ctx])[0] == "mxnet":
            return net
        snapshot, why = fused.try_fuse(net)
        if snapshot is None and self.engine == "native":
            raise ValueError(f"engine='native' cannot be used: {why}")
        if snapshot is None or np.dtype(images.dtype) != np.float32:
            return net
        return snapshot

    def embed(self, net, images, desc=None):
        """Embeddings of ``images`` (and of their flips) by ``net``.

        :func:`fr_lib.metrics.embed` with this evaluator's batch size,
        context, flip and progress settings, run by a fused snapshot of
        ``net`` where the engine allows (see the class). Runs with autograd
        paused, so BatchNorm and Dropout are in inference mode. A network
        returning a tuple contributes its first output.

        Returns
        -------
        emb, flipped : numpy.ndarray, shape (len(images), D)
            ``flipped`` is None when ``flip`` is False.
        """
        ctx = self.ctx if self.ctx is not None else _net_context(net)
        runner = self._runner(net, ctx, images)
        return embed(runner, images, flip=self.flip, batch_size=self.batch_size,
                     ctx=ctx, progress=self.progress, desc=desc)

    def evaluate_set(self, net, name):
        """The protocol on one set; returns a :class:`VerificationReport`."""
        images, issame = self.sets[name]
        emb, flipped = self.embed(net, images, desc=name)
        if flipped is None:
            dist = pair_distances(emb[0::2], emb[1::2])
        else:
            dist = pair_distances(emb[0::2], emb[1::2], flipped[0::2], flipped[1::2])
        return evaluate_verification(dist, issame, num_folds=self.num_folds,
                                     thresholds=self.thresholds, fars=self.fars)

    def evaluate(self, net):
        """Evaluate ``net`` on every set.

        Returns
        -------
        collections.OrderedDict
            ``name -> VerificationReport`` in the order of ``sets``.
        """
        return OrderedDict((name, self.evaluate_set(net, name)) for name in self.sets)


def results_table(results, as_rows=False):
    """A plain-text table of results (one row per set), or its rows.

    Book: introduced in ``chapter_evaluation/roc-far`` (阈值、ROC、TAR@FAR 与 EER).

    Parameters
    ----------
    results : dict
        ``name -> VerificationReport``, as returned by
        :meth:`VerificationEvaluator.evaluate`.
    as_rows : bool
        Return a list of rows (the header first, then one list of strings per
        set) instead of the formatted string.

    Returns
    -------
    str or list of list of str
        TAR@FAR cells read ``n/a`` when the set has too few impostor pairs.
    """
    fars = []
    for report in results.values():
        fars += [f for f in report.tar_at_far if f not in fars]
    header = (["set", "pairs", "accuracy (%)", "threshold", "AUC", "EER (%)"]
              + [f"TAR@FAR={f:g} (%)" for f in fars])
    rows = [header]
    for name, r in results.items():
        row = [str(name), str(r.num_pairs), f"{100 * r.accuracy:.2f} +- {100 * r.std:.2f}",
               f"{np.mean(r.best_thresholds):.2f}", f"{r.auc:.4f}", f"{100 * r.eer:.2f}"]
        for f in fars:
            t = r.tar_at_far.get(f)
            row.append("n/a" if t is None or t.reason else f"{100 * t.tar:.2f}")
        rows.append(row)
    if as_rows:
        return rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_roc(results, ax=None, log_far=True):
    """ROC curves (TAR against FAR) of one or several sets.

    Book: introduced in ``chapter_evaluation/roc-far`` (阈值、ROC、TAR@FAR 与 EER).

    Parameters
    ----------
    results : dict
        ``name -> VerificationReport``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure when None.
    log_far : bool
        Logarithmic FAR axis (the usual face recognition view, where the low
        FAR end matters); points with FAR = 0 are then not drawn.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for name, r in results.items():
        far, tar = np.asarray(r.far), np.asarray(r.tar)
        if log_far:
            keep = far > 0
            far, tar = far[keep], tar[keep]
        ax.plot(far, tar, label=f"{name} (AUC {r.auc:.4f})")
    if log_far:
        ax.set_xscale("log")
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return ax

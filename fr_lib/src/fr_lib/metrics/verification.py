"""Face verification metrics: the LFW protocol, ROC, AUC, EER and TAR@FAR.

The protocol follows LFW (Huang et al., "Labeled Faces in the Wild: A Database
for Studying Face Recognition in Unconstrained Environments", UMass TR 07-49,
2007) as InsightFace's verification code runs it on every ``.bin`` pair set
(lfw, cfp_fp, agedb_30, ...):

1. embedding of an image = backbone(image) + backbone(horizontal flip), then
   L2-normalised;
2. distance of a pair = squared L2 distance of the two embeddings, in [0, 4];
3. a pair is predicted "same" when ``distance < threshold``; thresholds are
   ``np.arange(0, 4, 0.01)``;
4. 10 contiguous folds (scikit-learn ``KFold`` without shuffling); on each fold
   the threshold with the best accuracy on the other 9 folds (the first one on
   ties, as ``np.argmax``) is applied to the held-out fold;
5. report the mean and the (population) standard deviation of the 10 fold
   accuracies.

Everything here is NumPy and vectorised: the accuracy of every threshold on
every fold comes from one sort-and-count pass, never from a Python loop over
thresholds and pairs.
"""
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_FARS", "pair_distances",
           "verification_accuracy", "VerificationAccuracy", "roc_curve",
           "RocCurve", "auc", "eer", "tar_at_far", "TarAtFar",
           "evaluate_verification", "VerificationReport"]

# InsightFace's grid. Read-only so that it can serve as a default argument.
DEFAULT_THRESHOLDS = np.arange(0, 4, 0.01)
DEFAULT_THRESHOLDS.setflags(write=False)

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def _to_numpy(x):
    """NumPy view of an NDArray, array or sequence."""
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return np.asarray(x)


def _as_embeddings(x, name):
    x = _to_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) array, got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def _as_issame(issame):
    s = _to_numpy(issame)
    if s.ndim != 1:
        raise ValueError(f"issame must be one-dimensional, got shape {s.shape}")
    if s.dtype == bool:
        return s
    if s.dtype.kind in "iuf" or s.dtype == object:
        try:
            ok = np.all((s == 0) | (s == 1))
        except TypeError:
            ok = False
        if ok:
            return s.astype(bool)
    raise ValueError("issame must be boolean (or 0/1) labels, one per pair; "
                     f"got dtype {s.dtype}")


def _check_pairs(distances, issame):
    d = _to_numpy(distances)
    if d.ndim != 1:
        raise ValueError(f"distances must be one-dimensional, got shape {d.shape}")
    if d.dtype.kind not in "iuf":
        raise ValueError(f"distances must be numbers, got dtype {d.dtype}")
    d = d.astype(np.float64, copy=False)
    s = _as_issame(issame)
    if d.size != s.size:
        raise ValueError(f"distances and issame differ in length: {d.size} pairs "
                         f"vs {s.size} labels")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances contain NaN or infinite values")
    return d, s


def pair_distances(emb1, emb2, flip1=None, flip2=None, eps=1e-12):
    """Squared L2 distance of each pair under the verification protocol.

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    Parameters
    ----------
    emb1, emb2 : array-like or NDArray, shape (N, D)
        Raw (unnormalised) embeddings of the first and second image of each
        pair.
    flip1, flip2 : array-like or NDArray, shape (N, D), optional
        Embeddings of the horizontally flipped images; give both or neither.
        They are added to ``emb1``/``emb2`` before normalising, as in
        InsightFace's evaluation code.
    eps : float
        Guards the normalisation: an all-zero embedding gets cosine 0 with
        every other one (distance 2).

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        ``||e1 - e2||^2`` of the L2-normalised embeddings, clipped to [0, 4].
    """
    if (flip1 is None) != (flip2 is None):
        raise ValueError("give the flipped embeddings of both images (flip1 and "
                         "flip2) or of neither")
    e1, e2 = _as_embeddings(emb1, "emb1"), _as_embeddings(emb2, "emb2")
    if e1.shape != e2.shape:
        raise ValueError(f"emb1 and emb2 differ in shape: {e1.shape} vs {e2.shape}")
    if flip1 is not None:
        f1, f2 = _as_embeddings(flip1, "flip1"), _as_embeddings(flip2, "flip2")
        if f1.shape != e1.shape or f2.shape != e1.shape:
            raise ValueError(f"flipped embeddings must have shape {e1.shape}, got "
                             f"{f1.shape} and {f2.shape}")
        e1, e2 = e1 + f1, e2 + f2
    # ||u/|u| - v/|v|||^2 = 2 - 2 u.v / (|u| |v|): three row-wise einsums and no
    # normalised copies, the fastest form measured (this step is most of the
    # time of a whole evaluation). In float64 the cancellation near 0 costs
    # ~1e-15, far below the 0.01 threshold grid.
    uu = np.einsum("ij,ij->i", e1, e1)
    vv = np.einsum("ij,ij->i", e2, e2)
    uv = np.einsum("ij,ij->i", e1, e2)
    return np.clip(2.0 - 2.0 * uv / np.sqrt((uu + eps) * (vv + eps)), 0.0, 4.0)


@dataclass
class VerificationAccuracy:
    """Outcome of the k-fold accuracy protocol.

    Attributes
    ----------
    accuracy : float
        Mean of the fold accuracies.
    std : float
        Population standard deviation (``np.std``) of the fold accuracies.
    fold_accuracies : numpy.ndarray, shape (num_folds,)
        Accuracy of each held-out fold.
    best_thresholds : numpy.ndarray, shape (num_folds,)
        Threshold chosen on the other folds for each held-out fold.
    """
    accuracy: float
    std: float
    fold_accuracies: np.ndarray
    best_thresholds: np.ndarray

    def __str__(self):
        return (f"accuracy {self.accuracy:.4f} +- {self.std:.4f} "
                f"(threshold {np.mean(self.best_thresholds):.2f})")


def _fold_ids(num_pairs, num_folds):
    """Fold of each pair: contiguous blocks, the first ``n % k`` one longer (KFold)."""
    sizes = np.full(num_folds, num_pairs // num_folds, dtype=np.int64)
    sizes[:num_pairs % num_folds] += 1
    return np.repeat(np.arange(num_folds), sizes), sizes


def verification_accuracy(distances, issame, num_folds=10,
                          thresholds=DEFAULT_THRESHOLDS):
    """Verification accuracy with the threshold chosen by k-fold cross-validation.

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    The LFW protocol (Huang et al., 2007) as InsightFace's ``calculate_roc``
    runs it: pairs are cut into ``num_folds`` contiguous folds (no shuffle);
    for each fold the threshold with the highest accuracy on the other folds
    (the first such threshold in ``thresholds`` order) is applied to it. A pair
    is predicted "same" when ``distance < threshold``.

    Parameters
    ----------
    distances : array-like, shape (N,)
        Distance of each pair (e.g. from :func:`pair_distances`).
    issame : array-like of bool or 0/1, shape (N,)
        Whether each pair shows the same person.
    num_folds : int
        Number of folds, at least 2 and at most N.
    thresholds : array-like
        Candidate thresholds; default ``np.arange(0, 4, 0.01)``.

    Returns
    -------
    VerificationAccuracy

    Raises
    ------
    ValueError
        On unequal lengths, non-boolean labels, non-finite distances, fewer
        pairs than folds, or an empty/NaN threshold grid.
    """
    d, s = _check_pairs(distances, issame)
    if int(num_folds) != num_folds or num_folds < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds}")
    num_folds = int(num_folds)
    if d.size < num_folds:
        raise ValueError(f"need at least num_folds={num_folds} pairs, got {d.size}")
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    if thr.size == 0 or np.any(np.isnan(thr)):
        raise ValueError("thresholds must be a non-empty array without NaN")

    num_thr = thr.size
    order = np.argsort(thr, kind="stable")
    # A pair is "same" at sorted threshold j exactly when j >= start, where
    # start counts the thresholds <= its distance.
    start = np.searchsorted(thr[order], d, side="right")
    fold, fold_sizes = _fold_ids(d.size, num_folds)
    cell = fold * (num_thr + 1) + start
    shape = (num_folds, num_thr + 1)
    same_hist = np.bincount(cell[s], minlength=shape[0] * shape[1]).reshape(shape)
    diff_hist = np.bincount(cell[~s], minlength=shape[0] * shape[1]).reshape(shape)
    tp = np.cumsum(same_hist, axis=1)[:, :num_thr]
    fp = np.cumsum(diff_hist, axis=1)[:, :num_thr]
    num_diff = diff_hist.sum(axis=1, keepdims=True)
    correct_sorted = tp + (num_diff - fp)          # (folds, thresholds), counts
    correct = np.empty_like(correct_sorted)
    correct[:, order] = correct_sorted              # back to the caller's order
    # Integer counts with a common denominator per fold: argmax on them is
    # argmax on the training accuracy, ties included.
    train_correct = correct.sum(axis=0, keepdims=True) - correct
    best = np.argmax(train_correct, axis=1)
    fold_acc = correct[np.arange(num_folds), best] / fold_sizes
    return VerificationAccuracy(accuracy=float(np.mean(fold_acc)),
                                std=float(np.std(fold_acc)),
                                fold_accuracies=fold_acc,
                                best_thresholds=thr[best])


RocCurve = namedtuple("RocCurve", ["far", "tar", "thresholds"])
RocCurve.__doc__ = """ROC of a pair set: ``far[i]`` and ``tar[i]`` when accepting
``distance <= thresholds[i]``."""


def _roc_counts(d, s):
    """Cumulative false/true accept counts at every distinct distance."""
    num_same = int(np.count_nonzero(s))
    num_diff = s.size - num_same
    if num_same == 0 or num_diff == 0:
        raise ValueError(f"a ROC needs both genuine and impostor pairs; got "
                         f"{num_same} genuine and {num_diff} impostor pairs")
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], s[order]
    # Only the last pair of a run of equal distances closes a ROC point: pairs
    # at the same distance are accepted together.
    last = np.r_[ds[1:] != ds[:-1], True]
    tp = np.r_[0, np.cumsum(ss)[last]]
    fp = np.r_[0, np.cumsum(~ss)[last]]
    thr = np.r_[-np.inf, ds[last]]
    return fp, tp, thr, num_diff, num_same


def roc_curve(distances, issame):
    """ROC over all distinct distances (a pair is accepted when ``distance <= t``).

    Book: introduced in ``chapter_evaluation/roc-far`` (阈值、ROC、TAR@FAR 与 EER).

    Parameters
    ----------
    distances : array-like, shape (N,)
    issame : array-like of bool or 0/1, shape (N,)

    Returns
    -------
    RocCurve
        ``(far, tar, thresholds)``, each of length (number of distinct
        distances + 1). The first point, threshold ``-inf``, accepts nothing;
        the last accepts everything. FAR (false accept rate) is the false
        positive rate over impostor pairs, TAR (true accept rate) the true
        positive rate over genuine pairs; both are non-decreasing.

    Raises
    ------
    ValueError
        Also when there are no genuine or no impostor pairs.
    """
    d, s = _check_pairs(distances, issame)
    fp, tp, thr, num_diff, num_same = _roc_counts(d, s)
    return RocCurve(fp / num_diff, tp / num_same, thr)


def _auc(far, tar):
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1])) / 2)


def auc(distances, issame):
    """Area under the ROC curve (trapezoids, so tied distances count one half).

    Equals the probability that a random genuine pair is closer than a random
    impostor pair, i.e. scikit-learn's ``roc_auc_score(issame, -distances)``.

    Returns
    -------
    float
    """
    far, tar, _ = roc_curve(distances, issame)
    return _auc(far, tar)


def _eer(fp, tp, num_diff, num_same):
    # far + tar - 1 in exact integers (scaled by num_diff * num_same): it
    # rises from -1 to +1 along the curve; the EER sits at its zero crossing.
    g = fp * num_same + tp * num_diff - num_diff * num_same
    i = int(np.argmax(g >= 0))
    far = fp / num_diff
    if g[i] == 0:
        return float(far[i])
    w = -g[i - 1] / (g[i] - g[i - 1])
    return float(far[i - 1] + w * (far[i] - far[i - 1]))


def eer(distances, issame):
    """Equal error rate: the FAR where FAR = 1 - TAR on the ROC curve.

    Book: introduced in ``chapter_evaluation/roc-far`` (阈值、ROC、TAR@FAR 与 EER).

    The ROC curve is taken as piecewise linear between its points, and the
    crossing with the line ``far = 1 - tar`` is interpolated.

    Returns
    -------
    float
    """
    d, s = _check_pairs(distances, issame)
    fp, tp, _, num_diff, num_same = _roc_counts(d, s)
    return _eer(fp, tp, num_diff, num_same)


TarAtFar = namedtuple("TarAtFar", ["target_far", "tar", "far", "threshold", "reason"])
TarAtFar.__doc__ = """TAR at a target FAR.

``tar``, ``far`` and ``threshold`` (accept ``distance <= threshold``) are NaN and
``reason`` says why when the set has fewer than 1/FAR impostor pairs;
otherwise ``reason`` is None."""


def _check_fars(fars):
    fars = np.atleast_1d(np.asarray(fars, dtype=np.float64))
    if fars.ndim != 1 or np.any(~(fars > 0)) or np.any(fars > 1):
        raise ValueError(f"fars must lie in (0, 1], got {fars}")
    return fars


def _tar_at_far(fp, tp, thr, num_diff, num_same, fars):
    out = {}
    for target in fars:  # a handful of targets, each a binary search
        target = float(target)
        # 1/FAR impostor pairs are the fewest with which FAR = target can be
        # observed at all (the tolerance absorbs 1e-3 * 1000 != 1 roundings).
        if num_diff * target < 1 - 1e-9:
            out[target] = TarAtFar(target, float("nan"), float("nan"), float("nan"),
                                   f"not enough impostor pairs: {num_diff} < "
                                   f"1/FAR = {1 / target:g}")
            continue
        allowed = np.floor(num_diff * target + 1e-9)
        # fp is non-decreasing, possibly with repeats: take the last point that
        # stays within the allowance (the largest such threshold).
        i = int(np.searchsorted(fp, allowed, side="right")) - 1
        out[target] = TarAtFar(target, float(tp[i] / num_same),
                               float(fp[i] / num_diff), float(thr[i]), None)
    return out


def tar_at_far(distances, issame, fars=DEFAULT_FARS):
    """True accept rate at target false accept rates.

    Book: introduced in ``chapter_evaluation/roc-far`` (阈值、ROC、TAR@FAR 与 EER).

    For each target, the TAR at the largest ROC threshold whose FAR does not
    exceed it (no interpolation; repeated FAR values on the curve are fine).

    Parameters
    ----------
    distances : array-like, shape (N,)
    issame : array-like of bool or 0/1, shape (N,)
    fars : sequence of float
        Target FARs in (0, 1].

    Returns
    -------
    dict
        ``{target_far: TarAtFar}`` in the order of ``fars``. When the set has
        fewer than ``1/target_far`` impostor pairs, the result holds NaN and
        ``reason`` says "not enough impostor pairs".
    """
    d, s = _check_pairs(distances, issame)
    fars = _check_fars(fars)
    return _tar_at_far(*_roc_counts(d, s), fars)


@dataclass
class VerificationReport:
    """Everything the verification protocol reports for one pair set.

    Attributes
    ----------
    num_pairs, num_same : int
        Pairs in the set, and how many of them are genuine.
    accuracy, std : float
        Mean and standard deviation of the k-fold accuracy.
    fold_accuracies, best_thresholds : numpy.ndarray
        Per fold, see :class:`VerificationAccuracy`.
    far, tar, roc_thresholds : numpy.ndarray
        The ROC curve, see :func:`roc_curve`.
    auc, eer : float
    tar_at_far : dict
        ``{target_far: TarAtFar}``, see :func:`tar_at_far`.
    """
    num_pairs: int
    num_same: int
    accuracy: float
    std: float
    fold_accuracies: np.ndarray
    best_thresholds: np.ndarray
    far: np.ndarray = field(repr=False)
    tar: np.ndarray = field(repr=False)
    roc_thresholds: np.ndarray = field(repr=False)
    auc: float = float("nan")
    eer: float = float("nan")
    tar_at_far: dict = field(default_factory=dict)

    def __str__(self):
        parts = [f"{self.num_pairs} pairs", f"accuracy {self.accuracy:.4f} +- "
                 f"{self.std:.4f}", f"AUC {self.auc:.4f}", f"EER {self.eer:.4f}"]
        for target, r in self.tar_at_far.items():
            parts.append(f"TAR@FAR={target:g} " + ("n/a" if r.reason else f"{r.tar:.4f}"))
        return ", ".join(parts)


def evaluate_verification(distances, issame, num_folds=10,
                          thresholds=DEFAULT_THRESHOLDS, fars=DEFAULT_FARS):
    """The whole protocol on one pair set: k-fold accuracy, ROC, AUC, EER, TAR@FAR.

    Parameters
    ----------
    distances : array-like, shape (N,)
        Squared L2 distances (see :func:`pair_distances`).
    issame : array-like of bool or 0/1, shape (N,)
    num_folds : int
    thresholds : array-like
        Grid for the k-fold accuracy; default ``np.arange(0, 4, 0.01)``.
    fars : sequence of float
        Targets for :func:`tar_at_far`.

    Returns
    -------
    VerificationReport
    """
    d, s = _check_pairs(distances, issame)
    fars = _check_fars(fars)
    acc = verification_accuracy(d, s, num_folds=num_folds, thresholds=thresholds)
    fp, tp, thr, num_diff, num_same = _roc_counts(d, s)  # one sort for all ROC figures
    far, tar = fp / num_diff, tp / num_same
    return VerificationReport(
        num_pairs=int(d.size), num_same=num_same, accuracy=acc.accuracy,
        std=acc.std, fold_accuracies=acc.fold_accuracies,
        best_thresholds=acc.best_thresholds, far=far, tar=tar, roc_thresholds=thr,
        auc=_auc(far, tar), eer=_eer(fp, tp, num_diff, num_same),
        tar_at_far=_tar_at_far(fp, tp, thr, num_diff, num_same, fars))

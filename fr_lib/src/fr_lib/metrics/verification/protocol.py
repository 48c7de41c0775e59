"""The k-fold accuracy protocol: the checks every metric applies to its pairs,
the distance of a pair (:func:`pair_distances`) and the accuracy with the
threshold chosen on the other folds (:func:`verification_accuracy`).
"""
from dataclasses import dataclass

import numpy as np

from ...utils.checks import check_int

__all__ = ["DEFAULT_THRESHOLDS", "pair_distances", "verification_accuracy",
           "VerificationAccuracy"]

# InsightFace's grid. Read-only so that it can serve as a default argument.
DEFAULT_THRESHOLDS = np.arange(0, 4, 0.01)
DEFAULT_THRESHOLDS.setflags(write=False)


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
    num_folds = check_int("num_folds", num_folds, 2)
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

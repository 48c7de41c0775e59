"""The whole protocol on one pair set, in one report
(:func:`evaluate_verification`, :class:`VerificationReport`).
"""
from dataclasses import dataclass, field

import numpy as np

from .protocol import DEFAULT_THRESHOLDS, _check_pairs, verification_accuracy
from .roc import DEFAULT_FARS, _auc, _check_fars, _eer, _roc_counts, _tar_at_far

__all__ = ["evaluate_verification", "VerificationReport"]


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

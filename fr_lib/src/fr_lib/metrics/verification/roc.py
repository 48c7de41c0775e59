"""Threshold-free figures of a pair set: the ROC curve, its AUC, the EER and the
TAR at target FARs, all from one sort of the distances.
"""
from collections import namedtuple

import numpy as np

from .protocol import _check_pairs

__all__ = ["DEFAULT_FARS", "roc_curve", "RocCurve", "auc", "eer", "tar_at_far",
           "TarAtFar"]

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


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


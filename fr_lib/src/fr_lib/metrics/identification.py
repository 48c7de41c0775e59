"""Closed-set face identification: rank-k accuracy of probes against a gallery.

A probe is identified correctly at rank k when its own identity is among the
k gallery identities most similar to it (cosine similarity; an identity with
several gallery images scores with its most similar one). This is the
cumulative match characteristic (CMC) used by identification benchmarks such
as MegaFace (Kemelmacher-Shlizerman et al., CVPR 2016, arXiv:1512.00596).
"""
from dataclasses import dataclass

import numpy as np

from .embedding import l2_normalize

__all__ = ["identification_rank_k", "IdentificationResult", "split_gallery_probe"]


def _to_numpy(x):
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return np.asarray(x)


def _normalized(x, name):
    """Rows of ``x`` at unit length, in float64 (ranks need no float32 ties)."""
    x = _to_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) array, got shape {x.shape}")
    return l2_normalize(x.astype(np.float64, copy=False))


def _labels(y, n, name):
    y = _to_numpy(y)
    if y.ndim != 1 or y.size != n:
        raise ValueError(f"{name} must be one label per row ({n}), got shape {y.shape}")
    return y


@dataclass
class IdentificationResult:
    """Rank-k identification accuracy.

    Attributes
    ----------
    rank_k : dict
        ``{k: accuracy}``: the fraction of evaluated probes whose identity is
        among the k most similar gallery identities.
    ranks : numpy.ndarray of int, shape (num_probes,)
        1-based rank of the true identity for each evaluated probe.
    num_probes : int
        Probes evaluated.
    num_excluded : int
        Probes left out because their identity is not in the gallery (only
        with ``missing='exclude'``).
    num_identities : int
        Identities in the gallery.
    """
    rank_k: dict
    ranks: np.ndarray
    num_probes: int
    num_excluded: int
    num_identities: int

    def __str__(self):
        accs = ", ".join(f"rank-{k} {a:.4f}" for k, a in self.rank_k.items())
        return f"{accs} ({self.num_probes} probes, {self.num_identities} identities)"


def identification_rank_k(gallery_emb, gallery_labels, probe_emb, probe_labels,
                          ks=(1, 5), missing="raise", chunk_size=1024):
    """Rank-k accuracy of closed-set identification with cosine similarity.

    Book: introduced in ``chapter_evaluation/identification`` (1:N 辨识).

    Parameters
    ----------
    gallery_emb : array-like or NDArray, shape (G, D)
    gallery_labels : array-like, shape (G,)
        Identity of each gallery row (ints or strings).
    probe_emb : array-like or NDArray, shape (P, D)
    probe_labels : array-like, shape (P,)
    ks : sequence of int
        Ranks to report, each >= 1 (a k above the number of identities gives 1.0).
    missing : {'raise', 'exclude'}
        What to do with probes whose identity has no gallery image: raise a
        ValueError (default: closed-set identification has no answer for
        them), or leave them out and count them in ``num_excluded``.
    chunk_size : int
        Probes scored at a time, to bound the (chunk, G) similarity matrix.

    Returns
    -------
    IdentificationResult

    Notes
    -----
    Ties count against the probe: a wrong identity exactly as similar as the
    true one ranks before it, so degenerate embeddings (all equal) cannot score
    well.
    """
    if missing not in ("raise", "exclude"):
        raise ValueError(f"missing must be 'raise' or 'exclude', got {missing!r}")
    ks = [int(k) for k in np.atleast_1d(ks)]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be integers >= 1, got {ks}")
    g = _normalized(gallery_emb, "gallery_emb")
    p = _normalized(probe_emb, "probe_emb")
    if g.shape[1] != p.shape[1]:
        raise ValueError(f"gallery and probe embeddings differ in size: "
                         f"{g.shape[1]} vs {p.shape[1]}")
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty")
    gl = _labels(gallery_labels, g.shape[0], "gallery_labels")
    pl = _labels(probe_labels, p.shape[0], "probe_labels")

    ids, g_cls = np.unique(gl, return_inverse=True)
    pos = np.minimum(np.searchsorted(ids, pl), ids.size - 1)
    known = ids[pos] == pl
    num_excluded = int(np.count_nonzero(~known))
    if num_excluded and missing == "raise":
        raise ValueError(f"{num_excluded} probe(s) have identities absent from the "
                         f"gallery (e.g. {pl[~known][:5].tolist()}); pass "
                         f"missing='exclude' to leave them out")
    p, p_cls = p[known], pos[known]
    if p.shape[0] == 0:
        raise ValueError("no probe has its identity in the gallery")

    # Gallery columns grouped by identity, so that maximum.reduceat gives each
    # identity's best similarity in one call.
    order = np.argsort(g_cls, kind="stable")
    g = g[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g_cls[order])) + 1]
    ranks = np.empty(p.shape[0], dtype=np.int64)
    for lo in range(0, p.shape[0], int(chunk_size)):
        hi = lo + int(chunk_size)
        per_id = np.maximum.reduceat(p[lo:hi] @ g.T, starts, axis=1)
        true = per_id[np.arange(per_id.shape[0]), p_cls[lo:hi]]
        ranks[lo:hi] = np.count_nonzero(per_id >= true[:, None], axis=1)
    rank_k = {k: float(np.mean(ranks <= k)) for k in ks}
    return IdentificationResult(rank_k=rank_k, ranks=ranks, num_probes=int(ranks.size),
                                num_excluded=num_excluded, num_identities=int(ids.size))


def split_gallery_probe(labels, num_gallery_per_id=1, seed=0):
    """Split samples into a gallery and probes, per identity, at random.

    Parameters
    ----------
    labels : array-like, shape (N,)
        Identity of each sample.
    num_gallery_per_id : int
        Gallery samples drawn per identity; the rest of that identity become
        probes. An identity with no more samples than this goes entirely to
        the gallery (it then acts as a distractor with no probe).
    seed : int
        Seed of the random draw (the split is reproducible).

    Returns
    -------
    gallery_idx, probe_idx : numpy.ndarray of int
        Sorted indices into ``labels``; together they cover every sample once.
    """
    labels = _to_numpy(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if int(num_gallery_per_id) != num_gallery_per_id or num_gallery_per_id < 1:
        raise ValueError(f"num_gallery_per_id must be an integer >= 1, "
                         f"got {num_gallery_per_id}")
    _, cls = np.unique(labels, return_inverse=True)
    # Random order, then a stable sort by identity: each identity's samples end
    # up in random order, and its first num_gallery_per_id go to the gallery.
    perm = np.random.RandomState(seed).permutation(labels.size)
    perm = perm[np.argsort(cls[perm], kind="stable")]
    sorted_cls = cls[perm]
    group_start = np.searchsorted(sorted_cls, sorted_cls, side="left")
    in_gallery = (np.arange(labels.size) - group_start) < num_gallery_per_id
    return np.sort(perm[in_gallery]), np.sort(perm[~in_gallery])

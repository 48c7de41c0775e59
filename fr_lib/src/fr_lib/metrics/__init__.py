"""Similarity between embeddings, and the verification and identification metrics.

- :mod:`fr_lib.metrics.verification` -- the LFW protocol (k-fold accuracy), ROC,
  AUC, EER, TAR@FAR, in NumPy
- :mod:`fr_lib.metrics.identification` -- rank-k (CMC) accuracy, gallery/probe split
- :mod:`fr_lib.metrics.embedding` -- :func:`embed`: a network over images and
  their horizontal flips (the one embed-with-flip function of fr_lib), and
  :func:`l2_normalize` (the one row normaliser for NumPy arrays and NDArrays)
- :mod:`fr_lib.metrics.evaluator` -- runs a network over ``.bin`` pair sets
"""
from mxnet import nd

from . import verification, identification, embedding, evaluator
from .verification import *  # noqa: F401,F403
from .identification import *  # noqa: F401,F403
from .embedding import *  # noqa: F401,F403
from .evaluator import *  # noqa: F401,F403

__all__ = (["cosine_similarity", "squared_l2_distance"]
           + verification.__all__ + identification.__all__ + embedding.__all__
           + evaluator.__all__)


def cosine_similarity(a, b):
    """Cosine similarity matrix between rows of ``a`` (N, D) and ``b`` (M, D).

    Book: introduced in ``chapter_introduction/face-recognition-task`` (人脸识别任务).

    Returns an (N, M) NDArray with values in [-1, 1].
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) arrays, got {a.shape} and {b.shape}")
    return nd.dot(l2_normalize(a), l2_normalize(b), transpose_b=True)


def squared_l2_distance(a, b):
    """Squared Euclidean distance (N, M) between L2-normalised rows.

    Book: introduced in ``chapter_introduction/first-look`` (动手：检测、对齐与比较).

    For unit vectors ``||u - v||^2 = 2 - 2 cos(u, v)``, so it lies in [0, 4];
    this is the distance the verification protocol thresholds.
    """
    return nd.clip(2 - 2 * cosine_similarity(a, b), 0, 4)

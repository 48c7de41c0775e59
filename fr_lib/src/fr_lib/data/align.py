"""Alignment to the 112x112 ArcFace template with a similarity transform."""
import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "LANDMARK_NAMES", "estimate_similarity",
           "apply_transform", "align_face"]

#: Five reference points (x, y) in a 112x112 aligned face, as used by
#: InsightFace/ArcFace: left eye, right eye, nose tip, left and right mouth corner
#: (left/right as seen in the image).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014],
                             [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def estimate_similarity(src, dst):
    """Least-squares similarity transform (rotation, uniform scale, shift).

    Book: introduced in ``chapter_introduction/first-look`` (动手：检测、对齐与比较).

    Finds the 2x3 matrix ``M`` minimising ``sum ||M @ [p, 1] - q||^2`` over
    corresponding points ``p`` in ``src`` and ``q`` in ``dst`` (Umeyama 1991,
    without reflection). Two points determine it exactly.

    Parameters
    ----------
    src, dst : array-like, shape (K, 2), K >= 2

    Returns
    -------
    numpy.ndarray, shape (2, 3)
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (K, 2) point arrays with K >= 2, got "
                         f"{src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s == 0:
        raise ValueError("source points coincide; a similarity transform is undefined")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / var_s
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def apply_transform(matrix, points):
    """Apply a 2x3 affine matrix to (K, 2) points.

    Book: introduced in ``chapter_introduction/first-look`` (动手：检测、对齐与比较).
    """
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image, landmarks, size=112, template=None):
    """Warp a face so its landmarks land on the ArcFace template.

    Book: introduced in ``chapter_introduction/first-look`` (动手：检测、对齐与比较).

    Parameters
    ----------
    image : numpy.ndarray, (H, W, 3) uint8
    landmarks : array-like, (5, 2) in template order, or (2, 2) eye centres
        With two points only the eyes of the template are used.
    size : int
        Output side length; the template is scaled by ``size / 112``.
    template : array-like or None
        Reference points; defaults to :data:`ARCFACE_TEMPLATE`.

    Returns
    -------
    aligned : numpy.ndarray, (size, size, 3)
    matrix : numpy.ndarray, (2, 3), maps image coordinates to aligned ones
    """
    import cv2
    landmarks = np.asarray(landmarks, dtype=np.float64)
    template = ARCFACE_TEMPLATE if template is None else np.asarray(template, np.float64)
    template = template[:len(landmarks)] * (size / 112.0)
    matrix = estimate_similarity(landmarks, template)
    aligned = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return aligned, matrix

"""Face verification on ordinary photos: detect, align, embed, compare.

:class:`FaceVerifier` joins OpenCV's Haar cascades, the ArcFace-template
alignment (:func:`fr_lib.data.align_face`), an embedder of
:mod:`fr_lib.deploy.embedders` and a squared-L2 threshold. Taught in
``chapter_deployment/verification-demo``.
"""
import os
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx

from ..data.align import align_face
from ..data.transforms import decode_image
from .embedders import l2_normalize

__all__ = ["NoFaceError", "AlignedFace", "VerificationResult", "FaceVerifier"]


class NoFaceError(ValueError):
    """The detector found no face in an image; the message names the image.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).
    """


@dataclass
class AlignedFace:
    """One detected and aligned face.

    Attributes
    ----------
    name : str
        The image's name (a path, or the name given).
    face : numpy.ndarray, (112, 112, 3) uint8
        The aligned face.
    box : tuple of int
        ``(x, y, w, h)`` of the detected face.
    eyes : numpy.ndarray, (2, 2)
        Eye centres used for the alignment (image coordinates).
    how : str
        ``'eyes'`` (eye cascade) or ``'box'`` (eyes guessed from the box).
    matrix : numpy.ndarray, (2, 3)
        The similarity transform from image to aligned coordinates.
    """
    name: str
    face: np.ndarray
    box: tuple
    eyes: np.ndarray
    how: str
    matrix: np.ndarray = None


@dataclass
class VerificationResult:
    """Outcome of :meth:`FaceVerifier.verify`.

    Attributes
    ----------
    distance : float
        Squared L2 distance of the two normalised embeddings, in [0, 4].
    cosine : float
        Cosine similarity, ``1 - distance / 2``.
    threshold : float
    same : bool
        ``distance < threshold``.
    faces : tuple of AlignedFace
    """
    distance: float
    cosine: float
    threshold: float
    same: bool
    faces: tuple = field(default_factory=tuple)

    def __str__(self):
        verdict = "same person" if self.same else "different people"
        return (f"{verdict}: distance {self.distance:.3f} "
                f"{'<' if self.same else '>='} threshold {self.threshold:.3f} "
                f"(cosine {self.cosine:.3f})")


class FaceVerifier:
    """Face verification on ordinary photos: detect, align, embed, compare.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).

    Detection uses OpenCV's Haar cascades (:class:`fr_lib.data.tools.FaceEyeDetector`:
    the largest frontal face and its two eyes; if the eyes are not found they
    are placed where they usually are in the face box). The eye centres are
    mapped onto the ArcFace template's eyes by a similarity transform
    (:func:`fr_lib.data.align_face`), the aligned face is embedded, and two
    faces are "the same person" when the squared L2 distance of their
    normalised embeddings is below ``threshold`` -- the rule and the scale of
    :mod:`fr_lib.metrics.verification`, so a threshold chosen there applies.

    Parameters
    ----------
    embedder : MXNetEmbedder or OnnxEmbedder
        Or any callable mapping (N, 112, 112, 3) uint8 faces to normalised
        embeddings.
    threshold : float, default 1.4
        Squared L2 distance in [0, 4]. 1.4 (cosine 0.3) is in the range that
        ArcFace-trained models reach on LFW; use the value that
        :func:`fr_lib.metrics.verification_accuracy` picks for your model.
    detector : callable or None
        ``detector(rgb) -> (box or None, eyes (2, 2) or None)``; defaults to
        :class:`fr_lib.data.tools.FaceEyeDetector`.
    """

    def __init__(self, embedder, threshold=1.4, detector=None):
        if not 0 <= threshold <= 4:
            raise ValueError(f"threshold is a squared L2 distance in [0, 4], "
                             f"got {threshold}")
        self.embedder, self.threshold = embedder, float(threshold)
        if detector is None:
            from ..data.tools import FaceEyeDetector
            detector = FaceEyeDetector()
        self.detector = detector

    @staticmethod
    def _read(image, name):
        if isinstance(image, (str, os.PathLike)):
            name = name or os.fspath(image)
            try:
                with open(image, "rb") as f:
                    img = decode_image(f.read())
            except OSError as err:
                raise FileNotFoundError(f"cannot read image {name}: "
                                        f"{err.strerror or err}") from err
            if img is None:
                raise ValueError(f"{name} is not a decodable image")
        else:
            img = image.asnumpy() if isinstance(image, mx.nd.NDArray) else image
            img = np.asarray(img)
            name = name or "image"
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name}: expected an RGB image (H, W, 3), got "
                             f"shape {img.shape}")
        if img.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 pixels, got {img.dtype}")
        return np.ascontiguousarray(img), name

    def align(self, image, name=None):
        """Detect the largest face of an image and align it.

        Parameters
        ----------
        image : str or numpy.ndarray
            A path, or an (H, W, 3) uint8 RGB array (grey (H, W) is expanded).
        name : str or None
            Used in messages; defaults to the path or ``'image'``.

        Returns
        -------
        AlignedFace

        Raises
        ------
        NoFaceError
            When no face is found; the message names the image.
        """
        from ..data.tools import eyes_from_box
        img, name = self._read(image, name)
        box, eyes = self.detector(img)
        if box is None:
            raise NoFaceError(f"no face found in {name} ({img.shape[1]}x"
                              f"{img.shape[0]} pixels); the Haar detector needs "
                              "a frontal face of at least ~40 pixels")
        how = "eyes"
        if eyes is None:
            eyes, how = eyes_from_box(box), "box"
        face, matrix = align_face(img, eyes, size=112)
        return AlignedFace(name, face, tuple(int(v) for v in box),
                           np.asarray(eyes, np.float64), how, matrix)

    def embed(self, image, name=None):
        """Aligned face and its normalised embedding ``(D,)``."""
        aligned = self.align(image, name)
        return aligned, np.asarray(self.embedder(aligned.face[None]))[0]

    def compare(self, emb1, emb2):
        """:class:`VerificationResult` of two normalised embeddings."""
        e1 = l2_normalize(np.asarray(emb1, np.float64).reshape(-1))
        e2 = l2_normalize(np.asarray(emb2, np.float64).reshape(-1))
        cosine = float(np.clip(np.dot(e1, e2), -1.0, 1.0))
        distance = 2.0 - 2.0 * cosine
        return VerificationResult(distance, cosine, self.threshold,
                                  distance < self.threshold)

    def verify(self, image1, image2, names=(None, None)):
        """Are the faces of two images the same person?

        Parameters
        ----------
        image1, image2 : str or numpy.ndarray
            Paths or (H, W, 3) uint8 RGB arrays.
        names : tuple of str or None
            Names for messages and the result.

        Returns
        -------
        VerificationResult
        """
        a1, e1 = self.embed(image1, names[0] or ("image 1" if not isinstance(
            image1, (str, os.PathLike)) else None))
        a2, e2 = self.embed(image2, names[1] or ("image 2" if not isinstance(
            image2, (str, os.PathLike)) else None))
        result = self.compare(e1, e2)
        result.faces = (a1, a2)
        return result

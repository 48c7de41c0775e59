"""Face and eye detection (OpenCV Haar cascades), landmarks files and alignment to the 112×112 template."""
import os

import numpy as np

from ...utils.fileio import atomic_write_bytes
from ..transforms import decode_image


# -- detection and landmarks -----------------------------------------------------

def read_landmarks(path):
    """Read ``path x1 y1 ... x5 y5`` lines (or ``path x1 y1 x2 y2`` for the two
    eye centres); ``#`` starts a comment. Returns ``{path: (K, 2) array}``."""
    out = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) not in (5, 11):
                raise ValueError(f"{path}: line {lineno} has {len(fields)} fields; "
                                 "expected 'image x1 y1 ... x5 y5' (11) or "
                                 "'image xl yl xr yr' (5)")
            try:
                pts = np.array([float(v) for v in fields[1:]]).reshape(-1, 2)
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: coordinates must be "
                                 f"numbers, got {' '.join(fields[1:])!r}") from None
            key = os.path.normpath(fields[0])
            if key in out:
                raise ValueError(f"{path}: line {lineno}: {fields[0]} appears twice")
            out[key] = pts
    return out


def eyes_from_box(box):
    """Eye centres guessed from a Haar frontal-face box ``(x, y, w, h)``.

    Book: introduced in ``chapter_data/bin-pairs`` (`.bin` 验证对).

    In boxes of ``haarcascade_frontalface_default`` the eyes sit at roughly
    27 % and 73 % of the width and 37 % of the height (as on scikit-image's
    astronaut, whose eyes the eye cascade finds at 26 %/75 % and 36 %). A
    fallback only, used when the eye cascade finds no pair: expect a few
    pixels of error and no in-plane rotation.
    """
    x, y, w, h = (float(v) for v in box)
    return np.array([[x + 0.27 * w, y + 0.37 * h], [x + 0.73 * w, y + 0.37 * h]])


class FaceEyeDetector:
    """The largest frontal face and its two eyes, with OpenCV's Haar cascades.

    Book: introduced in ``chapter_data/bin-pairs`` (`.bin` 验证对).

    Eyes are searched in the upper 60 % of the face box; of the candidates
    the largest one left of the box centre and the largest one right of it
    are kept (left/right in the image), so a nostril or brow rarely wins.
    """

    def __init__(self, scale_factor=1.1, min_neighbors=5, min_face=40):
        import cv2
        root = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(
            os.path.join(root, "haarcascade_frontalface_default.xml"))
        self.eye = cv2.CascadeClassifier(os.path.join(root, "haarcascade_eye.xml"))
        if self.face.empty() or self.eye.empty():  # pragma: no cover
            raise RuntimeError(f"cannot load the Haar cascades from {root}")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_face = min_face

    def __call__(self, image):
        """``(face_box or None, eye_centres (2, 2) or None)`` of an RGB image."""
        import cv2
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        faces = self.face.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face))
        if len(faces) == 0:
            return None, None
        x, y, w, h = max((tuple(int(v) for v in f) for f in faces),
                         key=lambda b: b[2] * b[3])
        roi = gray[y:y + int(0.6 * h), x:x + w]
        eyes = self.eye.detectMultiScale(roi, self.scale_factor, self.min_neighbors,
                                         minSize=(max(5, w // 10),) * 2)
        left = right = None
        for ex, ey, ew, eh in (tuple(int(v) for v in e) for e in eyes):
            centre = np.array([x + ex + ew / 2.0, y + ey + eh / 2.0])
            if centre[0] < x + w / 2.0:
                if left is None or ew * eh > left[1]:
                    left = (centre, ew * eh)
            elif right is None or ew * eh > right[1]:
                right = (centre, ew * eh)
        if left is None or right is None:
            return (x, y, w, h), None
        return (x, y, w, h), np.stack([left[0], right[0]])


_DETECTOR = {}


def align_image(task):
    """Worker: detect (or take the given landmarks), align and write one image.

    ``task`` is ``(src, dst, landmarks, size, require_eyes, quality)``;
    ``landmarks`` is None (detect with :class:`FaceEyeDetector`) or a (5, 2) /
    (2, 2) array. Returns ``(src, how, message)`` with ``how`` one of
    ``'landmarks'``, ``'eyes'``, ``'box'`` (eyes guessed from the face box),
    ``'no face'``, ``'no eyes'`` (with ``require_eyes``) or ``'unreadable'``;
    nothing is written for the last three.
    """
    from ..align import align_face
    import cv2
    src, dst, landmarks, size, require_eyes, quality = task
    try:
        with open(src, "rb") as f:
            img = decode_image(f.read())
    except OSError as err:
        return src, "unreadable", str(err.strerror or err)
    if img is None:
        return src, "unreadable", "not a decodable image"
    img = np.ascontiguousarray(img)
    if landmarks is not None:
        points, how = np.asarray(landmarks, np.float64), "landmarks"
    else:
        if "det" not in _DETECTOR:
            _DETECTOR["det"] = FaceEyeDetector()
        box, eyes = _DETECTOR["det"](img)
        if box is None:
            return src, "no face", "no face found"
        if eyes is None:
            if require_eyes:
                return src, "no eyes", f"face at {box}, but no pair of eyes"
            points, how = eyes_from_box(box), "box"
        else:
            points, how = eyes, "eyes"
    aligned, _ = align_face(img, points, size=size)
    ext = os.path.splitext(dst)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") \
        else []
    ok, buf = cv2.imencode(ext, aligned[:, :, ::-1], params)
    if not ok:  # pragma: no cover
        return src, "unreadable", f"cannot encode {dst}"
    atomic_write_bytes(dst, buf.tobytes())
    return src, how, ""

"""One synthetic identity and its images: :class:`SyntheticFaces` draws them
with OpenCV from seeded parameters (see :mod:`fr_lib.data.synthetic`)."""
import math

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - opencv-python is a dependency
    cv2 = None

__all__ = ["SyntheticFaces"]

SIZE = 112
_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates in 1/16 pixel
_ONE = 1 << _SHIFT
_HAIR_STYLES = ("short", "long", "buzz", "fringe", "curly")

# Skin tones from light to dark (RGB); an identity interpolates between two.
_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 128],
                  [198, 134, 90], [160, 102, 64], [110, 70, 45]], np.float64)
_HAIR = np.array([[30, 25, 22], [70, 45, 30], [120, 80, 45], [190, 150, 90],
                  [160, 70, 35], [150, 150, 150], [235, 225, 200]], np.float64)
_IRIS = np.array([[70, 45, 25], [110, 75, 40], [60, 110, 160], [80, 130, 80],
                  [110, 110, 120]], np.float64)


def _p(x, y):
    return int(round(x * _ONE)), int(round(y * _ONE))


def _poly(points):
    return [np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)]


def _col(c):
    return tuple(int(round(min(255.0, max(0.0, v)))) for v in c)


def _palette(table, t):
    """Colour at position t in [0, 1] along a palette."""
    x = min(max(t, 0.0), 1.0) * (len(table) - 1)
    i = min(int(x), len(table) - 2)
    return table[i] * (1 - (x - i)) + table[i + 1] * (x - i)


def _rng(*key):
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


class SyntheticFaces:
    """A seeded population of synthetic identities.

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

    Parameters
    ----------
    num_identities : int
        Identities ``0 .. num_identities-1`` (``identity(i)`` also works
        beyond that: held-out identities are simply larger indices).
    seed : int
        Seed of everything; the same seed gives byte-identical images.
    difficulty : float in [0, 1]
        0: clean images of well separated identities; 1: strong nuisances and
        identities close to the average face.

    Examples
    --------
    >>> faces = SyntheticFaces(100, seed=0, difficulty=0.3)
    >>> img = faces.render(7, 0)      # (112, 112, 3) uint8 RGB
    >>> faces.identity(7)["hair_style"]
    'fringe'
    """

    def __init__(self, num_identities, seed=0, difficulty=0.5):
        if cv2 is None:  # pragma: no cover
            raise ImportError("synthetic faces are drawn with OpenCV: pip install "
                              "\"opencv-python<5\"")
        if int(num_identities) < 1:
            raise ValueError(f"num_identities must be >= 1, got {num_identities}")
        if not 0.0 <= float(difficulty) <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        self.num_identities = int(num_identities)
        self.seed = int(seed)
        self.difficulty = float(difficulty)
        self.image_size = (SIZE, SIZE)
        self._cache = {}

    def __len__(self):
        return self.num_identities

    def __repr__(self):
        return (f"SyntheticFaces(num_identities={self.num_identities}, "
                f"seed={self.seed}, difficulty={self.difficulty})")

    # identities -------------------------------------------------------------
    def identity(self, i):
        """The fixed parameters of identity ``i`` (a dict of numbers/strings).

        Continuous parameters are ``mean + spread * u * half_range`` with ``u``
        uniform in [-1, 1] and ``spread = 1 - 0.6 * difficulty``.
        """
        i = int(i)
        if i < 0:
            raise ValueError(f"identity index must be >= 0, got {i}")
        if i in self._cache:
            return dict(self._cache[i])
        r = _rng(self.seed, 1, i)
        spread = 1.0 - 0.6 * self.difficulty

        def u(mean, half):
            return float(mean + spread * half * r.uniform(-1.0, 1.0))

        skin = _palette(_SKIN, u(0.5, 0.5))
        hair = _palette(_HAIR, u(0.5, 0.5))
        p = {
            "face_ax": u(33.0, 5.0), "face_ay": u(45.0, 5.0),
            "face_cy": u(66.0, 3.0),
            "skin": _col(skin), "hair": _col(hair),
            "hair_style": _HAIR_STYLES[int(r.integers(len(_HAIR_STYLES)))],
            "hairline": u(30.0, 6.0), "hairline_tilt": u(0.0, 6.0),
            "eye_dx": u(17.6, 3.5), "eye_y": u(51.6, 3.0),
            "eye_w": u(6.5, 1.8), "eye_h": u(3.2, 1.0), "eye_tilt": u(0.0, 8.0),
            "iris": _col(_palette(_IRIS, u(0.5, 0.5))),
            "brow_dy": u(9.0, 2.5), "brow_th": int(round(u(2.5, 1.0))),
            "brow_arch": u(2.0, 2.0), "brow_len": u(12.0, 3.0),
            "nose_y": u(72.0, 3.0), "nose_w": u(6.0, 2.0), "nose_len": u(14.0, 4.0),
            "mouth_y": u(92.0, 3.0), "mouth_w": u(14.5, 3.5),
            "lip_th": u(3.0, 1.2),
            "lip": _col(_palette(np.array([[200, 110, 110], [170, 80, 90],
                                           [140, 70, 60]]), u(0.5, 0.5))
                        * 0.5 + skin * 0.5 * np.array([1.0, 0.8, 0.8])),
            "ear": u(7.0, 2.0),
            "glasses": bool(r.uniform() < 0.25),
            "glasses_round": bool(r.uniform() < 0.5),
            "glasses_col": _col(r.uniform(0, 200, 3)),
            "beard": bool(r.uniform() < 0.2),
            "moles": [(u(56.0, 24.0), u(78.0, 14.0)) for _ in
                      range(int(r.integers(0, 3)))],
        }
        self._cache[i] = p
        return dict(p)

    # images -----------------------------------------------------------------
    def render(self, i, j):
        """Image ``j`` of identity ``i``: (112, 112, 3) uint8 RGB."""
        p = self.identity(i)
        r = _rng(self.seed, 2, int(i), int(j))
        t = 0.15 + 0.85 * self.difficulty  # nuisance strength

        bg = r.uniform(30, 225, 3)
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = _col(bg)
        aa = 16  # cv2.LINE_AA
        skin = np.asarray(p["skin"], np.float64)
        hair = np.asarray(p["hair"], np.float64)
        cx, cy, ax, ay = 56.0, p["face_cy"], p["face_ax"], p["face_ay"]
        # Sideways shift of the inner features: a cheap stand-in for yaw.
        yaw = float(r.normal(0, 2.0 * t))
        fx = cx + yaw

        # shoulders and neck
        cv2.ellipse(img, _p(56, 128), _p(58, 26), 0, 0, 360,
                    _col(r.uniform(20, 235, 3)), -1, aa, _SHIFT)
        cv2.rectangle(img, (int(cx - 12), int(cy + ay - 10)), (int(cx + 12), 112),
                      _col(skin * 0.85), -1)
        style = p["hair_style"]
        if style in ("long", "curly"):
            if style == "long":
                cv2.ellipse(img, _p(cx, cy + 6), _p(ax + 6, ay + 6), 0, 0, 360,
                            _col(hair), -1, aa, _SHIFT)
            else:
                cv2.circle(img, _p(cx, cy - 12), int((ax + 14) * _ONE),
                           _col(hair), -1, aa, _SHIFT)
        # ears and face
        for s in (-1, 1):
            cv2.ellipse(img, _p(cx + s * (ax - 1), p["eye_y"] + 10),
                        _p(p["ear"] * 0.6, p["ear"]), 0, 0, 360,
                        _col(skin * 0.9), -1, aa, _SHIFT)
        cv2.ellipse(img, _p(cx, cy), _p(ax, ay), 0, 0, 360, _col(skin), -1,
                    aa, _SHIFT)
        if p["beard"]:
            angles = np.linspace(0.15, math.pi - 0.15, 16)
            jaw = np.stack([cx + ax * np.cos(angles), cy + ay * np.sin(angles)], 1)
            top = [[fx + 0.7 * ax, p["mouth_y"] - 8], [fx, p["mouth_y"] - 5],
                   [fx - 0.7 * ax, p["mouth_y"] - 8]]
            cv2.fillPoly(img, _poly(np.concatenate([jaw, top])),
                         _col(hair * 0.8 + skin * 0.2), aa, _SHIFT)
        # hair on top: the upper outline of a slightly larger ellipse down to
        # the temples, closed by the hairline
        if style != "buzz":
            hl, tilt = p["hairline"], p["hairline_tilt"]
            if style == "fringe":
                tilt += 8.0
                hl += 6.0
            side = p["eye_y"] - 6.0  # the temples
            phi = math.asin(min(1.0, max(0.0, (cy - side) / (ay + 3.5))))
            ang = np.linspace(math.pi + phi, 2 * math.pi - phi, 24)
            top = np.stack([cx + (ax + 2.5) * np.cos(ang),
                            cy + (ay + 3.5) * np.sin(ang)], 1)
            xs = np.linspace(top[-1, 0], top[0, 0], 11)
            rel = (xs - cx) / (top[-1, 0] - cx)
            ys = hl + (side - hl) * rel ** 4 + tilt * rel * (1 - rel ** 2)
            cv2.fillPoly(img, _poly(np.concatenate([top, np.stack([xs, ys], 1)])),
                         _col(hair), aa, _SHIFT)
            if style == "long":
                for s in (-1, 1):
                    cv2.ellipse(img, _p(cx + s * (ax - 1), cy + 4),
                                _p(4.5, ay * 0.75), 0, 0, 360, _col(hair), -1,
                                aa, _SHIFT)
        else:  # buzz cut: a thin shade over the skull
            ang = np.linspace(math.pi, 2 * math.pi, 24)
            top = np.stack([cx + (ax + 0.5) * np.cos(ang),
                            cy + (ay + 1.0) * np.sin(ang)], 1)
            xs = np.linspace(cx + ax, cx - ax, 9)
            ys = p["hairline"] + 4.0 * ((xs - cx) / ax) ** 2
            cv2.fillPoly(img, _poly(np.concatenate([top, np.stack([xs, ys], 1)])),
                         _col(hair * 0.5 + skin * 0.5), aa, _SHIFT)

        # expression
        smile = float(r.normal(0, 1.8 * t))
        mouth_open = max(0.0, float(r.normal(0, 1.6 * t)))
        brow_raise = float(r.normal(0, 1.2 * t))
        blink = min(1.0, max(0.15, 1.0 - abs(float(r.normal(0, 0.3 * t)))))
        gaze = r.normal(0, 0.8 * t, 2)

        # eyes and brows
        ey, ew, eh = p["eye_y"], p["eye_w"], p["eye_h"]
        for s in (-1, 1):
            ex = fx + s * p["eye_dx"]
            ang = s * p["eye_tilt"]
            cv2.ellipse(img, _p(ex, ey), _p(ew, eh * blink), ang, 0, 360,
                        (238, 238, 232), -1, aa, _SHIFT)
            if blink > 0.35:
                cv2.circle(img, _p(ex + gaze[0], ey + gaze[1] * 0.5),
                           int(min(eh, ew) * 0.95 * _ONE), p["iris"], -1, aa,
                           _SHIFT)
                cv2.circle(img, _p(ex + gaze[0], ey + gaze[1] * 0.5),
                           int(min(eh, ew) * 0.45 * _ONE), (15, 15, 15), -1, aa,
                           _SHIFT)
            cv2.ellipse(img, _p(ex, ey), _p(ew, eh * blink), ang, 180, 360,
                        _col(skin * 0.35), 1, aa, _SHIFT)
            by = ey - p["brow_dy"] - brow_raise
            half = p["brow_len"] / 2
            brow = [[ex - s * half, by + 1.0], [ex, by - p["brow_arch"]],
                    [ex + s * half, by + 0.5 + s * 0.0]]
            cv2.polylines(img, _poly(brow), False, _col(hair * 0.7),
                          max(1, p["brow_th"]), aa, _SHIFT)
        # nose
        ny, nw = p["nose_y"], p["nose_w"]
        shade = _col(skin * 0.72)
        cv2.polylines(img, _poly([[fx - 2, ny - p["nose_len"]], [fx - 2.5, ny - 3],
                                  [fx - nw, ny + 1]]), False, shade, 1, aa, _SHIFT)
        cv2.polylines(img, _poly([[fx - nw, ny + 1], [fx - nw * 0.4, ny + 3],
                                  [fx, ny + 2], [fx + nw * 0.4, ny + 3],
                                  [fx + nw, ny + 1]]), False, shade, 1, aa, _SHIFT)
        # mouth: upper and lower lip curves between the corners
        my, mw, lt = p["mouth_y"], p["mouth_w"], p["lip_th"]
        xs = np.linspace(-1.0, 1.0, 11)
        corner = -smile * xs ** 2
        upper = np.stack([fx + mw * xs, my + corner - lt * (1 - xs ** 2) * 0.8
                          - mouth_open * 0.5 * (1 - xs ** 2)], 1)
        lower = np.stack([fx + mw * xs, my + corner + lt * (1 - xs ** 2)
                          + mouth_open * (1 - xs ** 2)], 1)
        cv2.fillPoly(img, _poly(np.concatenate([upper, lower[::-1]])), p["lip"],
                     aa, _SHIFT)
        if mouth_open > 0.8:
            inner = np.stack([fx + 0.8 * mw * xs, my + corner * 0.8
                              + mouth_open * 0.6 * (1 - xs ** 2)], 1)
            inner_top = np.stack([fx + 0.8 * mw * xs, my + corner * 0.8
                                  - mouth_open * 0.3 * (1 - xs ** 2)], 1)
            cv2.fillPoly(img, _poly(np.concatenate([inner_top, inner[::-1]])),
                         (60, 20, 25), aa, _SHIFT)
        else:
            cv2.polylines(img, _poly(np.stack([fx + mw * xs, my + corner], 1)),
                          False, _col(np.asarray(p["lip"]) * 0.6), 1, aa, _SHIFT)
        for mx_, my_ in p["moles"]:
            cv2.circle(img, _p(mx_ + yaw * 0.5, my_), int(1.2 * _ONE),
                       _col(skin * 0.45), -1, aa, _SHIFT)
        if p["glasses"]:
            col = p["glasses_col"]
            for s in (-1, 1):
                ex = fx + s * p["eye_dx"]
                if p["glasses_round"]:
                    cv2.circle(img, _p(ex, ey), int((ew + 3) * _ONE), col, 1, aa,
                               _SHIFT)
                else:
                    cv2.rectangle(img, _p(ex - ew - 3, ey - eh - 3),
                                  _p(ex + ew + 3, ey + eh + 3), col, 1, aa, _SHIFT)
                cv2.line(img, _p(ex + s * (ew + 3), ey), _p(cx + s * ax, ey - 1),
                         col, 1, aa, _SHIFT)
            cv2.line(img, _p(fx - p["eye_dx"] + ew + 3, ey),
                     _p(fx + p["eye_dx"] - ew - 3, ey), col, 1, aa, _SHIFT)

        # pose: a small similarity warp with shear, around the face centre
        angle = float(r.normal(0, 2.0 + 6.0 * t))
        scale = float(1.0 + r.normal(0, 0.015 + 0.05 * t))
        m = cv2.getRotationMatrix2D((56.0, 62.0), angle, scale)
        m[0, 1] += float(r.normal(0, 0.04 * t))
        m[:, 2] += r.normal(0, 0.8 + 3.0 * t, 2)
        img = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)

        # occlusion (a hand, a scarf, a sticker ...)
        if r.uniform() < 0.45 * t:
            w, h = r.uniform(14, 14 + 30 * t, 2)
            x0, y0 = r.uniform(10, 102 - w), r.uniform(30, 108 - h)
            cv2.rectangle(img, _p(x0, y0), _p(x0 + w, y0 + h),
                          _col(r.uniform(0, 255, 3)), -1, aa, _SHIFT)

        # lighting: gain, directional gradient, colour cast; then blur, noise
        theta = float(r.uniform(0, 2 * math.pi))
        amp = float(r.uniform(0, 0.12 + 0.45 * t))
        g = np.linspace(-1.0, 1.0, SIZE, dtype=np.float32)
        light = (1.0 + float(r.normal(0, 0.04 + 0.12 * t))
                 + amp * (math.cos(theta) * g[None, :] + math.sin(theta) * g[:, None]))
        cast = (1.0 + r.normal(0, 0.02 + 0.06 * t, 3)).astype(np.float32)
        out = img.astype(np.float32) * light[:, :, None] * cast
        sigma = float(r.uniform(0, 0.3 + 1.3 * t))
        if sigma > 0.35:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        # Uniform noise with the standard deviation ``noise`` (random bytes are
        # ~5x cheaper to draw than normal deviates, and look the same here).
        noise = float(r.uniform(0, 2.0 + 8.0 * t))
        grain = np.frombuffer(r.bytes(SIZE * SIZE * 3), np.uint8)
        out += (grain.reshape(SIZE, SIZE, 3).astype(np.float32) - 127.5) * \
            np.float32(noise * math.sqrt(12.0) / 256.0)
        np.clip(out, 0, 255, out=out)
        return (out + 0.5).astype(np.uint8)

"""The one pixel convention of fr_lib, and the few transforms face training needs.

Every backbone in :mod:`fr_lib.model_zoo` takes images in InsightFace's convention:

- colour order **RGB** (OpenCV decodes BGR; the readers here swap it);
- **float32**, ``x = (pixel - 127.5) / 128``, so values lie in [-0.996, 0.996];
- layout **CHW** for one image, **NCHW** for a batch.

Before normalisation images are **uint8 HWC** (one image) or **NHWC** (a batch),
which is what the readers (:class:`~fr_lib.data.FaceRecordDataset`,
:func:`~fr_lib.data.read_bin`) decode to. The functions below accept both an
``mxnet.nd.NDArray`` and a ``numpy.ndarray`` and return the same kind; they tell
the two layouts apart by dtype: **uint8 means (N)HWC, anything else means
(N)CHW**, unless ``layout`` says otherwise.

``127.5`` and ``1/128 = 0.0078125`` are exact in float32, so the normalised
values are exact as well, whichever library computes them.
"""
import numpy as np
import mxnet as mx

__all__ = ["PIXEL_MEAN", "PIXEL_SCALE", "normalize", "normalize_batch",
           "denormalize", "flip_batch", "random_flip", "adjust_color",
           "color_jitter", "decode_image", "encode_jpeg"]

PIXEL_MEAN = 127.5
"""Subtracted from every uint8 pixel value (all three channels)."""
PIXEL_SCALE = 1.0 / 128
"""Multiplies the centred value: ``(x - 127.5) / 128``."""

# ITU-R BT.601 luma weights, for contrast and saturation (RGB order).
_GRAY = (0.299, 0.587, 0.114)


def _is_nd(x):
    return isinstance(x, mx.nd.NDArray)


def _layout(x, layout):
    """'HWC', 'NHWC', 'CHW' or 'NCHW' for ``x``."""
    if layout is not None:
        layout = layout.upper()
        if layout not in ("HWC", "NHWC", "CHW", "NCHW"):
            raise ValueError(f"layout must be HWC, NHWC, CHW or NCHW, got {layout!r}")
        if len(layout) != x.ndim:
            raise ValueError(f"layout {layout} needs a {len(layout)}-d array, "
                             f"got shape {tuple(x.shape)}")
        return layout
    if x.ndim not in (3, 4):
        raise ValueError("expected one image (3-d) or a batch (4-d), got shape "
                         f"{tuple(x.shape)}")
    channels_last = np.dtype(x.dtype) == np.uint8
    if channels_last:
        return "HWC" if x.ndim == 3 else "NHWC"
    return "CHW" if x.ndim == 3 else "NCHW"


def normalize_batch(x, dtype="float32"):
    """uint8 (N)HWC RGB → float32 (N)CHW with ``(x - 127.5) / 128``.

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    Parameters
    ----------
    x : NDArray or numpy.ndarray
        One image ``(H, W, C)`` or a batch ``(N, H, W, C)``, uint8 RGB.
    dtype : str
        Output type (float32 for training; float16 is allowed for inference).

    Returns
    -------
    NDArray or numpy.ndarray
        Same kind as ``x``: ``(C, H, W)`` or ``(N, C, H, W)``.
    """
    if x.ndim not in (3, 4):
        raise ValueError("normalize_batch expects (H, W, C) or (N, H, W, C), got "
                         f"shape {tuple(x.shape)}")
    axes = (2, 0, 1) if x.ndim == 3 else (0, 3, 1, 2)
    if _is_nd(x):
        # cast first: MXNet's transpose of uint8 is ~10x slower than of float32
        y = mx.nd.transpose(x.astype(dtype), axes=axes)
    else:
        y = np.asarray(x).transpose(axes).astype(dtype)
    y = y - PIXEL_MEAN
    y = y * PIXEL_SCALE
    return y


normalize = normalize_batch


def denormalize(x):
    """Inverse of :func:`normalize_batch`: float (N)CHW → uint8 (N)HWC, for plots.

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).
    """
    if x.ndim not in (3, 4):
        raise ValueError("denormalize expects (C, H, W) or (N, C, H, W), got "
                         f"shape {tuple(x.shape)}")
    axes = (1, 2, 0) if x.ndim == 3 else (0, 2, 3, 1)
    if _is_nd(x):
        y = mx.nd.transpose(x, axes=axes) * 128 + PIXEL_MEAN
        return mx.nd.clip(mx.nd.round(y), 0, 255).astype("uint8")
    y = np.asarray(x).transpose(axes) * 128 + PIXEL_MEAN
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def _width_axis(layout):
    return layout.index("W")


def flip_batch(x, layout=None):
    """Mirror every image left-right (test-time flip of the verification protocol).

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    Parameters
    ----------
    x : NDArray or numpy.ndarray
        uint8 (N)HWC or float (N)CHW (see the module docstring for ``layout``).
    layout : str or None
        Force 'HWC', 'NHWC', 'CHW' or 'NCHW'.
    """
    axis = _width_axis(_layout(x, layout))
    if _is_nd(x):
        return mx.nd.flip(x, axis=axis)
    return np.flip(x, axis=axis).copy()


def random_flip(x, p=0.5, rng=None, layout=None):
    """Mirror each image left-right with probability ``p`` (independently per image).

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    Parameters
    ----------
    x : NDArray or numpy.ndarray
        One image or a batch; uint8 (N)HWC or float (N)CHW.
    p : float
        Probability of flipping.
    rng : numpy.random.RandomState, int or None
        Source of the coin flips (an int seeds a new one).
    layout : str or None
        Force the layout instead of inferring it from the dtype.

    Returns
    -------
    NDArray or numpy.ndarray
        A new array of the same kind and shape.
    """
    layout = _layout(x, layout)
    rng = _rng(rng)
    batch = layout.startswith("N")
    n = x.shape[0] if batch else 1
    coins = rng.uniform(size=n) < p
    flipped = flip_batch(x, layout)
    if not batch:
        return flipped if coins[0] else (x.copy())
    if _is_nd(x):
        cond = mx.nd.array(coins.astype(np.float32), ctx=x.context)
        return mx.nd.where(cond, flipped, x)
    return np.where(coins.reshape((n,) + (1,) * (x.ndim - 1)), flipped, x)


def _rng(rng):
    if rng is None:
        return np.random.RandomState()
    if isinstance(rng, (int, np.integer)):
        return np.random.RandomState(int(rng))
    return rng


def adjust_color(x, brightness=1.0, contrast=1.0, saturation=1.0):
    """Apply given brightness, contrast and saturation factors, in that order.

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    With the luma ``g = 0.299 R + 0.587 G + 0.114 B``:

    - brightness ``b``: ``x ← b·x``;
    - contrast ``c``: ``x ← c·x + (1 − c)·mean(g)`` (mean over the image);
    - saturation ``s``: ``x ← s·x + (1 − s)·g`` (per pixel).

    Factor 1 leaves the image unchanged. uint8 input is rounded and clipped
    back to [0, 255]; float input is clipped to [0, 255] (it is assumed to be in
    pixel units, i.e. before normalisation).

    Parameters
    ----------
    x : NDArray or numpy.ndarray
        (H, W, 3) or (N, H, W, 3) RGB, uint8 or float in [0, 255].
    brightness, contrast, saturation : float or array of shape (N,)
        The factors; arrays give one factor per image of a batch.
    """
    nd = _is_nd(x)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError("adjust_color expects RGB (H, W, 3) or (N, H, W, 3), got "
                         f"shape {tuple(x.shape)}")
    src_dtype = np.dtype(x.dtype)
    single = x.ndim == 3
    y = x.asnumpy() if nd else np.asarray(x)
    y = y.astype(np.float32)
    if single:
        y = y[None]
    n = y.shape[0]

    def per_image(f):
        f = np.asarray(f, dtype=np.float32).reshape(-1)
        if f.size not in (1, n):
            raise ValueError(f"got {f.size} factors for {n} images")
        return np.broadcast_to(f, (n,)).reshape(n, 1, 1, 1)

    gray_w = np.asarray(_GRAY, dtype=np.float32)
    y = y * per_image(brightness)
    c = per_image(contrast)
    mean = (y @ gray_w).mean(axis=(1, 2)).reshape(n, 1, 1, 1)
    y = y * c + (1 - c) * mean
    s = per_image(saturation)
    gray = (y @ gray_w)[..., None]
    y = y * s + (1 - s) * gray
    y = np.clip(y, 0, 255)
    if src_dtype == np.uint8:
        y = np.round(y).astype(np.uint8)
    else:
        y = y.astype(src_dtype)
    if single:
        y = y[0]
    return mx.nd.array(y, ctx=x.context, dtype=y.dtype) if nd else y


def color_jitter(x, brightness=0.125, contrast=0.125, saturation=0.125, rng=None):
    """Random brightness, contrast and saturation (small ranges, per image).

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    Each factor is drawn uniformly from ``[1 − r, 1 + r]`` for its range ``r``
    and applied by :func:`adjust_color` (uint8 (N)HWC RGB before normalisation).

    Parameters
    ----------
    x : NDArray or numpy.ndarray
        (H, W, 3) or (N, H, W, 3) RGB.
    brightness, contrast, saturation : float
        Ranges ``r`` in [0, 1); 0 switches that jitter off.
    rng : numpy.random.RandomState, int or None
        Source of the factors.
    """
    for name, r in (("brightness", brightness), ("contrast", contrast),
                    ("saturation", saturation)):
        if not 0 <= r < 1:
            raise ValueError(f"{name} range must be in [0, 1), got {r}")
    rng = _rng(rng)
    n = x.shape[0] if x.ndim == 4 else 1
    draw = [rng.uniform(1 - r, 1 + r, size=n) for r in
            (brightness, contrast, saturation)]
    return adjust_color(x, *draw)


# -- decoding and encoding (one decoder for every reader, so paths agree) -----

try:
    import cv2 as _cv2
except ImportError:  # opencv-python is optional; MXNet has its own OpenCV
    _cv2 = None


def decode_image(buf):
    """Decode an encoded image (JPEG, PNG, ...) to uint8 HWC RGB (numpy).

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

    Uses OpenCV's ``cv2.imdecode`` when ``opencv-python`` is installed (it
    releases the GIL, so decoding threads run in parallel), otherwise MXNet's
    built-in ``mx.image.imdecode``. Both decode 3 channels (grey images are
    expanded). Returns ``None`` when the bytes are not a decodable image;
    callers turn that into an error that names the record.

    Parameters
    ----------
    buf : bytes, bytearray, memoryview or 1-d uint8 numpy.ndarray
    """
    arr = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) \
        else buf.reshape(-1)
    if arr.size == 0:
        return None
    if _cv2 is not None:
        img = _cv2.imdecode(arr, _cv2.IMREAD_COLOR)
        if img is None:
            return None
        return img[:, :, ::-1]
    try:
        return mx.image.imdecode(arr.tobytes(), to_rgb=1).asnumpy()
    except mx.base.MXNetError:
        return None


def decode_image_bgr(buf):
    """Like :func:`decode_image`, but BGR (OpenCV's order, saves a copy)."""
    arr = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) \
        else buf.reshape(-1)
    if arr.size == 0:
        return None
    if _cv2 is not None:
        return _cv2.imdecode(arr, _cv2.IMREAD_COLOR)
    try:
        return mx.image.imdecode(arr.tobytes(), to_rgb=0).asnumpy()
    except mx.base.MXNetError:
        return None


def encode_jpeg(img, quality=95):
    """Encode a uint8 HWC RGB image as JPEG bytes (needs ``opencv-python``)."""
    if _cv2 is None:
        raise ImportError("encoding images needs OpenCV: pip install "
                          "\"opencv-python<5\"")
    if _is_nd(img):
        img = img.asnumpy()
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("encode_jpeg expects a uint8 (H, W, 3) RGB image, got "
                         f"{img.dtype} {img.shape}")
    ok, buf = _cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]),
                            [_cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return buf.tobytes()


def _normalize_bgr_into(out, bgr, flip=False):
    """Write one uint8 HWC BGR image into ``out`` (3, H, W) float32, RGB,
    normalised (and mirrored if ``flip``): the inner loop of the batch readers."""
    src = bgr[:, ::-1, ::-1] if flip else bgr[:, :, ::-1]
    np.subtract(src.transpose(2, 0, 1), np.float32(PIXEL_MEAN), out=out)
    out *= np.float32(PIXEL_SCALE)

"""Embed images with a network, and with the horizontal flip of the protocol.

:func:`embed` is the one place in fr_lib where a network is run over a set of
images for evaluation: :class:`~fr_lib.metrics.VerificationEvaluator` and the
deployment embedders (:mod:`fr_lib.deploy.embedders`) call it. It returns the
embeddings of the images and of their mirror images separately, which is what
:func:`~fr_lib.metrics.verification.pair_distances` takes; the protocol's
embedding of an image is ``l2_normalize(emb + flipped)``.

:func:`l2_normalize` is the one row normaliser of fr_lib for arrays (NumPy
or NDArray): the metrics, the deployment embedders (re-exported as
``fr_lib.deploy.l2_normalize``) and the identification metric use it. Inside a
``hybrid_forward`` (``F`` = ``mx.nd`` or ``mx.sym``) use
:func:`fr_lib.model_zoo.layers.l2_normalize_rows`, which computes the same
``x / sqrt(sum(x**2) + eps)``.
"""
import mxnet as mx
import numpy as np
from mxnet import autograd

__all__ = ["embed", "l2_normalize"]


def l2_normalize(x, eps=1e-12, axis=-1):
    """``x`` divided by its L2 norm along ``axis``: ``x / sqrt(sum(x**2) + eps)``.

    Book: introduced in ``chapter_introduction/first-look`` (动手：检测、对齐与比较).

    Parameters
    ----------
    x : numpy.ndarray or NDArray or array_like
        Vectors along ``axis``, e.g. ``(N, D)`` embeddings or one ``(D,)``.
    eps : float, default 1e-12
        Added under the square root: a zero vector stays zero (not NaN);
        a vector of length ``r`` comes out ``eps / (2 r**2)`` short of unit
        length, below float32 rounding for ``r`` above about 0.003. The same formula as
        :class:`~fr_lib.model_zoo.NormDense` (MXNet's ``L2Normalization``).
    axis : int, default -1
        The axis that is normalised (the last: each row of a matrix).

    Returns
    -------
    numpy.ndarray or NDArray
        An NDArray for an NDArray input (on its context, same dtype);
        otherwise a NumPy array: float32 and float64 inputs keep their
        dtype, anything else (integers, float16, lists) becomes float32.
    """
    if isinstance(x, mx.nd.NDArray):
        norm = mx.nd.sqrt(mx.nd.sum(mx.nd.square(x), axis=axis, keepdims=True) + eps)
        return mx.nd.broadcast_div(x, norm)
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    if x.ndim == 0:
        raise ValueError("l2_normalize needs vectors, got a scalar")
    return x / np.sqrt(np.sum(x * x, axis=axis, keepdims=True) + x.dtype.type(eps))


def _net_context(net):
    """The context of the network's first parameter (CPU when it has none yet)."""
    params = getattr(net, "collect_params", None)
    for param in (params().values() if params else ()):
        try:
            return param.list_ctx()[0]
        except RuntimeError:  # parameter not initialised
            break
    return mx.cpu()


def _as_batch(batch, ctx):
    """An NDArray on ``ctx``: float16/float32 kept, anything else as float32."""
    if isinstance(batch, mx.nd.NDArray):
        return batch.as_in_context(ctx)
    batch = np.asarray(batch)
    dtype = batch.dtype if batch.dtype in (np.float16, np.float32) else np.float32
    return mx.nd.array(batch, ctx=ctx, dtype=dtype)


def _forward(net, x):
    """``net(x)`` as a (B, D) NumPy array; of a tuple output, its first item."""
    out = net(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    out = out.asnumpy() if isinstance(out, mx.nd.NDArray) else np.asarray(out)
    return out.reshape(x.shape[0], -1)


def embed(net, images, flip=True, batch_size=64, ctx=None, progress=False, desc=None):
    """Embeddings of ``images`` and of their horizontal flips by ``net``.

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    The images are fed in order, ``batch_size`` at a time, as NDArrays on
    ``ctx``; the flipped batch is the same batch mirrored along the width
    axis (axis 3 of NCHW). The network runs with autograd paused and in
    inference mode (BatchNorm uses its running statistics, Dropout is off),
    whatever scope the caller is in.

    Parameters
    ----------
    net : callable
        Called on an ``(B, C, H, W)`` NDArray on ``ctx``: a Gluon block, a
        :class:`~mxnet.gluon.SymbolBlock`, a fused snapshot, or any function
        returning an NDArray or NumPy array of ``B`` rows (a tuple or list
        contributes its first item; each row is flattened).
    images : NDArray or numpy.ndarray or sequence
        ``(N, C, H, W)`` in the network's pixel convention. Any object with
        ``len()`` whose slices ``images[lo:hi]`` are such arrays also works
        (e.g. a view that converts uint8 faces one batch at a time). NumPy
        batches are copied to ``ctx`` as float32 (float16 stays float16).
    flip : bool, default True
        Also embed the mirrored images.
    batch_size : int, default 64
        Images per forward pass.
    ctx : mxnet.Context or None
        Where to run; defaults to the context of ``net``'s first parameter
        (the CPU for a network without parameters).
    progress : bool, default False
        Show a tqdm progress bar over the batches.
    desc : str or None
        The progress bar's label.

    Returns
    -------
    emb, flipped : numpy.ndarray, shape (N, D)
        The network's outputs for the images and for their mirror images, in
        the network's output dtype; ``flipped`` is None when ``flip`` is
        False. They are not normalised: the verification protocol's
        embedding of image ``i`` is ``normalize(emb[i] + flipped[i])``, which
        is what :func:`~fr_lib.metrics.verification.pair_distances` computes
        when given both. For ``N = 0`` both are ``(0, 0)`` float32 arrays.

    Examples
    --------
    >>> emb, flipped = embed(net, images)            # images: (2N, 3, 112, 112)
    >>> dist = pair_distances(emb[0::2], emb[1::2], flipped[0::2], flipped[1::2])
    """
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not callable(net):
        raise TypeError(f"net must be callable on an NDArray batch, got "
                        f"{type(net).__name__}")
    batch_size = int(batch_size)
    ctx = _net_context(net) if ctx is None else ctx
    n = len(images)
    embs, flips = [], []
    with autograd.pause(train_mode=False):
        for lo in tqdm(range(0, n, batch_size), desc=desc, disable=not progress,
                       leave=False):
            x = _as_batch(images[lo:lo + batch_size], ctx)
            if x.ndim != 4:
                raise ValueError(f"images must be (N, C, H, W) batches, got a batch "
                                 f"of shape {x.shape}")
            embs.append(_forward(net, x))
            if flip:
                flips.append(_forward(net, x.flip(axis=3)))  # NCHW: axis 3 is width
    if not embs:
        empty = np.zeros((0, 0), np.float32)
        return empty, (empty.copy() if flip else None)
    return np.concatenate(embs), (np.concatenate(flips) if flip else None)

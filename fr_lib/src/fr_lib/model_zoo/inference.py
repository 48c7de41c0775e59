"""Settings for fast CPU inference of a trained backbone.

:func:`prepare_for_inference` applies, in place, the settings measured by
``benchmarks/bench_inference.py``:

- ``hybridize(static_alloc=True, static_shape=True)``: the memory plan and
  the cached graph are built once for a fixed input shape;
- MXNet's oneDNN (MKLDNN) subgraph backend, when the build has it and a
  sample batch is given to verify it: it fuses convolution + BatchNorm
  (+ ReLU, + residual sum) into one operator with the BatchNorm folded into
  the convolution weights. MXNet 1.9's partitioner fails on some graphs
  (SE-LResNet), hence the check and the fallback;
- a one-pass PReLU: with the native engine every
  :class:`~fr_lib.model_zoo.PReLU` becomes fr_lib's ``fr_prelu`` operator
  (:func:`fr_lib.native.to_native`); with ``engine='mxnet'`` (or without the
  operators) every PReLU whose slopes all lie in ``[0, 1]`` is evaluated as
  ``max(x, alpha * x)`` (two passes, exact there) instead of the four passes
  of the training form. PReLU is element-wise
  and cannot join the oneDNN fusion in MXNet 1.9: besides its own pass,
  each one costs two layout conversions between oneDNN's blocked layout
  and the plain one;
- for MobileFaceNet, the whole network as one native operator
  (:mod:`fr_lib.model_zoo.fused`, ``engine='auto'``): BatchNorm folded into
  the convolutions, one memory layout from the first layer to the last, and
  bias, PReLU and the residual sum applied to each output tile while it is
  in registers. This removes the PReLU and layout-conversion cost that the
  settings above leave (4-6x faster on 2 cores); the other settings then
  apply only to inputs the operator does not take (GPU, symbols);
- optionally, micro-batches (``micro_batch``): a batch is run a few images
  at a time so that each layer's activations stay in the CPU caches, which
  pays off for the memory-bound layers of MobileFaceNet.

Use the network for inference only afterwards: the fused operators may keep
BatchNorm folded into their own copy of the weights, and ``static_shape``
fixes the batch size (a new shape builds a new graph).
"""
import warnings

import numpy as np
import mxnet as mx
from mxnet import gluon

from ..native.backend import check_engine, resolve_engine, to_native
from .fused import try_fuse
from .layers import PReLU

__all__ = ["prepare_for_inference", "PreparedNetwork", "MaxPReLU", "mkldnn_available",
           "inference_prelu_forward"]


def mkldnn_available():
    """Whether this MXNet build has the oneDNN (MKLDNN) operators.

    Book: introduced in ``chapter_backbone/comparison`` (骨干网络比较).
    """
    try:
        return bool(mx.runtime.Features().is_enabled("MKLDNN"))
    except (AttributeError, RuntimeError):
        return False


def inference_prelu_forward(F, x, alpha, alpha_shape=None):
    """PReLU as ``max(x, alpha * x)``, exact when every slope is in [0, 1].

    Parameters
    ----------
    F : module
        ``mx.nd`` or ``mx.sym``.
    x : NDArray or Symbol
    alpha : NDArray or Symbol
        Slopes of shape ``(C,)`` or ``(1,)``.
    alpha_shape : tuple, optional
        Shape that broadcasts ``alpha`` against ``x`` (``(1, -1, 1, 1)``
        for per-channel slopes on feature maps); ``None`` for one slope.

    Returns
    -------
    NDArray or Symbol
    """
    if alpha_shape is not None:
        alpha = F.reshape(alpha, shape=alpha_shape)
    return F.broadcast_maximum(x, F.broadcast_mul(x, alpha))


class MaxPReLU(PReLU):
    """:class:`~fr_lib.model_zoo.PReLU` as ``max(x, alpha * x)`` (two passes
    instead of four; exact only when every slope lies in [0, 1], which
    :func:`prepare_for_inference` checks before it swaps a block's class to
    this one)."""

    def hybrid_forward(self, F, x, alpha):
        shape = None if self._in_channels == 1 else self._alpha_shape
        return inference_prelu_forward(F, x, alpha, shape)


def _prelu_blocks(block):
    found = []
    block.apply(lambda b: found.append(b) if type(b) is PReLU else None)
    return found


def _slopes_in_unit_interval(block):
    alpha = block.alpha.data(block.alpha.list_ctx()[0]).asnumpy()
    return bool((alpha >= 0).all() and (alpha <= 1).all())


def _max_abs_error(a, b):
    return float(mx.nd.abs(a - b).max().asscalar())


class PreparedNetwork(gluon.Block):
    """What :func:`prepare_for_inference` returns: the prepared network as a
    child block, plus the fused snapshot and the micro-batching.

    Calling it on a float32 NCHW batch on CPU runs the fused operator when
    there is one; everything else (other dtypes, devices, symbols, extra
    inputs) goes through ``net``, ``micro_batch`` images at a time when set.

    Attributes
    ----------
    net : HybridBlock
        The network, hybridized with the chosen settings.
    fused : fr_lib.model_zoo.fused.FusedNetwork or None
    inference_backend : str or None
        ``'fused'``, a subgraph backend name such as ``'MKLDNN'``, or None.
    micro_batch : int or None
    """

    def __init__(self, net, fused=None, inference_backend=None, micro_batch=None):
        super().__init__(prefix="")
        with self.name_scope():
            self.net = net
        self.fused = fused
        self.inference_backend = inference_backend
        self.micro_batch = micro_batch

    def forward(self, x, *args):
        if (self.fused is not None and not args and isinstance(x, mx.nd.NDArray)
                and x.ndim == 4 and x.dtype == np.float32
                and x.context.device_type == "cpu"):
            return self.fused(x)
        size = self.micro_batch
        if size is None or not isinstance(x, mx.nd.NDArray) or x.shape[0] <= size:
            return self.net(x, *args)
        parts = [self.net(x[i:i + size], *args) for i in range(0, x.shape[0], size)]
        return mx.nd.concat(*parts, dim=0)

    def __repr__(self):
        return (f"PreparedNetwork(backend={self.inference_backend!r}, "
                f"micro_batch={self.micro_batch}, net={type(self.net).__name__})")


def prepare_for_inference(net, x=None, backend="auto", static=True, prelu="max",
                          rtol=1e-4, micro_batch=None, engine="auto"):
    """Hybridize an initialised backbone with the fastest safe CPU settings.

    Book: introduced in ``chapter_backbone/comparison`` (骨干网络比较).

    Parameters
    ----------
    net : HybridBlock or PreparedNetwork
        An initialised (trained or loaded) network; it is hybridized in place.
    x : NDArray, optional
        A sample batch of the shape you will feed. With it the prepared
        network is checked against the plain network's output on ``x``, and
        a graph partitioning that fails or changes the result is dropped
        (MXNet 1.9's oneDNN fusion fails on some graphs, e.g. SE-LResNet).
    backend : str or None, default 'auto'
        Subgraph backend for ``hybridize``. ``'auto'`` tries ``'MKLDNN'``
        when the build has oneDNN (:func:`mkldnn_available`) *and* ``x`` is
        given to verify it, and uses none otherwise; ``None`` disables graph
        partitioning; a name such as ``'MKLDNN'`` is used as given (and, with
        ``x``, verified).
    static : bool, default True
        ``static_alloc`` and ``static_shape``.
    prelu : {'max', 'keep'}, default 'max'
        ``'max'``: each :class:`fr_lib.model_zoo.PReLU` becomes the native
        ``fr_prelu`` with the native engine, else, if its slopes all lie in
        [0, 1], ``max(x, alpha * x)``; other PReLUs and ``nn.PReLU`` blocks
        (whose input rank is unknown) keep their own forward. ``'keep'``
        changes no PReLU.
    rtol : float, default 1e-4
        Largest accepted ``max|prepared - plain| / max|plain|`` on ``x``.
    micro_batch : int, optional
        Run larger batches this many images at a time and concatenate the
        outputs (the result is the same). ``benchmarks/bench_inference.py``
        measures whether and how much it helps on your machine
        (``prepared+micro4``). Not used by the fused engine, which already
        runs image by image.
    engine : {'auto', 'native', 'mxnet'}, default 'auto'
        ``'auto'``: for a :class:`~fr_lib.model_zoo.MobileFaceNet` on a
        machine without GPUs and with fr_lib's native operators, float32 CPU
        batches run through :func:`fr_lib.model_zoo.fused.fuse_network`'s
        single operator (checked against the plain network on ``x`` when
        given; on a mismatch it is dropped with a warning); otherwise, and
        for every other input, the MXNet settings above. ``'native'``
        (``'fused'`` is its deprecated old name): the
        same, but an error when the network cannot be fused or disagrees on
        ``x``. ``'mxnet'``: never the fused operator.

    Returns
    -------
    PreparedNetwork
        A wrapper block holding ``net`` (hybridized in place with the kept
        settings; PReLU blocks may have been swapped for their one-pass forms)
        and, for MobileFaceNet, the fused snapshot; call it on batches of a
        fixed shape. ``inference_backend`` says which backend was kept.
        Nothing of ``net`` is patched: calling ``net`` itself never runs the
        fused operator or the micro-batching. Passing a PreparedNetwork
        prepares its ``net`` again.

    Raises
    ------
    ValueError
        For an unknown ``prelu``, ``backend`` or ``engine`` value, and for
        ``engine='native'`` when the network cannot be fused (the message
        says why).
    RuntimeError
        When even the network without a subgraph backend disagrees with the
        plain network on ``x``, or the fused operator does with
        ``engine='native'``.

    Notes
    -----
    Outputs equal those of the plain network up to float32 rounding
    (oneDNN reorders sums when it folds BatchNorm into a convolution).
    ``benchmarks/bench_inference.py`` measures what each setting gains on
    your machine. Do not train the returned network.
    """
    if micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
        raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
    requested = engine
    engine = check_engine(engine)  # 'fused': the deprecated old name of 'native'
    if prelu not in ("max", "keep"):
        raise ValueError(f"prelu must be 'max' or 'keep', got {prelu!r}")
    if backend is not None and not isinstance(backend, str):
        raise ValueError(f"backend must be a string or None, got {backend!r}")
    if backend == "auto":
        backend = "MKLDNN" if (mkldnn_available() and x is not None) else None
    reference = None
    if isinstance(net, PreparedNetwork):  # prepared before: start from the network
        net = net.net
    if x is not None:
        net.hybridize(active=False)
        reference = net(x)
        scale = max(float(mx.nd.abs(reference).max().asscalar()), 1e-30)
    contexts = {x.context} if x is not None else None
    native = resolve_engine(engine, contexts)[0] == "native"
    if native and prelu == "max":
        to_native(net, "native")  # fr_prelu: one pass, exact for every slope
    elif prelu == "max":
        for block in _prelu_blocks(net):
            if _slopes_in_unit_interval(block):
                block.__class__ = MaxPReLU
    fused = None
    if native:
        fused, reason = try_fuse(net)
        if fused is None and engine == "native":
            raise ValueError(f"engine={requested!r} is not possible: {reason}")
    if fused is not None and reference is not None:
        error = _max_abs_error(fused(x), reference) / scale
        if error > rtol:
            message = (f"the fused operator differs from the plain network by {error:.2e} "
                       f"(relative), more than rtol={rtol}")
            if engine == "native":
                raise RuntimeError(message)
            warnings.warn(message + "; using the MXNet settings", RuntimeWarning, stacklevel=2)
            fused = None
    if fused is not None:  # other inputs take the plain (unpartitioned) graph
        net.hybridize(static_alloc=static, static_shape=static)
        return PreparedNetwork(net, fused, "fused", micro_batch)
    candidates = [backend, None] if backend is not None else [None]
    for i, candidate in enumerate(candidates):
        options = dict(static_alloc=static, static_shape=static)
        if candidate is not None:
            options["backend"] = candidate
        net.hybridize(**options)  # also drops any graph cached before
        prepared = PreparedNetwork(net, None, candidate, micro_batch)
        if reference is None:
            return prepared
        last = i == len(candidates) - 1
        try:
            error = _max_abs_error(prepared(x), reference) / scale
        except mx.base.MXNetError:
            if last:
                raise
            continue
        if error <= rtol:
            return prepared
        if last:
            raise RuntimeError(
                f"prepared network differs from the plain one by {error:.2e} "
                f"(relative), more than rtol={rtol}")
    return prepared

"""A whole MobileFaceNet forward pass as one native CPU operator.

:func:`fuse_network` reads a trained :class:`~fr_lib.model_zoo.MobileFaceNet`
(either configuration, any embedding size) and returns a :class:`FusedNetwork`:
a snapshot of its weights with every BatchNorm folded into the convolution
before it, packed for the native ``fr_fused_net`` operator
(``fr_lib/ops/csrc/fr_fused.cc``). That operator runs each image through the
whole network on one core in one memory layout (NHWC), applying bias, PReLU
and the residual sum to each output tile while it is in registers.

Why: with MXNet 1.9 every PReLU between two oneDNN convolutions costs its own
pass over the activations plus two conversions between oneDNN's blocked
layout and the plain one, and MXNet cannot fuse a per-channel PReLU into a
oneDNN convolution. For MobileFaceNet that is more time than all of its
convolutions (see ``benchmarks/bench_inference.py``). The fused operator
removes it.

:func:`~fr_lib.model_zoo.prepare_for_inference` uses it by default for
MobileFaceNet on CPU when fr_lib's native operators are available and checks
its output against the unchanged network. It is inference only (no
gradient), float32, CPU; later changes to the network's parameters are not
seen (call :func:`fuse_network` again).
"""
import numpy as np
import mxnet as mx
from mxnet.gluon import nn

from .. import ops
from .layers import PReLU
from .mobilefacenet import MobileFaceNet, _Bottleneck, _ConvBN

__all__ = ["FusedNetwork", "fuse_network", "try_fuse", "UnsupportedNetwork"]

# Must match fr_fused.cc.
_GEMM, _STEM, _DEPTHWISE, _GROUPED, _PAIRS = 0, 1, 2, 3, 4
_NR = 32


class UnsupportedNetwork(ValueError):
    """The network has a layer or structure the fused operator cannot run."""


def _numpy(param):
    return param.data(param.list_ctx()[0]).asnumpy().astype(np.float64)


def _pair(value, what, conv):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(value) != 2 or value[0] != value[1]:
        raise UnsupportedNetwork(f"{conv.name}: {what} {value} is not the same on both axes")
    return int(value[0])


def conv_settings(conv):
    """``((kh, kw), stride, pad, groups)`` of an undilated NCHW ``Conv2D``
    without activation whose stride and padding are the same on both axes:
    the convolutions fr_lib's native operators run (here and in
    :mod:`fr_lib.model_zoo.native_train`).

    Raises
    ------
    UnsupportedNetwork
        For anything else.
    """
    if not isinstance(conv, nn.Conv2D):
        raise UnsupportedNetwork(f"expected a Conv2D, got {type(conv).__name__}")
    kw = conv._kwargs
    if kw.get("layout", "NCHW") != "NCHW" or conv.act is not None:
        raise UnsupportedNetwork(f"{conv.name}: only NCHW convolutions without activation")
    if any(int(d) != 1 for d in kw["dilate"]):
        raise UnsupportedNetwork(f"{conv.name}: dilation is not supported")
    return (tuple(int(k) for k in kw["kernel"]), _pair(kw["stride"], "stride", conv),
            _pair(kw["pad"], "pad", conv), int(kw["num_group"]))


def _unit(conv, bn, act, save=False, residual=False):
    """One convolution with its BatchNorm folded in, as float64 arrays."""
    _, stride, pad, groups = conv_settings(conv)
    weight = _numpy(conv.weight)
    cout = weight.shape[0]
    bias = _numpy(conv.bias) if conv.bias is not None else np.zeros(cout)
    if bn is not None:
        if not isinstance(bn, nn.BatchNorm) or bn._kwargs.get("axis", 1) != 1:
            raise UnsupportedNetwork(f"expected a BatchNorm on axis 1 after {conv.name}")
        gamma = (np.ones(cout) if bn._kwargs.get("fix_gamma", False)
                 else _numpy(bn.gamma))
        scale = gamma / np.sqrt(_numpy(bn.running_var) + bn._kwargs["eps"])
        weight = weight * scale[:, None, None, None]
        bias = (bias - _numpy(bn.running_mean)) * scale + _numpy(bn.beta)
    alpha = None
    if act is not None:
        if not isinstance(act, (PReLU, nn.PReLU)):
            raise UnsupportedNetwork(f"unsupported activation {type(act).__name__}")
        alpha = np.broadcast_to(_numpy(act.alpha), (cout,))
    return dict(weight=weight, bias=bias, alpha=alpha, groups=groups, stride=stride,
                pad=pad, save=save, residual=residual, name=conv.name)


def _units(net):
    if not isinstance(net, MobileFaceNet):
        raise UnsupportedNetwork(
            f"fuse_network supports MobileFaceNet, got {type(net).__name__}")
    units = []
    for block in net.features:
        if isinstance(block, _ConvBN):
            units.append(_unit(block.conv, block.bn, block.act))
        elif isinstance(block, _Bottleneck):
            body = list(block.body)
            for i, part in enumerate(body):
                units.append(_unit(part.conv, part.bn, part.act,
                                   save=block.residual and i == 0,
                                   residual=block.residual and i == len(body) - 1))
        else:
            raise UnsupportedNetwork(f"unsupported block {type(block).__name__}")
    head = list(net.output)
    if len(head) != 3 or not isinstance(head[2], nn.Flatten):
        raise UnsupportedNetwork("MobileFaceNet.output must be Conv2D, BatchNorm, Flatten")
    units.append(_unit(head[0], head[1], None))
    return units


def _panels(matrix):
    """(cout, K) -> [ceil(cout / 32)][K][32], zero-padded columns."""
    cout, k = matrix.shape
    padded = np.zeros((-(-cout // _NR) * _NR, k))
    padded[:cout] = matrix
    return padded.reshape(-1, _NR, k).transpose(0, 2, 1)


def _padded(vector, size):
    out = np.zeros(size)
    out[:len(vector)] = vector
    return out


class FusedNetwork:
    """A network compiled for the native ``fr_fused_net`` operator.

    Call it on an ``(N, C, H, W)`` float32 NDArray on CPU; it returns the
    ``(N, embedding_size)`` embeddings (more columns, in NCHW order, if the
    input size leaves the last feature map larger than 1x1, exactly as the
    network's ``Flatten``). Build it with :func:`fuse_network`.

    Attributes
    ----------
    program : str
        The operator's layer list (see ``fr_fused.cc``).
    params : NDArray
        All folded and packed weights, float32, on CPU.
    layers : int
        Number of fused convolutions.
    """

    def __init__(self, program, params, layers):
        self.program = program
        self.params = params
        self.layers = layers

    def __call__(self, x):
        if not isinstance(x, mx.nd.NDArray):
            raise TypeError(f"FusedNetwork takes an NDArray, got {type(x).__name__}")
        if x.context.device_type != "cpu" or x.dtype != np.float32 or x.ndim != 4:
            raise ValueError("FusedNetwork runs on float32 (N, C, H, W) arrays on CPU; "
                             f"got {np.dtype(x.dtype).name} {x.shape} on {x.context}")
        return mx.nd.fr_fused_net(x, self.params, program=self.program)

    def __repr__(self):
        return (f"FusedNetwork({self.layers} fused convolutions, "
                f"{self.params.size} parameters)")


def fuse_network(net):
    """Compile a trained MobileFaceNet for the native fused operator.

    Parameters
    ----------
    net : MobileFaceNet
        Initialised; its parameters and BatchNorm running statistics are
        copied (later changes are not seen).

    Returns
    -------
    FusedNetwork

    Raises
    ------
    UnsupportedNetwork
        For another architecture or a layer the operator cannot run.
    RuntimeError
        When fr_lib's native operators are unavailable (no compiler,
        ``FR_LIB_NATIVE=0``); the reason is in the message.
    """
    units = _units(net)
    if not ops.available():
        raise RuntimeError("the fused operator needs fr_lib's native operators: "
                           f"{ops.load_error()}")
    program, chunks, offset = [], [], 0

    def put(array):
        nonlocal offset
        flat = np.ascontiguousarray(array, dtype=np.float32).ravel()
        chunks.append(flat)
        offset += flat.size
        return offset - flat.size

    for i, u in enumerate(units):
        w = u["weight"]
        cout, cin_g, kh, kw = w.shape
        cin = cin_g * u["groups"]
        if i == 0:
            if u["groups"] != 1:
                raise UnsupportedNetwork(f"{u['name']}: the first convolution must have groups=1")
            op = _STEM
        elif kh == kw == 1 and u["stride"] == 1 and u["pad"] == 0 and u["groups"] == 1:
            op = _GEMM
        elif u["groups"] == cin == cout and cin_g == 1:
            op = _DEPTHWISE
        elif cin_g == 2 and cin == cout == 2 * u["groups"]:
            op = _PAIRS  # mbf's groups of 2 channels: two depthwise passes in one
        else:
            op = _GROUPED
        if op in (_STEM, _GEMM):
            size = -(-cout // _NR) * _NR
            w_off = put(_panels(w.reshape(cout, -1)))
            b_off = put(_padded(u["bias"], size))
            a_off = put(_padded(u["alpha"], size)) if u["alpha"] is not None else 0
        elif op == _PAIRS:
            w_off = put(_pair_weights(w))
            b_off = put(u["bias"])
            a_off = put(u["alpha"]) if u["alpha"] is not None else 0
        else:
            w_off = put(w.reshape(cout, kh * kw).T if op == _DEPTHWISE else w)
            b_off = put(u["bias"])
            a_off = put(u["alpha"]) if u["alpha"] is not None else 0
        program += [op, kh, kw, u["stride"], u["pad"], u["groups"], cin, cout,
                    int(u["alpha"] is not None), int(u["save"]), int(u["residual"]),
                    w_off, b_off, a_off]
    params = mx.nd.array(np.concatenate(chunks), ctx=mx.cpu(), dtype=np.float32)
    return FusedNetwork(" ".join(str(int(v)) for v in program), params, len(units))


def _pair_weights(w):
    """(C, 2, kh, kw) weights of groups of 2 channels as two depthwise sets,
    [2][kh*kw][C]: output channel c's weight on its own input channel c, then
    on its partner c ^ 1 (channel c is input c % 2 of its group)."""
    cout, _, kh, kw = w.shape
    c = np.arange(cout)
    own, partner = w[c, c % 2], w[c, 1 - c % 2]          # (C, kh, kw) each
    return np.stack([own.reshape(cout, -1).T, partner.reshape(cout, -1).T])


def try_fuse(net):
    """:func:`fuse_network` where the fused operator can run, else the reason.

    Returns
    -------
    (FusedNetwork, None) or (None, str)
        ``None`` and why when fr_lib's native operators are unavailable or
        the network is not a supported MobileFaceNet. The snapshot runs on
        CPU; choosing where (``engine=``) is the caller's part.
    """
    if not ops.available():
        return None, f"fr_lib's native operators are unavailable: {ops.load_error()}"
    try:
        return fuse_network(net), None
    except UnsupportedNetwork as err:
        return None, str(err)

"""Training MobileFaceNet on CPU with channels-last native operators.

:class:`NativeTrainingView` runs the training-mode forward pass of a
:class:`~fr_lib.model_zoo.MobileFaceNet` through three native operators of
:mod:`fr_lib.ops` (``csrc/fr_train.cc``), each with its own backward pass:

- ``fr_pw_conv``: a 1x1 convolution as a register-tiled GEMM on NHWC data;
- ``fr_dw_conv``: a depthwise convolution (any kernel; one stride and one
  padding for both axes);
- ``fr_bn_act``: BatchNorm with the statistics of the batch followed by
  PReLU (or nothing), in two passes forward and two backward;
- ``fr_pw_bn_act`` and ``fr_dw_bn_act``: a 1x1 or depthwise convolution and
  the BatchNorm + PReLU after it in one operator, which the view uses for
  every such unit: the 1x1 form takes the batch sums from the GEMM's tile,
  and backward both form the BatchNorm's input gradient a block of rows at
  a time in the cache, where the convolution's gradients consume it,
  instead of writing it out and reading it back.

The first convolution (3 input channels) and the embedding layers after the
global depthwise convolution stay MXNet operators. The view holds no
parameters of its own: it reads and trains the network's (same names, same
files), and it updates the BatchNorm running statistics as
:class:`mxnet.gluon.nn.BatchNorm` does (``running = momentum * running +
(1 - momentum) * batch``, batch variance without Bessel's correction).
Outside ``autograd.record(train_mode=True)`` it simply calls the network.

Why: in MXNet 1.9 most of a MobileFaceNet training step on CPU is spent
between the convolutions -- PReLU and BatchNorm passes plus conversions
between oneDNN's blocked layout and the plain one around every operator that
oneDNN does not own. Keeping the whole body in one layout removes the
conversions (``benchmarks/bench_train.py`` measures both). The results are
the same up to float32 rounding (``tests/test_native_train.py`` compares
outputs, parameter gradients and running statistics with the MXNet network).

:class:`~fr_lib.train.FaceTrainer` uses it by default for MobileFaceNet on
CPU (``TrainConfig.engine``).
"""
import numpy as np
import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn

from .. import ops
from .fused import UnsupportedNetwork as _Unsupported, conv_settings
from .mobilefacenet import MobileFaceNet, _Bottleneck, _ConvBN

__all__ = ["NativeTrainingView", "native_training_support"]


def _bn_settings(bn, channels):
    kw = bn._kwargs
    if kw.get("fix_gamma") or kw.get("use_global_stats") or kw.get("axis", 1) != 1:
        raise _Unsupported(f"{bn.name}: needs a trainable gamma, batch statistics and axis 1")
    if channels % 16:
        raise _Unsupported(f"{bn.name}: {channels} channels is not a multiple of 16")
    return float(kw["eps"]), float(kw["momentum"])


def _plan_unit(unit, kind):
    """(kind, conv, bn, act, stride, pad, eps, momentum) of one _ConvBN."""
    kernel, stride, pad, groups = conv_settings(unit.conv)
    if unit.conv.bias is not None:
        raise _Unsupported(f"{unit.conv.name}: a convolution with bias")
    cout, cin_g = unit.conv.weight.shape[:2]
    if kind == "pw":
        if kernel != (1, 1) or stride != 1 or pad != 0 or groups != 1:
            raise _Unsupported(f"{unit.conv.name}: expected a 1x1 convolution")
        if cout % 32 or cin_g % 32:
            raise _Unsupported(f"{unit.conv.name}: 1x1 convolutions need channel "
                               f"counts that are multiples of 32, got {cin_g} -> {cout}")
    elif kind == "dw":
        if groups * 2 == cout and cin_g == 2:
            kind = "dw2"   # 2 channels per group: two depthwise convolutions
        elif groups != cout or cin_g != 1:
            raise _Unsupported(f"{unit.conv.name}: a grouped convolution that is not "
                               f"depthwise ({groups} groups, {cout} channels)")
    elif kind == "stem":
        if groups != 1:
            raise _Unsupported(f"{unit.conv.name}: grouped first convolution")
    act = unit.act
    if act is not None:
        alpha = act.alpha
        if alpha.shape[0] != cout:
            raise _Unsupported(f"{act.name}: a PReLU with one shared slope")
    eps, momentum = _bn_settings(unit.bn, cout)
    return (kind, unit.conv, unit.bn, act, stride, pad, eps, momentum)


def _plan(net):
    if not isinstance(net, MobileFaceNet):
        raise _Unsupported(f"{type(net).__name__} is not a MobileFaceNet")
    steps = []
    for i, block in enumerate(net.features):
        if isinstance(block, _ConvBN):
            kernel = block.conv._kwargs["kernel"][0]
            kind = "stem" if i == 0 else ("pw" if kernel == 1 else "dw")
            steps.append(("unit", _plan_unit(block, kind)))
        elif isinstance(block, _Bottleneck):
            body = list(block.body)
            units = [_plan_unit(body[0], "pw"), _plan_unit(body[1], "dw"),
                     _plan_unit(body[2], "pw")]
            steps.append(("block", units, block.residual))
        else:
            raise _Unsupported(f"unexpected block {type(block).__name__} in features")
    if not steps or steps[0][0] != "unit" or steps[0][1][0] != "stem":
        raise _Unsupported("the first layer must be a plain convolution")
    return steps


def native_training_support(net):
    """Whether :class:`NativeTrainingView` can train ``net``.

    Returns
    -------
    (bool, str)
        ``(True, '')`` or ``(False, why not)``: not a MobileFaceNet, a layer
        the operators do not cover (grouped convolutions other than depthwise
        ones and groups of 2 channels, channel counts that are not multiples
        of 32 / 16, a shared PReLU slope), or fr_lib's native operators are unavailable.
    """
    try:
        _plan(net)
    except _Unsupported as exc:
        return False, str(exc)
    if not ops.available():
        return False, f"fr_lib's native operators are unavailable: {ops.load_error()}"
    return True, ""


class _Plan:
    """The layer plan, out of sight of Gluon's child-block checks (the
    blocks in it are children of ``net``, registered there)."""

    def __init__(self, steps):
        self.steps = steps


def _get(F, param, ctx):
    """A parameter of a child block inside hybrid_forward: its symbol while
    the graph is traced, its data on ``ctx`` otherwise."""
    return param.var() if F is mx.sym else param.data(ctx)


class NativeTrainingView(nn.HybridBlock):
    """A MobileFaceNet's training forward pass on native NHWC operators.

    Call it inside ``autograd.record()``; outside training mode it calls
    the network itself (running statistics, MXNet operators). It can be
    hybridized, alone or inside a larger block (the traced graph is the
    training pass).

    Parameters
    ----------
    net : MobileFaceNet
        CPU, float32, 112x112 input. The view trains its parameters;
        nothing is copied.

    Raises
    ------
    ValueError
        When :func:`native_training_support` says no (the message says why).

    Examples
    --------
    >>> view = NativeTrainingView(net)             # doctest: +SKIP
    >>> with autograd.record():                    # doctest: +SKIP
    ...     loss = loss_fn(head(view(x)), y)
    """

    def __init__(self, net, **kwargs):
        super().__init__(**kwargs)
        ok, why = native_training_support(net)
        if not ok:
            raise ValueError(f"NativeTrainingView: {why}")
        self.net = net
        self._plan = _Plan(_plan(net))

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            if not autograd.is_training():
                return self.net(x)
            if x.context.device_type != "cpu" or x.dtype != np.float32 or \
                    x.ndim != 4 or tuple(x.shape[2:]) != (112, 112):
                raise ValueError(
                    f"NativeTrainingView: expected float32 (N, C, 112, 112) input "
                    f"on CPU, got {x.dtype.__name__} {x.shape} on {x.context}")
        return super().forward(x, *args)

    def hybrid_forward(self, F, x):
        ctx = x.context if F is mx.nd else None
        steps = self._plan.steps
        first = steps[0][1]
        h = F.transpose(first[1](x), axes=(0, 2, 3, 1))   # NCHW -> NHWC
        h = self._bn_act(F, h, first, ctx)
        for step in steps[1:]:
            if step[0] == "unit":
                h = self._unit(F, h, step[1], ctx)
                continue
            out = h
            for unit in step[1]:
                out = self._unit(F, out, unit, ctx)
            h = F.elemwise_add(out, h) if step[2] else out
        # (N, 1, 1, C) channels-last is (N, C, 1, 1) channels-first
        return self.net.output(F.reshape(h, shape=(0, -1, 1, 1)))

    def _unit(self, F, h, unit, ctx):
        kind, conv, _, _, stride, pad, _, _ = unit
        w = _get(F, conv.weight, ctx)
        if kind in ("pw", "dw"):   # convolution, BatchNorm and PReLU in one operator
            return self._bn_act(F, h, unit, ctx, w)
        if kind == "dw2":
            # groups of 2 channels: output channel c reads input channels
            # 2(c//2) and 2(c//2)+1, so the convolution is exactly the sum of
            # two depthwise convolutions of the channel-duplicated input
            pairs = F.reshape(h, shape=(0, 0, 0, -4, -1, 2))
            z = None
            for j in (0, 1):
                hj = F.reshape(F.repeat(F.slice_axis(pairs, axis=4, begin=j, end=j + 1),
                                        repeats=2, axis=4), shape=(0, 0, 0, -3))
                zj = F.fr_dw_conv(hj, F.slice_axis(w, axis=1, begin=j, end=j + 1),
                                  stride=stride, pad=pad)
                z = zj if z is None else F.elemwise_add(z, zj)
        return self._bn_act(F, z, unit, ctx)

    @staticmethod
    def _bn_act(F, z, unit, ctx, w=None):
        """fr_bn_act(z, ...), or (given the unit's convolution weight w)
        fr_pw_bn_act / fr_dw_bn_act(z, w, ...) of the convolution's input z."""
        kind, _, bn, act, stride, pad, eps, momentum = unit
        args = [z] + ([] if w is None else [w])
        args += [_get(F, bn.gamma, ctx), _get(F, bn.beta, ctx)]
        if act is not None:
            args.append(_get(F, act.alpha, ctx))
        args += [_get(F, bn.running_mean, ctx), _get(F, bn.running_var, ctx)]
        kw = dict(eps=eps, momentum=momentum, act=int(act is not None))
        if w is None:
            return F.fr_bn_act(*args, **kw)[0]
        if kind == "pw":
            return F.fr_pw_bn_act(*args, **kw)[0]
        return F.fr_dw_bn_act(*args, stride=stride, pad=pad, **kw)[0]

    def __repr__(self):
        return f"{type(self).__name__}({self.net.name})"

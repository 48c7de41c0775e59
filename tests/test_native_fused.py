"""The fused training operators fr_pw_bn_act and fr_dw_bn_act (fr_train.cc):
a 1x1 or depthwise convolution and its BatchNorm + PReLU in one operator,
against NumPy in float64 (forward, batch and running statistics, every
gradient). NativeTrainingView uses them; tests/test_native_train.py checks
the whole network against MXNet's float64 evaluation."""
import mxnet as mx
import numpy as np
import pytest

from fr_lib import ops
from test_native_train import _close, _dw_numpy, _run

pytestmark = pytest.mark.skipif(not ops.available(),
                                reason="fr_lib native operators unavailable")


@pytest.mark.parametrize("act, shape, cin, cout", [(1, (3, 7, 5), 64, 128),
                                                   (0, (2, 9, 9), 32, 512)])
def test_pw_bn_act_matches_numpy(act, shape, cin, cout):
    """fr_pw_bn_act = fr_bn_act(fr_pw_conv(x, w)) in one operator (batch sums
    taken in the GEMM, dz formed block by block inside the backward GEMMs):
    output, batch statistics, running statistics and every gradient against
    NumPy in float64. Rows: 105 (not a multiple of the 8-row tile) and 162
    (two 64-row blocks per thread: 512 channels backward)."""
    rng = np.random.RandomState(5)
    x = rng.standard_normal(shape + (cin,))
    w = rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin) + 0.05   # mean far from 0
    gamma, beta = rng.uniform(0.5, 2, cout), rng.standard_normal(cout)
    alpha = rng.uniform(-0.3, 0.5, cout)
    rm0, rv0 = rng.standard_normal(cout), rng.uniform(0.5, 2, cout)
    eps, momentum = 1e-5, 0.8
    arrays = [x, w, gamma, beta] + ([alpha] if act else [])
    running = [mx.nd.array(rm0), mx.nd.array(rv0)]
    stats = []

    def op(*xs):
        out = mx.nd.fr_pw_bn_act(*xs, *running, eps=eps, momentum=momentum, act=act)
        stats.extend(out[1:])
        return out[0]

    y, grads, dy = _run(op, arrays)
    f32 = [a.astype("float32").astype("f8") for a in arrays]
    xf, wf = f32[0].reshape(-1, cin), f32[1][:, :, 0, 0]
    z = xf @ wf.T
    R = z.shape[0]
    mean, var = z.mean(0), z.var(0)
    inv = 1 / np.sqrt(var + eps)
    xhat = (z - mean) * inv
    u = xhat * f32[2] + f32[3]
    dyf = dy.astype("float32").astype("f8").reshape(-1, cout)
    g = np.where(u > 0, dyf, dyf * f32[4]) if act else dyf
    _close(y.reshape(-1, cout), np.where(u > 0, u, f32[4] * u) if act else u)
    _close(stats[0].asnumpy(), mean, rtol=1e-5)
    _close(stats[1].asnumpy(), var, rtol=1e-5)
    _close(running[0].asnumpy(), momentum * rm0 + (1 - momentum) * mean, rtol=1e-5)
    _close(running[1].asnumpy(), momentum * rv0 + (1 - momentum) * var, rtol=1e-5)
    dbeta, dgamma = g.sum(0), (g * xhat).sum(0)
    dz = f32[2] * inv / R * (R * g - dbeta - xhat * dgamma)
    _close(grads[0].reshape(-1, cin), dz @ wf, rtol=1e-4)
    _close(grads[1][:, :, 0, 0], dz.T @ xf, rtol=1e-4)
    _close(grads[2], dgamma, rtol=1e-4)
    _close(grads[3], dbeta, rtol=1e-4)
    if act:
        _close(grads[4], (dyf * np.minimum(u, 0)).sum(0), rtol=1e-4)


@pytest.mark.parametrize("k, stride, pad, hw, C, act", [
    (3, 1, 1, (9, 10), 1024, 1),   # 2-row blocks backward (rows of 10 x 1024 floats)
    (3, 2, 1, (21, 9), 1024, 0),   # 6-row blocks, odd sizes
    (3, 2, 1, (8, 8), 32, 1),
    (7, 1, 0, (7, 7), 32, 1)])     # any other kernel: the general path
def test_dw_bn_act_matches_numpy(k, stride, pad, hw, C, act):
    """fr_dw_bn_act = fr_bn_act(fr_dw_conv(x, w)) in one operator (backward:
    dz formed a block of rows at a time and consumed by both gradients):
    output, batch statistics and every gradient against NumPy in float64."""
    rng = np.random.RandomState(6)
    x = rng.standard_normal((2,) + hw + (C,))
    w = rng.standard_normal((C, 1, k, k)) / k + 0.1
    gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    alpha = rng.uniform(-0.3, 0.5, C)
    eps = 1e-5
    arrays = [x, w, gamma, beta] + ([alpha] if act else [])
    stats = []

    def op(*xs):
        out = mx.nd.fr_dw_bn_act(*xs, mx.nd.zeros(C), mx.nd.ones(C), eps=eps, momentum=0.9,
                                 act=act, stride=stride, pad=pad)
        stats.extend(out[1:])
        return out[0]

    y, grads, dy = _run(op, arrays)
    f32 = [a.astype("float32").astype("f8") for a in arrays]
    dyf = dy.astype("float32").astype("f8")
    z = _dw_numpy(f32[0], f32[1], stride, pad, np.zeros_like(dyf))[0]
    assert y.shape == z.shape
    flat = z.reshape(-1, C)
    R = flat.shape[0]
    inv = 1 / np.sqrt(flat.var(0) + eps)
    xhat = (z - flat.mean(0)) * inv
    u = xhat * f32[2] + f32[3]
    g = np.where(u > 0, dyf, dyf * f32[4]) if act else dyf
    _close(y, np.where(u > 0, u, f32[4] * u) if act else u)
    _close(stats[0].asnumpy(), flat.mean(0), rtol=1e-5)
    _close(stats[1].asnumpy(), flat.var(0), rtol=1e-5)
    dbeta, dgamma = g.sum((0, 1, 2)), (g * xhat).sum((0, 1, 2))
    dz = f32[2] * inv / R * (R * g - dbeta - xhat * dgamma)
    _, rdx, rdw = _dw_numpy(f32[0], f32[1], stride, pad, dz)
    _close(grads[0], rdx, rtol=1e-4)
    _close(grads[1], rdw, rtol=1e-4)
    _close(grads[2], dgamma, rtol=1e-4)
    _close(grads[3], dbeta, rtol=1e-4)
    if act:
        _close(grads[4], (dyf * np.minimum(u, 0)).sum((0, 1, 2)), rtol=1e-4)


def test_fused_operators_reject_bad_shapes():
    with pytest.raises(mx.MXNetError, match="multiples of 32"):
        mx.nd.fr_pw_bn_act(mx.nd.zeros((1, 2, 2, 48)), mx.nd.zeros((64, 48, 1, 1)),
                           *[mx.nd.zeros(64)] * 4, act=0).wait_to_read()
    with pytest.raises(mx.MXNetError, match=r"shape \(64,\)"):
        mx.nd.fr_pw_bn_act(mx.nd.zeros((1, 2, 2, 32)), mx.nd.zeros((64, 32, 1, 1)),
                           *[mx.nd.zeros(32)] * 4, act=0).wait_to_read()

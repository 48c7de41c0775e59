"""Channels-last training operators (fr_train.cc) and NativeTrainingView.

References: NumPy float64 formulas for each operator (forward and backward),
finite differences of the NumPy BatchNorm + PReLU, MXNet's own BatchNorm
for the running-statistics update, and the Gluon MobileFaceNet evaluated by
MXNet in float64 for the whole training pass.
"""
import tempfile

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from fr_lib import ops
from fr_lib.model_zoo import NativeTrainingView, get_model, native_training_support
from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig
from numeric_helpers import numeric_grad, randomise_backbone

pytestmark = pytest.mark.skipif(not ops.available(),
                                reason="fr_lib native operators unavailable")


def _run(fn, arrays, head_seed=7):
    """fn(*NDArrays) -> first output; returns (output, grads) for a random
    output gradient."""
    xs = [mx.nd.array(a, dtype="float32") for a in arrays]
    for x in xs:
        x.attach_grad()
    with autograd.record():
        y = fn(*xs)
    head = np.random.RandomState(head_seed).standard_normal(y.shape)
    y.backward(mx.nd.array(head))
    return y.asnumpy(), [x.grad.asnumpy() for x in xs], head


def _close(a, b, rtol=2e-5):
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= rtol * scale + 1e-30, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("cin, cout, shape", [(64, 128, (3, 7, 5)), (96, 32, (2, 4, 4))])
def test_pw_conv_matches_numpy(cin, cout, shape):
    rng = np.random.RandomState(0)
    x = rng.standard_normal(shape + (cin,))
    w = rng.standard_normal((cout, cin, 1, 1))
    y, (dx, dw), g = _run(lambda x, w: mx.nd.fr_pw_conv(x, w), [x, w])
    w2 = w[:, :, 0, 0]
    _close(y, x @ w2.T)
    _close(dx, g @ w2)
    _close(dw[:, :, 0, 0], g.reshape(-1, cout).T @ x.reshape(-1, cin))


def _dw_numpy(x, w, stride, pad, g):
    n, h, wd, c = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, oh, ow, c))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            y += patch * w[:, 0, ky, kx]
            dw[:, 0, ky, kx] = (g * patch).sum(axis=(0, 1, 2))
            dxp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += g * w[:, 0, ky, kx]
    return y, dxp[:, pad:pad + h, pad:pad + wd], dw


@pytest.mark.parametrize("k, stride, pad, hw", [(3, 1, 1, (9, 10)), (3, 2, 1, (9, 10)),
                                                (3, 2, 1, (8, 8)), (7, 1, 0, (7, 7))])
def test_dw_conv_matches_numpy(k, stride, pad, hw):
    rng = np.random.RandomState(1)
    x = rng.standard_normal((2,) + hw + (32,))
    w = rng.standard_normal((32, 1, k, k))
    y, (dx, dw), g = _run(lambda x, w: mx.nd.fr_dw_conv(x, w, stride=stride, pad=pad), [x, w])
    ry, rdx, rdw = _dw_numpy(x, w, stride, pad, g)
    assert y.shape == ry.shape
    _close(y, ry)
    _close(dx, rdx)
    _close(dw, rdw)


def _bn_numpy(z, gamma, beta, alpha, eps):
    flat = z.reshape(-1, z.shape[-1])
    u = (z - flat.mean(0)) / np.sqrt(flat.var(0) + eps) * gamma + beta
    return u if alpha is None else np.where(u > 0, u, alpha * u)


@pytest.mark.parametrize("act", [1, 0])
def test_bn_act_forward_and_gradient(act):
    rng = np.random.RandomState(2)
    C = 16
    z = rng.standard_normal((2, 3, 2, C)) * 2 + 3   # mean far from 0
    gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    alpha = rng.uniform(-0.3, 0.5, C)
    eps = 2e-5
    arrays = [z, gamma, beta] + ([alpha] if act else [])

    def op(*xs):
        stats = [mx.nd.zeros(C), mx.nd.ones(C)]
        return mx.nd.fr_bn_act(*xs, *stats, eps=eps, momentum=0.9, act=act)[0]

    y, grads, g = _run(op, arrays)
    ref = lambda *a: _bn_numpy(*a, eps) if act else _bn_numpy(*a, None, eps)  # noqa: E731
    _close(y, ref(*arrays), rtol=1e-5)
    for i, got in enumerate(grads):
        def f(v, i=i):
            args = list(arrays)
            args[i] = v
            return float((ref(*args) * g).sum())
        num = numeric_grad(f, arrays[i])
        np.testing.assert_allclose(got, num, rtol=1e-3, atol=1e-3 * np.abs(num).max())


def test_bn_act_updates_running_statistics_like_batchnorm():
    """Same momentum rule and (biased) variance as MXNet's own BatchNorm
    (which applies the update in its backward pass; fr_bn_act in forward)."""
    rng = np.random.RandomState(3)
    C = 32
    z = rng.standard_normal((4, 5, 5, C)) * 3 + 1
    gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    rm0, rv0 = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    ours = [mx.nd.array(rm0), mx.nd.array(rv0)]
    out = mx.nd.fr_bn_act(mx.nd.array(z), mx.nd.array(gamma), mx.nd.array(beta), *ours,
                          eps=1e-3, momentum=0.8, act=0)
    theirs = [mx.nd.array(rm0), mx.nd.array(rv0)]
    data = mx.nd.array(z.transpose(0, 3, 1, 2))
    data.attach_grad()
    with autograd.record(train_mode=True):
        ref = mx.nd.BatchNorm(data, mx.nd.array(gamma), mx.nd.array(beta), *theirs,
                              eps=1e-3, momentum=0.8, fix_gamma=False)
    ref.backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)
    flat = z.reshape(-1, C)
    np.testing.assert_allclose(out[1].asnumpy(), flat.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2].asnumpy(), flat.var(0), rtol=1e-5)
    np.testing.assert_allclose(ours[0].asnumpy(), 0.8 * rm0 + 0.2 * flat.mean(0), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("act", [1, 0])
def test_bn_act_large_output_matches_numpy(act):
    """An output of 8 MiB or more takes the streaming-store pass (AVX-512
    CPUs): forward and the analytic gradients against NumPy in float64."""
    rng = np.random.RandomState(4)
    C = 128
    z = rng.standard_normal((33, 16, 32, C)) * 1.5 + 2    # 8.25 MiB of float32
    gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    alpha = rng.uniform(-0.3, 0.5, C)
    eps = 1e-5
    arrays = [z, gamma, beta] + ([alpha] if act else [])

    def op(*xs):
        stats = [mx.nd.zeros(C), mx.nd.ones(C)]
        return mx.nd.fr_bn_act(*xs, *stats, eps=eps, momentum=0.9, act=act)[0]

    y, grads, dy = _run(op, arrays)
    flat = z.astype("float32").astype("f8").reshape(-1, C)
    R = flat.shape[0]
    inv = 1 / np.sqrt(flat.var(0) + eps)
    xhat = (flat - flat.mean(0)) * inv
    u = xhat * gamma + beta
    dyf = dy.astype("float32").astype("f8").reshape(-1, C)
    g = np.where(u > 0, dyf, dyf * alpha) if act else dyf
    _close(y.reshape(-1, C), np.where(u > 0, u, alpha * u) if act else u)
    dbeta, dgamma = g.sum(0), (g * xhat).sum(0)
    _close(grads[0].reshape(-1, C), gamma * inv / R * (R * g - dbeta - xhat * dgamma),
           rtol=1e-4)
    _close(grads[1], dgamma, rtol=1e-4)
    _close(grads[2], dbeta, rtol=1e-4)
    if act:
        _close(grads[3], (dyf * np.minimum(u, 0)).sum(0), rtol=1e-4)


def test_operators_reject_bad_shapes():
    with pytest.raises(mx.MXNetError, match="multiples of 32"):
        mx.nd.fr_pw_conv(mx.nd.zeros((1, 2, 2, 48)), mx.nd.zeros((64, 48, 1, 1))).wait_to_read()
    with pytest.raises(mx.MXNetError, match="multiple of 16"):
        mx.nd.fr_dw_conv(mx.nd.zeros((1, 4, 4, 24)), mx.nd.zeros((24, 1, 3, 3)),
                         pad=1).wait_to_read()
    with pytest.raises(mx.MXNetError, match="act must be 0"):
        mx.nd.fr_bn_act(*[mx.nd.zeros(16)] * 5, act=2).wait_to_read()


def _grads_and_stats(net, fn, x, head):
    with autograd.record():
        y = fn(x)
    y.backward(head)
    params = net.collect_params()
    return y.asnumpy(), {k: (p.grad() if p.grad_req != "null" else p.data()).asnumpy()
                         for k, p in params.items()}


def _xavier_net(backbone="mobilefacenet"):
    """Xavier weights, BatchNorm/PReLU terms away from (1, 0, 0.25). (With
    MSRAPrelu weights and slopes near 0, some channels of a batch of 4 are
    nearly constant and BatchNorm amplifies float32 rounding ~1e3 times, in
    MXNet's own pass as much as in this one.)"""
    mx.random.seed(0)
    net = get_model(backbone)
    net.initialize(mx.init.Xavier())
    rng = np.random.RandomState(1)
    for name, p in net.collect_params().items():
        if name.endswith(("gamma", "alpha")):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif name.endswith("beta"):
            p.set_data(mx.nd.array(rng.uniform(-0.3, 0.3, p.shape)))
    return net


@pytest.mark.parametrize("hybridize,backbone", [(False, "mobilefacenet"),
                                                (True, "mobilefacenet"),
                                                (True, "mobilefacenet_512")])
def test_view_matches_the_network_in_float64(hybridize, backbone):
    """Embedding, every parameter gradient and every running statistic after
    one training pass, against MXNet's float64 evaluation of the network:
    at least as close to it as MXNet's own float32 pass."""
    net = _xavier_net(backbone)
    x = np.random.RandomState(1).uniform(-1, 1, (4, 3, 112, 112))
    dim = 512 if backbone == "mobilefacenet_512" else 128
    head = np.random.RandomState(2).standard_normal((4, dim))
    saved = {k: p.data().asnumpy() for k, p in net.collect_params().items()}

    def reset(dtype):
        for k, p in net.collect_params().items():
            p.set_data(mx.nd.array(saved[k], dtype=dtype))

    view = NativeTrainingView(net)
    if hybridize:
        view.hybridize(static_alloc=True)
    args = mx.nd.array(x), mx.nd.array(head)
    y, got = _grads_and_stats(net, view, *args)
    reset("float32")
    _, mx32 = _grads_and_stats(net, net, *args)
    net.cast("float64")
    reset("float64")
    ry, ref = _grads_and_stats(net, net, mx.nd.array(x, dtype="float64"),
                               mx.nd.array(head, dtype="float64"))
    _close(y, ry, rtol=1e-4)
    top = max(np.abs(v).max() for k, v in ref.items() if not k.endswith("running_var"))
    errs = []
    for k, v in ref.items():
        # the betas of BatchNorms followed (through linear layers) by another
        # BatchNorm have a gradient of exactly zero: compare those absolutely
        scale = max(np.abs(v).max(), 1e-3 * top if k.endswith("beta") else 0.0)
        err, err32 = (np.abs(a[k] - v).max() / scale for a in (got, mx32))
        assert err <= 3 * err32 + 1e-4, (k, err, err32)
        errs.append(err)
    assert np.median(errs) < 2e-5
    changed = [k for k in ref if k.endswith("running_mean") and
               np.abs(ref[k] - saved[k]).max() > 1e-4]
    assert len(changed) > 40   # the statistics were really updated


def test_view_outside_training_is_the_network():
    net = randomise_backbone(get_model("mobilefacenet"), 3)
    x = mx.nd.array(np.random.RandomState(4).uniform(-1, 1, (2, 3, 112, 112)))
    view = NativeTrainingView(net)
    np.testing.assert_array_equal(view(x).asnumpy(), net(x).asnumpy())
    with pytest.raises(ValueError, match=r"112, 112"):
        with autograd.record():
            view(mx.nd.zeros((2, 3, 96, 96)))


def test_support_and_reasons():
    assert native_training_support(get_model("mobilefacenet")) == (True, "")
    assert native_training_support(get_model("mobilefacenet_512")) == (True, "")
    ok, why = native_training_support(get_model("iresnet18"))
    assert not ok and "MobileFaceNet" in why
    with pytest.raises(ValueError, match="not a MobileFaceNet"):
        NativeTrainingView(get_model("iresnet18"))


def _trainer(engine, backbone="mobilefacenet", lr=0.05, **kw):
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (16, 3, 112, 112)).astype("float32")
    y = rng.randint(0, 10, 16)
    cfg = TrainConfig(backbone=backbone, num_classes=10, batch_size=8, max_iters=3,
                      lr=lr, checkpoint_every=0, progress=False, engine=engine,
                      out_dir=tempfile.mkdtemp(prefix="native-train-"), **kw)
    return FaceTrainer(cfg, ArrayBatches(X, y, 8, shuffle=False))


def test_trainer_native_engine_trains_every_parameter():
    """The native engine starts from the same loss as MXNet's operators,
    updates every backbone parameter and running statistic through the
    trainer, and lowers the loss on a fixed batch.

    (Exact agreement over several steps is not a useful test here: the
    gradients of a fresh network on a batch of 8 are ill-conditioned in
    float32 -- both engines are off by 2-6 % from a float64 evaluation on the
    worst layers, MXNet's more -- so trajectories drift apart by a few
    percent. Correctness is checked against float64 above.)"""
    first = {}
    for engine in ("mxnet", "native"):   # the native trainer last: used below
        tr = _trainer(engine, lr=0.01)
        assert tr.engine == engine
        X, y = tr.data.next_batch()
        tr.prepare(X)
        start = {k: p.data().asnumpy() for k, p in tr.net.collect_params().items()}
        first[engine] = tr.train_step(X, y)
    later = [tr.train_step(X, y) for _ in range(4)]
    assert abs(first["native"] - first["mxnet"]) <= 1e-5 * abs(first["mxnet"])
    assert later[-1] < first["native"]
    for k, p in tr.net.collect_params().items():
        if p.grad_req != "null" or "running" in k:
            # (the output BatchNorm has no gamma: fixed at 1)
            moved = np.abs(p.data().asnumpy() - start[k]).max()
            assert moved > 0 or k.endswith("batchnorm0_gamma"), k


def test_trainer_engine_choice():
    assert _trainer("auto").engine == "native"
    tr = _trainer("auto", backbone="iresnet18")
    assert tr.engine == "mxnet" and "MobileFaceNet" in tr.engine_reason
    with pytest.raises(ValueError, match="engine='native' cannot be used"):
        _trainer("native", backbone="iresnet18")
    with pytest.raises(ValueError, match="engine must be"):
        _trainer("fast")


def test_native_engine_two_contexts_and_exact_resume(tmp_path):
    """Two CPU contexts keep identical replicas; a run stopped after 2
    iterations and resumed from its checkpoint logs the same losses as an
    uninterrupted one (the operators are deterministic)."""
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (32, 3, 112, 112)).astype("float32")
    y = rng.randint(0, 10, 32)

    def run(out, max_iters, resume=False):
        cfg = TrainConfig(backbone="mobilefacenet", num_classes=10, batch_size=8,
                          max_iters=4, lr=0.01, checkpoint_every=2, progress=False,
                          ctx=["cpu(0)", "cpu(1)"], kvstore="device",
                          log_every=1, out_dir=str(tmp_path / out), resume=resume)
        tr = FaceTrainer(cfg, ArrayBatches(X, y, 8, seed=1))
        assert tr.engine == "native"
        tr.fit(max_iters=max_iters)
        return tr

    full = run("full", 4)
    for p in full.net.collect_params().values():
        if p.grad_req != "null":   # (running statistics are per context)
            a, b = (d.asnumpy() for d in p.list_data())
            np.testing.assert_array_equal(a, b)
    run("cut", 2)
    resumed = run("cut", 4, resume=True)
    assert resumed.iteration == 4
    from fr_lib.train import read_log
    losses = [{r["iteration"]: r["loss"] for r in read_log(t.log_path)["train"]}
              for t in (full, resumed)]
    assert sorted(losses[1]) == [1, 2, 3, 4]
    assert read_log(full.log_path)["start"][0]["engine"] == "native"
    np.testing.assert_allclose([losses[1][i] for i in (3, 4)],
                               [losses[0][i] for i in (3, 4)], rtol=1e-6)

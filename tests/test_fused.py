"""The fused MobileFaceNet operator (fr_lib.model_zoo.fused, fr_fused.cc).

References: the plain, imperative Gluon network with the same parameters
(MXNet's own convolution, BatchNorm and PReLU operators), and for single
layers a direct NumPy convolution.
"""
import mxnet as mx
import numpy as np
import pytest

from fr_lib import ops
from fr_lib.model_zoo import MobileFaceNet, get_model
from fr_lib.model_zoo.fused import UnsupportedNetwork, fuse_network
from fr_lib.model_zoo.inference import prepare_for_inference
from numeric_helpers import randomise_backbone

pytestmark = pytest.mark.skipif(not ops.available(),
                                reason="fr_lib native operators unavailable")


def _randomise(net, seed):
    """PReLU slopes of any sign and BN terms away from (0, 1), so that folding
    and every PReLU branch matter."""
    return randomise_backbone(net, seed, alpha_range=(-0.5, 1.5), shift=0.2)


def _check(net, x):
    ref = net(x).asnumpy()  # imperative: MXNet's own operators
    out = fuse_network(net)(x).asnumpy()
    assert out.shape == ref.shape
    scale = np.abs(ref).max()
    assert scale > 1e-3
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5 * scale)


def _input(shape, seed=1):
    return mx.nd.array(np.random.RandomState(seed).uniform(-1, 1, shape))


@pytest.mark.parametrize("name, kwargs, shape", [
    ("mobilefacenet", {}, (3, 3, 112, 112)),
    # InsightFace's mbf: a second convolution with 64 groups of 2 channels
    # (the pairs path), one image per thread and one image shared by both
    ("mobilefacenet_512", {}, (2, 3, 112, 112)),
    ("mobilefacenet_512", {}, (1, 3, 112, 112)),
    # embedding not a multiple of 32 (partial GEMM panel); 128x128 input
    # leaves a 2x2 map after the GDConv, flattened in NCHW order
    ("mobilefacenet", dict(embedding_size=100), (5, 3, 128, 128)),
    # gluon's nn.PReLU instead of fr_lib's
    ("mobilefacenet", dict(fast_prelu=False), (1, 3, 112, 112)),
])
def test_fused_equals_plain_network(name, kwargs, shape):
    x = _input(shape)
    _check(_randomise(get_model(name, **kwargs), 0), x)


@pytest.mark.parametrize("stem_groups", [12, 6])
def test_odd_widths_and_strides(stem_groups):
    # Channel counts that are not multiples of 16 (vector tails in the
    # depthwise and pairs code), row counts not multiples of 8 (GEMM row
    # tails), a grouped second convolution with 2 channels per group (the
    # pairs path, 12 groups) or 4 (the generic grouped path, 6 groups), a
    # residual stage.
    net = MobileFaceNet(stages=[(40, 24, 2, 2), (56, 40, 3, 1)], embedding_size=20,
                        stem_channels=24, stem_groups=stem_groups, head_channels=72)
    x = _input((7, 3, 42, 38), seed=3)
    _check(_randomise(net, 2), x)
    assert fuse_network(net).program.split()[14] == ("4" if stem_groups == 12 else "3")


def test_many_images_across_threads():
    net = get_model("mobilefacenet")
    x = _input((9, 3, 112, 112), seed=4)
    _randomise(net, 5)
    fused = fuse_network(net)
    ref = net(x).asnumpy()
    whole = fused(x).asnumpy()
    one_by_one = np.concatenate([fused(x[i:i + 1]).asnumpy() for i in range(9)])
    np.testing.assert_array_equal(whole, one_by_one)  # no state between images
    np.testing.assert_allclose(whole, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())


def test_parameters_are_a_snapshot():
    net = get_model("mobilefacenet")
    x = _input((1, 3, 112, 112))
    _randomise(net, 6)
    fused = fuse_network(net)
    before = fused(x).asnumpy()
    net.features[0].bn.beta.set_data(net.features[0].bn.beta.data() + 1)
    np.testing.assert_array_equal(fused(x).asnumpy(), before)
    assert not np.allclose(fuse_network(net)(x).asnumpy(), before)


def _conv_numpy(x, w, stride, pad, groups):
    """Direct NCHW grouped convolution (float64)."""
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, cout, ho, wo))
    go = cout // groups
    for co in range(cout):
        g = co // go
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cin_g:(g + 1) * cin_g,
                           i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[:, co, i, j] = (patch * w[co]).sum(axis=(1, 2, 3))
    return out


def test_single_layers_against_numpy():
    # A hand-written program: stem 5x5 stride 2 pad 2 (3 -> 40, PReLU), a
    # depthwise 3x3 stride 2 (40, PReLU), a 1x1 GEMM 40 -> 40 plus its own
    # input (save and residual on one layer), against NumPy convolutions.
    rng = np.random.RandomState(7)
    x = rng.uniform(-1, 1, (2, 3, 13, 11))
    w1, b1, a1 = rng.randn(40, 3, 5, 5) * 0.2, rng.randn(40), rng.uniform(-1, 2, 40)
    w2, b2, a2 = rng.randn(40, 1, 3, 3) * 0.3, rng.randn(40), rng.uniform(-1, 2, 40)
    w3, b3 = rng.randn(40, 40, 1, 1) * 0.2, rng.randn(40)
    prelu = lambda v, a: np.where(v > 0, v, v * a.reshape(1, -1, 1, 1))
    y1 = prelu(_conv_numpy(x, w1, 2, 2, 1) + b1.reshape(1, -1, 1, 1), a1)
    y2 = prelu(_conv_numpy(y1, w2, 2, 1, 40) + b2.reshape(1, -1, 1, 1), a2)
    y3 = _conv_numpy(y2, w3, 1, 0, 1) + b3.reshape(1, -1, 1, 1) + y2

    def panels(w):  # [ceil(cout/32)][K][32], zero columns
        m = np.zeros((64, w.shape[1] * w.shape[2] * w.shape[3]))
        m[:40] = w.reshape(40, -1)
        return m.reshape(2, 32, -1).transpose(0, 2, 1)

    pad64 = lambda v: np.concatenate([v, np.zeros(24)])
    chunks = [panels(w1), pad64(b1), pad64(a1), w2.reshape(40, 9).T, b2, a2,
              panels(w3), pad64(b3)]
    offsets = np.cumsum([0] + [c.size for c in chunks])
    o = offsets
    program = [1, 5, 5, 2, 2, 1, 3, 40, 1, 0, 0, o[0], o[1], o[2],
               2, 3, 3, 2, 1, 40, 40, 40, 1, 0, 0, o[3], o[4], o[5],
               0, 1, 1, 1, 0, 1, 40, 40, 0, 1, 1, o[6], o[7], 0]
    params = mx.nd.array(np.concatenate([c.ravel() for c in chunks]))
    out = mx.nd.fr_fused_net(mx.nd.array(x), params,
                             program=" ".join(str(int(v)) for v in program)).asnumpy()
    np.testing.assert_allclose(out, y3.reshape(2, -1), rtol=1e-4, atol=1e-4)


def test_bad_programs_are_rejected_with_the_layer():
    x = mx.nd.zeros((1, 3, 16, 16))
    params = mx.nd.zeros((10000,))
    with pytest.raises(mx.base.MXNetError, match="integers"):
        mx.nd.fr_fused_net(x, params, program="1 3 3 x").wait_to_read()
    stem = "1 3 3 2 1 1 3 32 0 0 0 0 1000 0"
    with pytest.raises(mx.base.MXNetError, match="layer 0: cin"):
        mx.nd.fr_fused_net(mx.nd.zeros((1, 4, 16, 16)), params, program=stem).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="offsets outside params"):
        mx.nd.fr_fused_net(x, mx.nd.zeros((100,)), program=stem).wait_to_read()
    gemm_3x3 = stem + " 0 3 3 1 1 1 32 32 0 0 0 0 0 0"
    with pytest.raises(mx.base.MXNetError, match="layer 1: a GEMM layer"):
        mx.nd.fr_fused_net(x, params, program=gemm_3x3).wait_to_read()
    residual = stem + " 0 1 1 1 0 1 32 32 0 0 1 0 0 0"
    with pytest.raises(mx.base.MXNetError, match="residual without"):
        mx.nd.fr_fused_net(x, params, program=residual).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="smaller than the kernel"):
        mx.nd.fr_fused_net(mx.nd.zeros((1, 3, 2, 2)), params,
                           program="1 5 5 1 0 1 3 32 0 0 0 0 1000 0").wait_to_read()


def test_unsupported_networks():
    net = get_model("iresnet18")
    net.initialize()
    with pytest.raises(UnsupportedNetwork, match="MobileFaceNet"):
        fuse_network(net)
    with pytest.raises(ValueError, match="engine='fused' is not possible"):
        prepare_for_inference(net, engine="fused")
    plain = get_model("mobilefacenet")
    plain.initialize()
    with pytest.raises(TypeError):
        fuse_network(plain)(np.zeros((1, 3, 112, 112), np.float32))
    with pytest.raises(ValueError, match="float32"):
        fuse_network(plain)(mx.nd.zeros((1, 3, 112, 112), dtype="float64"))


def test_prepared_network_uses_fused_operator_and_falls_back_for_symbols():
    net = get_model("mobilefacenet")
    x = _input((2, 3, 112, 112), seed=8)
    _randomise(net, 9)
    ref = net(x).asnumpy()
    fast = prepare_for_inference(net, x, engine="fused")
    assert fast.inference_backend == "fused"
    np.testing.assert_allclose(fast(x).asnumpy(), ref, rtol=1e-4,
                               atol=2e-5 * np.abs(ref).max())
    # a batch of another size needs no new graph
    np.testing.assert_allclose(fast(x[:1]).asnumpy(), ref[:1], rtol=1e-4,
                               atol=2e-5 * np.abs(ref).max())
    sym = fast(mx.sym.var("data"))  # symbols go through the Gluon graph
    assert isinstance(sym, mx.sym.Symbol)
    assert not any(n["op"] == "fr_fused_net"
                   for n in __import__("json").loads(sym.tojson())["nodes"])


def test_evaluator_embeds_mobilefacenet_with_a_fused_snapshot(monkeypatch):
    from fr_lib.metrics.evaluator import VerificationEvaluator
    from fr_lib.model_zoo import fused as fused_module
    net = get_model("mobilefacenet")
    images = np.random.RandomState(10).uniform(-1, 1, (6, 3, 112, 112)).astype(np.float32)
    _randomise(net, 11)
    calls = []
    real = fused_module.fuse_network
    monkeypatch.setattr(fused_module, "fuse_network",
                        lambda n: calls.append(n) or real(n))
    auto = VerificationEvaluator({"s": (images, [1, 0, 1])}, batch_size=4, progress=False)
    plain = VerificationEvaluator({"s": (images, [1, 0, 1])}, batch_size=4, progress=False,
                                  engine="mxnet")
    emb, flipped = auto.embed(net, images)
    assert len(calls) == 1  # one snapshot per embedded set
    ref, ref_flipped = plain.embed(net, images)
    assert len(calls) == 1
    for a, b in ((emb, ref), (flipped, ref_flipped)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * np.abs(b).max())
    with pytest.raises(ValueError, match="engine"):
        VerificationEvaluator({"s": (images, [1, 0, 1])}, engine="onnx")

"""Face backbones, the fast PReLU and the parameter / multiply-add counter.

Published figures used below (112x112 input):

- MobileFaceNet paper (arXiv 1804.07573, Table 2): 0.99 M parameters,
  221 M multiply-adds (128-d embedding).
- InsightFace's released MXNet models as measured by OpenVINO's Open Model
  Zoo model cards: LResNet50E-IR 43.576 M parameters, 12.637 GFLOPs;
  LResNet100E-IR 65.131 M, 24.209 GFLOPs (FLOPs = 2 x multiply-adds).
- Residual Attention Network (arXiv 1704.06904, Table 5, 224x224
  ImageNet): Attention-56 31.9 M parameters, 6.3 G multiply-adds;
  Attention-92 51.3 M, 10.4 G.
"""
import warnings
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from fr_lib.model_zoo import (IResNet, PReLU, count_flops, count_params,
                              get_model, get_model_list, make_prelu, model_table)

FACE_MODELS = [n for n in get_model_list() if not n.startswith("lenet")]
EMBEDDING = {"mobilefacenet": 128, "quickfacenet": 64}


def _sane_init(net, seed=0):
    """He-style random weights, BN gammas drawn around 1: every branch of a
    small network then contributes, unlike the zero-initialised residuals."""
    mx.random.seed(seed)
    net.initialize(mx.init.MSRAPrelu())
    rng = np.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith("gamma"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif name.endswith(("beta", "running_mean")):
            p.set_data(mx.nd.array(rng.uniform(-0.1, 0.1, p.shape)))
        elif name.endswith("running_var"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
        elif name.endswith("alpha"):
            p.set_data(mx.nd.array(rng.uniform(0.0, 0.5, p.shape)))
        elif name.endswith("weight") and "dense" not in name:
            # zero_init_residual left some convolutions at 0
            fan_in = int(np.prod(p.shape[1:]))
            p.set_data(mx.nd.array(rng.normal(0, np.sqrt(1.0 / fan_in), p.shape)))
    return net


# --------------------------------------------------------------- fast PReLU

def _pair(channels, alpha, ndim=4):
    fast, ref = PReLU(in_channels=channels, ndim=ndim), nn.PReLU(in_channels=channels)
    for net in (fast, ref):
        net.initialize()
        net.alpha.set_data(mx.nd.array(alpha))
    return fast, ref


def test_prelu_value_matches_definition_and_gluon():
    rng = np.random.RandomState(0)
    alpha = np.array([0.25, -0.5, 1.7], dtype=np.float32)  # slopes > 1 and < 0 too
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    fast, ref = _pair(3, alpha)
    expected = np.where(x >= 0, x, alpha.reshape(1, 3, 1, 1) * x)
    np.testing.assert_allclose(fast(mx.nd.array(x)).asnumpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ref(mx.nd.array(x)).asnumpy(), expected, rtol=1e-6)


def test_prelu_gradients_match_gluon_prelu():
    rng = np.random.RandomState(1)
    alpha = rng.uniform(0, 0.5, 8).astype(np.float32)
    x = mx.nd.array(rng.normal(size=(3, 8, 5, 5)))
    dy = mx.nd.array(rng.normal(size=(3, 8, 5, 5)))
    grads = []
    for net in _pair(8, alpha):
        x.attach_grad()
        with autograd.record():
            y = net(x)
        y.backward(dy)
        grads.append((x.grad.asnumpy(), net.alpha.grad().asnumpy()))
    (gx, ga), (rx, ra) = grads
    # the fast form's slope for x < 0 is 1 - (1 - alpha): float32 rounding
    np.testing.assert_allclose(gx, rx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ga, ra, rtol=1e-5, atol=1e-5)
    # d/dalpha = sum of x * dy where x < 0, per channel
    xn, dyn = x.asnumpy(), dy.asnumpy()
    np.testing.assert_allclose(ga, (np.minimum(xn, 0) * dyn).sum(axis=(0, 2, 3)),
                               rtol=1e-5, atol=1e-5)


def test_prelu_gradients_match_finite_differences():
    rng = np.random.RandomState(2)
    x = rng.normal(size=(2, 3, 2, 2))
    x[np.abs(x) < 0.05] = 0.3  # stay away from the kink at 0
    alpha = np.array([0.1, 0.25, 0.7])
    w = rng.normal(size=x.shape)  # loss = sum(w * prelu(x))
    net = PReLU(in_channels=3)
    net.initialize()
    net.cast("float64")
    net.alpha.set_data(mx.nd.array(alpha, dtype="float64"))
    xs = mx.nd.array(x, dtype="float64")
    xs.attach_grad()
    with autograd.record():
        loss = (net(xs) * mx.nd.array(w, dtype="float64")).sum()
    loss.backward()

    def f(x_, a_):
        return (w * np.where(x_ >= 0, x_, a_.reshape(1, 3, 1, 1) * x_)).sum()

    eps = 1e-6
    num_x = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        num_x[idx] = (f(x + d, alpha) - f(x - d, alpha)) / (2 * eps)
    num_a = np.array([(f(x, alpha + eps * np.eye(3)[c]) - f(x, alpha - eps * np.eye(3)[c]))
                      / (2 * eps) for c in range(3)])
    np.testing.assert_allclose(xs.grad.asnumpy(), num_x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(net.alpha.grad().asnumpy(), num_a, rtol=1e-6, atol=1e-8)


def test_prelu_shared_slope_and_2d_input():
    x = mx.nd.array([[-2.0, 3.0], [4.0, -1.0]])
    shared = PReLU()
    shared.initialize()
    np.testing.assert_allclose(shared(x).asnumpy(), [[-0.5, 3.0], [4.0, -0.25]])
    per_feature, _ = _pair(2, np.array([0.5, 2.0], dtype=np.float32), ndim=2)
    per_feature.hybridize()
    np.testing.assert_allclose(per_feature(x).asnumpy(), [[-1.0, 3.0], [4.0, -2.0]])
    with pytest.raises(ValueError):
        PReLU(in_channels=0)


def test_prelu_parameters_are_interchangeable(tmp_path):
    ref = nn.PReLU(in_channels=4)
    ref.initialize()
    assert ref.alpha.data().asnumpy().tolist() == [0.25] * 4
    fast = PReLU(in_channels=4)
    fast.initialize()
    assert fast.alpha.shape == ref.alpha.shape
    assert fast.alpha.data().asnumpy().tolist() == [0.25] * 4
    ref.alpha.set_data(mx.nd.array([0.1, 0.2, 0.3, 0.4]))
    ref.save_parameters(str(tmp_path / "p.params"))
    fast.load_parameters(str(tmp_path / "p.params"))
    x = mx.nd.random.normal(shape=(2, 4, 3, 3))
    np.testing.assert_allclose(fast(x).asnumpy(), ref(x).asnumpy(), rtol=1e-6)
    assert isinstance(make_prelu(4, fast=False), nn.PReLU)
    assert isinstance(make_prelu(4), PReLU)


def test_fast_and_gluon_prelu_models_agree(tmp_path):
    fast = _sane_init(get_model("mobilefacenet"))
    slow = get_model("mobilefacenet", fast_prelu=False)
    fast.save_parameters(str(tmp_path / "m.params"))
    slow.load_parameters(str(tmp_path / "m.params"))
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 112, 112))
    np.testing.assert_allclose(fast(x).asnumpy(), slow(x).asnumpy(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ every model

@pytest.mark.parametrize("name", FACE_MODELS)
def test_every_face_model_runs_hybridized_and_exports(name, tmp_path):
    net = get_model(name)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(-1, 1, shape=(1, 3, 112, 112))
    out = net(x)
    assert out.shape == (1, EMBEDDING.get(name, 512))
    assert np.isfinite(out.asnumpy()).all()
    prefix = str(tmp_path / name)
    net.export(prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MXNet's imports(): "Cannot decide type"
        loaded = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                              prefix + "-0000.params")
    np.testing.assert_allclose(loaded(x).asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mobilefacenet", "mobilefacenet_512", "iresnet18",
                                  "se_lresnet18e"])
def test_hybridized_equals_imperative(name):
    net = _sane_init(get_model(name, embedding_size=64))
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 112, 112))
    imperative = net(x).asnumpy()
    assert imperative.shape == (2, 64) and imperative.std() > 1e-3
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Cannot decide type")  # MXNet's imports()
@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18", "attention_net56"])
def test_export_round_trip(name, tmp_path):
    net = _sane_init(get_model(name, embedding_size=32))
    net.hybridize()
    x = mx.nd.random.uniform(-1, 1, shape=(1, 3, 112, 112))
    expected = net(x).asnumpy()
    prefix = str(tmp_path / name)
    net.export(prefix)
    loaded = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                       prefix + "-0000.params")
    # on CPU the export writes fr_prelu as MXNet's LeakyReLU(prelu) (fr_lib.ops):
    # the same function, but MKL-DNN fuses the loaded graph differently, so
    # float32 rounding differs by a few ulps of the largest output
    scale = np.abs(expected).max()
    np.testing.assert_allclose(loaded(x).asnumpy(), expected, rtol=1e-5,
                               atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["mobilefacenet_512", "iresnet18"])
def test_training_step_gives_finite_gradients(name):
    net = _sane_init(get_model(name))
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 112, 112))
    with autograd.record():
        loss = (net(x) ** 2).sum()
    loss.backward()
    for pname, p in net.collect_params().items():
        if p.grad_req != "null":
            assert np.isfinite(p.grad().asnumpy()).all(), pname


def test_bad_arguments():
    with pytest.raises(ValueError, match="embedding_size"):
        get_model("mobilefacenet", embedding_size=0)
    with pytest.raises(ValueError, match="units"):
        IResNet([2, 2, 2])


# ----------------------------------------------------- published figures

def _mobilefacenet_by_hand(stem, stem_groups, stages, emb):
    """(params without BN/PReLU, MAdds) from a written-out layer list."""
    params, madds, side, c = 0, 0, 56, stem

    def conv(cin, cout, k, groups, hw):
        w = cout * (cin // groups) * k * k
        return w, w * hw * hw

    for w, m in [conv(3, stem, 3, 1, 56), conv(stem, stem, 3, stem_groups, 56)]:
        params, madds = params + w, madds + m
    for width, out, n, stride in stages:
        for i in range(n):
            s = stride if i == 0 else 1
            layers = [conv(c, width, 1, 1, side)]
            side //= s
            layers += [conv(width, width, 3, width, side), conv(width, out, 1, 1, side)]
            for w, m in layers:
                params, madds = params + w, madds + m
            c = out
    for w, m in [conv(c, 512, 1, 1, 7), conv(512, 512, 7, 512, 1), (512 * emb, 512 * emb)]:
        params, madds = params + w, madds + m
    return params, madds


def test_mobilefacenet_matches_paper():
    net = get_model("mobilefacenet")
    params, madds = count_params(net), count_flops(net)
    # Paper: 0.99 M and 221 M. Parameters within 2 %: whether BN and PReLU
    # (26 k of them here) are counted is not stated.
    assert abs(params / 0.99e6 - 1) < 0.02
    assert abs(madds / 221e6 - 1) < 0.005
    # Table 1 written out layer by layer gives the same numbers exactly.
    stages = [(128, 64, 5, 2), (256, 128, 1, 2), (256, 128, 6, 1),
              (512, 128, 1, 2), (256, 128, 2, 1)]
    hand_params, hand_madds = _mobilefacenet_by_hand(64, 64, stages, 128)
    assert madds == hand_madds
    prelu_and_bn = 3 * (64 + 64 + sum(n * (2 * w) for w, _, n, _ in stages) + 512) \
        + 2 * (sum(n * o for _, o, n, _ in stages) + 512) + 2 * 128
    assert params == hand_params + prelu_and_bn


def test_mobilefacenet_512_is_insightface_mbf():
    net = get_model("mobilefacenet_512")
    # arcface_torch's MobileFaceNet(scale=2, blocks=(1, 4, 6, 2)) layer list
    stages = [(128, 128, 1, 2), (128, 128, 4, 1), (256, 256, 1, 2),
              (256, 256, 6, 1), (512, 256, 1, 2), (256, 256, 2, 1)]
    hand_params, hand_madds = _mobilefacenet_by_hand(128, 64, stages, 512)
    assert count_flops(net) == hand_madds
    assert 0.43e9 < hand_madds < 0.45e9  # the "0.45 G" InsightFace quotes
    assert 2.0e6 < count_params(net) < 2.1e6 and count_params(net) > hand_params


@pytest.mark.parametrize("name, params, madds", [
    ("iresnet50", 43.576e6, 12.637e9 / 2),
    ("iresnet100", 65.131e6, 24.209e9 / 2),
])
def test_iresnet_matches_insightface(name, params, madds):
    net = get_model(name)
    # 0.5 %: both figures come from the same released models, counted with
    # BN/PReLU; the residual gap is BN's fixed gamma and biases.
    assert abs(count_params(net) / params - 1) < 0.005
    # OpenVINO counts BN, PReLU and additions too, we count only products.
    assert abs(count_flops(net) / madds - 1) < 0.01


def test_iresnet_head_dominates_as_designed():
    # E head: BN(512) + FC(512*7*7 -> 512, bias) + BN(512, fixed gamma)
    head = get_model("iresnet18").output
    assert count_params(head, input_shape=(1, 512, 7, 7)) == 2 * 512 + 25088 * 512 + 512 + 2 * 512
    assert count_flops(head, input_shape=(1, 512, 7, 7)) == 25088 * 512


def _se_params(c):
    r = c // 16
    return c * r + r + r + r * c + c  # conv+bias, PReLU slopes, conv+bias


@pytest.mark.parametrize("name, units", [("se_lresnet18e", [2, 2, 2, 2]),
                                         ("se_lresnet50e", [3, 4, 14, 3]),
                                         ("se_lresnet101e", [3, 4, 23, 3])])
def test_se_lresnet_is_iresnet_plus_se_gates(name, units):
    net, plain = get_model(name), IResNet(units)
    extra = sum(n * _se_params(c) for n, c in zip(units, [64, 128, 256, 512]))
    assert count_params(net) == count_params(plain) + extra
    assert _se_params(512) == 33344
    # The gates multiply-add only 1x1 maps: < 0.1 % more work.
    assert 0 < count_flops(net) - count_flops(plain) < 1e-3 * count_flops(plain)


@pytest.mark.parametrize("name, params, madds", [("attention_net56", 31.9e6, 6.3e9),
                                                 ("attention_net92", 51.3e6, 10.4e9)])
def test_attention_net_matches_paper(name, params, madds):
    net = get_model(name)
    ours = count_params(net)
    prelu = sum(int(np.prod(p.shape)) for k, p in net.collect_params().items()
                if k.endswith("alpha"))
    head = count_params(net.output, input_shape=(1, 512, 7, 7))
    reduce = 2048 * 512 + 2 * 512  # 1x1 conv + BN before the head
    # Back to the paper's ImageNet network: ReLU instead of PReLU, 7x7
    # stem instead of 3x3, a 1000-way FC instead of reduction + E head.
    imagenet = ours - prelu - head - reduce + 64 * 3 * (49 - 9) + 2048 * 1000 + 1000
    # 3 %: the paper does not list its mask branch unit by unit; ours follows
    # its text (r=1 units between poolings, one skip unit per scale).
    assert abs(imagenet / params - 1) < 0.03
    # The attention stages run at 56/28/14 as in the paper; the face stem
    # and head differ by ~0.1 G, hence 5 %.
    assert abs(count_flops(net) / madds - 1) < 0.05


# ---------------------------------------------------------- the counters

class _Tiny(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(8, 3, padding=1, in_channels=3)
            self.bn = nn.BatchNorm(in_channels=8)
            self.dw = nn.Conv2D(8, 3, strides=2, padding=1, groups=8, in_channels=8)
            self.up = nn.Conv2DTranspose(4, 2, strides=2, in_channels=8)
            self.fc = nn.Dense(5, in_units=4 * 10 * 10)

    def hybrid_forward(self, F, x):
        return self.fc(self.up(self.dw(self.bn(self.conv(x)))))


def test_count_flops_by_hand():
    net = _Tiny()
    got = count_flops(net, input_shape=(2, 3, 10, 10), by_op=True)
    conv = 8 * 3 * 3 * 3 * 10 * 10          # every output pixel: 3x3x3 products
    dw = 8 * 1 * 3 * 3 * 5 * 5              # depthwise, stride 2 -> 5x5
    up = 8 * 4 * 2 * 2 * 5 * 5              # each input pixel scatters a 2x2x4 kernel
    fc = 400 * 5
    assert got["Convolution"] == conv + dw
    assert got["Deconvolution"] == up
    assert got["FullyConnected"] == fc
    assert got["BatchNorm"] == 8 * 10 * 10   # reported, not in the total
    assert got["total"] == conv + dw + up + fc == count_flops(net, input_shape=(1, 3, 10, 10))


def test_count_params_by_hand():
    net = _Tiny()
    expected = (8 * 27 + 8) + 2 * 8 + (8 * 9 + 8) + (8 * 4 * 4 + 4) + (400 * 5 + 5)
    assert count_params(net, input_shape=(1, 3, 10, 10)) == expected
    assert count_params(net, input_shape=(1, 3, 10, 10), include_aux=True) == expected + 2 * 8
    net.initialize()  # same count from the initialised parameters
    assert expected + 2 * 8 == sum(p.data().size for p in net.collect_params().values())


def test_model_table():
    rows = model_table(["mobilefacenet", "iresnet18"])
    assert [r.name for r in rows] == ["mobilefacenet", "iresnet18"]
    assert rows[0].embedding == 128 and rows[1].embedding == 512
    net = get_model("iresnet18")
    assert rows[1].params_m == count_params(net) / 1e6
    assert rows[1].madds_g == count_flops(net) / 1e9
    assert model_table(["mobilefacenet"], embedding_size=256)[0].embedding == 256
    names = [r.name for r in model_table()]
    assert names.index("iresnet18") < names.index("iresnet100")
    assert set(names) == set(FACE_MODELS)

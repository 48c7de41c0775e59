"""Feature losses on raw embeddings (fr_lib.loss.regularizer): L2-Softmax,
Center, Ring and L-GM losses against NumPy references written from the
papers' formulas, central finite differences, hand calculations and the
paper's centre-update rule computed by hand."""
import math

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet: compatibility shims)
import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import HybridBlock

from fr_lib.loss import (CenterLoss, L2SoftmaxLoss, LGMLoss, RingLoss,
                         l2softmax_alpha_lower_bound)
from numeric_helpers import numeric_grad

L2_EPS, RING_EPS = 1e-10, 1e-12  # the documented eps under the square roots


# ---- NumPy references (float64, straight from the formulas) -----------------

def ref_ce(logits, labels):
    """Softmax cross-entropy per row."""
    rows = np.arange(len(labels))
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return lse - logits[rows, labels]


def ref_l2softmax_logits(x, weight, bias, alpha):
    z = alpha * x / np.sqrt((x ** 2).sum(axis=1, keepdims=True) + L2_EPS)
    return z @ weight.T + (0.0 if bias is None else bias)


def ref_center(x, labels, centers):
    return 0.5 * ((x - centers[labels]) ** 2).sum(axis=1)


def ref_ring(x, radius):
    return 0.5 * (np.sqrt((x ** 2).sum(axis=1) + RING_EPS) - radius) ** 2


def ref_lgm_terms(x, means, var):
    """d_k = ½ (x − μ_k)ᵀ diag(var_k)⁻¹ (x − μ_k) by explicit differences,
    and ½ log|Λ_k| from the variances."""
    diff = x[:, None, :] - means[None, :, :]
    d = 0.5 * (diff ** 2 / var[None]).sum(axis=2)
    return d, 0.5 * np.log(var).sum(axis=1)


def ref_lgm(x, labels, means, var, alpha, lam):
    rows = np.arange(len(labels))
    d, half_logdet = ref_lgm_terms(x, means, var)
    scale = np.ones_like(d)
    scale[rows, labels] += alpha       # the true class's distance × (1 + α)
    logits = -d * scale - half_logdet[None, :]
    return ref_ce(logits, labels) + lam * (d[rows, labels] + half_logdet[labels])


# ---- building losses with random parameters ---------------------------------

def _params(loss):
    """Parameter values as float64 NumPy arrays, by short name."""
    out = {}
    for name, p in loss.collect_params().items():
        for short in ("weight", "bias", "centers", "radius", "means", "log_var"):
            if name.endswith(short):
                out[short] = p.data().asnumpy().astype(np.float64)
    return out


def reference(kind, loss, x, labels):
    p = _params(loss)
    if kind == "l2softmax":
        return ref_ce(ref_l2softmax_logits(x, p["weight"], p.get("bias"), loss.alpha), labels)
    if kind == "center":
        return ref_center(x, labels, p["centers"])
    if kind == "ring":
        return ref_ring(x, p["radius"][0])
    var = np.exp(p["log_var"]) if "log_var" in p else np.ones_like(p["means"])
    return ref_lgm(x, labels, p["means"], var, loss._alpha, loss._lambda)


# (id, kind, constructor, kwargs)
CASES = [
    ("l2softmax", "l2softmax", L2SoftmaxLoss, dict(alpha=6.0)),
    ("l2softmax-nobias", "l2softmax", L2SoftmaxLoss, dict(alpha=3.0, use_bias=False)),
    ("center", "center", CenterLoss, {}),
    ("center-paper", "center", CenterLoss, dict(update="paper", alpha=0.3)),
    ("ring", "ring", RingLoss, {}),
    ("lgm", "lgm", LGMLoss, {}),
    ("lgm-diagonal", "lgm", LGMLoss, dict(covariance="diagonal", alpha=0.3, lambda_lkd=0.1)),
]
IDS = [case[0] for case in CASES]


def build(cls, kwargs, num_classes, dim, dtype, seed):
    """The loss with random (not default) parameter values of dtype."""
    if cls is RingLoss:
        loss = RingLoss(**kwargs)
    else:
        loss = cls(num_classes, in_units=dim, **kwargs)
    loss.initialize()
    loss.cast(dtype)
    rng = np.random.RandomState(seed)
    for name, p in loss.collect_params().items():
        if name.endswith("radius"):
            value = np.array([1.3])
        elif name.endswith("log_var"):
            value = rng.uniform(-0.5, 0.5, size=p.shape)
        elif name.endswith("bias"):
            value = rng.normal(0, 0.5, size=p.shape)
        else:   # FC weights, centres, means
            value = rng.normal(0, 1, size=p.shape)
        p.set_data(mx.nd.array(value, dtype=dtype))
    return loss


def _inputs(batch, dim, num_classes, dtype, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(0, 1.5, size=(batch, dim)).astype(dtype)
    labels = rng.randint(0, num_classes, size=batch)
    return x, labels


def _call(loss, x, labels, dtype):
    return loss(mx.nd.array(x, dtype=dtype), mx.nd.array(labels, dtype=dtype))


def _value_and_grads(loss, x, labels, dtype):
    """Loss values, d(sum)/dx and d(sum)/dparam (train_mode=False: the
    paper centre update must not run during a check)."""
    xs = mx.nd.array(x, dtype=dtype)
    xs.attach_grad()
    with autograd.record(train_mode=False):
        out = loss(xs, mx.nd.array(labels, dtype=dtype))
    out.backward()
    grads = {name: p.grad().asnumpy() for name, p in loss.collect_params().items()
             if p.grad_req != "null"}
    return out.asnumpy(), xs.grad.asnumpy(), grads


# ---- forward against NumPy --------------------------------------------------

@pytest.mark.parametrize("dtype, rtol, atol", [(np.float32, 1e-5, 1e-5),
                                               (np.float64, 1e-10, 1e-12)])
@pytest.mark.parametrize("batch, dim, num_classes", [(1, 2, 3), (7, 5, 4), (16, 8, 10)])
@pytest.mark.parametrize("_, kind, cls, kwargs", CASES, ids=IDS)
def test_forward_matches_numpy(_, kind, cls, kwargs, batch, dim, num_classes, dtype,
                               rtol, atol):
    loss = build(cls, kwargs, num_classes, dim, dtype, seed=batch + dim)
    x, labels = _inputs(batch, dim, num_classes, dtype, seed=num_classes)
    got = _call(loss, x, labels, dtype)
    assert got.dtype == dtype and got.shape == (batch,)
    expected = reference(kind, loss, x.astype(np.float64), labels)
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=rtol, atol=atol)


def test_logits_match_numpy():
    x, labels = _inputs(9, 4, 5, np.float64, seed=1)
    loss = build(L2SoftmaxLoss, dict(alpha=5.0), 5, 4, np.float64, seed=2)
    p = _params(loss)
    np.testing.assert_allclose(loss.logits(mx.nd.array(x, dtype="float64")).asnumpy(),
                               ref_l2softmax_logits(x, p["weight"], p["bias"], 5.0),
                               rtol=1e-12)
    for covariance in ("identity", "diagonal"):
        loss = build(LGMLoss, dict(covariance=covariance), 5, 4, np.float64, seed=3)
        p = _params(loss)
        var = np.exp(p["log_var"]) if covariance == "diagonal" else np.ones((5, 4))
        d, half_logdet = ref_lgm_terms(x, p["means"], var)
        got = loss.logits(mx.nd.array(x, dtype="float64")).asnumpy()
        # no margin in the logits used for prediction
        np.testing.assert_allclose(got, -d - half_logdet, rtol=1e-10, atol=1e-12)


# ---- backward against central finite differences ----------------------------

@pytest.mark.parametrize("_, kind, cls, kwargs", CASES, ids=IDS)
def test_backward_matches_finite_differences(_, kind, cls, kwargs):
    loss = build(cls, kwargs, 3, 4, np.float64, seed=5)
    x, labels = _inputs(5, 4, 3, np.float64, seed=6)
    labels[:2] = [2, 2]  # a class twice
    _, grad_x, grads = _value_and_grads(loss, x, labels, np.float64)

    def total_x(xv):
        return _call(loss, xv, labels, np.float64).asnumpy().sum()
    np.testing.assert_allclose(grad_x, numeric_grad(total_x, x), rtol=1e-5, atol=1e-7)

    params = loss.collect_params()
    expected_trained = {n for n, p in params.items() if p.grad_req != "null"}
    assert set(grads) == expected_trained
    assert (kwargs.get("update") == "paper") == (not expected_trained)
    for name, grad in grads.items():
        param = params[name]
        base = param.data().asnumpy()

        def total_p(value):
            param.set_data(mx.nd.array(value, dtype="float64"))
            return _call(loss, x, labels, np.float64).asnumpy().sum()
        numeric = numeric_grad(total_p, base)
        param.set_data(mx.nd.array(base, dtype="float64"))
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_center_gradient_by_hand():
    # d/dc_j Σ ½||x_i − c_{y_i}||² = Σ_{i: y_i=j} (c_j − x_i); absent classes get 0
    loss = build(CenterLoss, {}, 4, 3, np.float64, seed=0)
    x, _ = _inputs(5, 3, 4, np.float64, seed=1)
    labels = np.array([1, 3, 1, 0, 1])
    centers = _params(loss)["centers"]
    _, grad_x, grads = _value_and_grads(loss, x, labels, np.float64)
    expected = np.zeros_like(centers)
    for xi, yi in zip(x, labels):
        expected[yi] += centers[yi] - xi
    np.testing.assert_allclose(grads[loss.centers.name], expected, rtol=1e-12)
    np.testing.assert_allclose(grad_x, x - centers[labels], rtol=1e-12)


# ---- hybridized == imperative -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("_, kind, cls, kwargs", CASES, ids=IDS)
def test_hybridized_equals_imperative(_, kind, cls, kwargs, dtype):
    loss = build(cls, kwargs, 5, 6, dtype, seed=8)
    inputs = [_inputs(6, 6, 5, dtype, seed) for seed in range(2)]
    imperative = [_value_and_grads(loss, x, y, dtype) for x, y in inputs]
    loss.hybridize()
    for (x, y), (value_i, grad_i, grads_i) in zip(inputs * 2, imperative * 2):
        value_h, grad_h, grads_h = _value_and_grads(loss, x, y, dtype)  # 2nd: cached graph
        np.testing.assert_allclose(value_h, value_i, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(grad_h, grad_i, rtol=1e-6, atol=1e-7)
        for name in grads_i:
            np.testing.assert_allclose(grads_h[name], grads_i[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("cls, kwargs", [(L2SoftmaxLoss, dict(alpha=4.0)), (CenterLoss, {}),
                                         (LGMLoss, dict(covariance="diagonal"))],
                         ids=["l2softmax", "center", "lgm-diagonal"])
def test_in_units_inferred_from_first_batch(cls, kwargs, hybridize):
    loss = cls(4, **kwargs)
    loss.initialize()
    if hybridize:
        loss.hybridize()
    x, labels = _inputs(3, 7, 4, np.float32, seed=2)
    out = _call(loss, x, labels, np.float32)
    assert out.shape == (3,) and np.isfinite(out.asnumpy()).all()
    assert all(p.shape[-1] == 7 for p in loss.collect_params().values() if len(p.shape) == 2)
    with pytest.raises(ValueError, match=r"dimension 5, but the loss was built for in_units=7"):
        _call(loss, np.ones((3, 5), np.float32), labels, np.float32)


@pytest.mark.parametrize("cls", [L2SoftmaxLoss, LGMLoss])
def test_logits_before_the_first_loss_call(cls):
    loss = cls(4, alpha=4.0)
    loss.initialize()
    assert loss.logits(mx.nd.ones((2, 5))).shape == (2, 4)
    x, labels = _inputs(2, 5, 4, np.float32, seed=0)
    assert _call(loss, x, labels, np.float32).shape == (2,)


# ---- the paper's centre update ----------------------------------------------

def paper_rule(centers, x, labels, alpha):
    """Wen et al., Algorithm 1: Δc_j = Σ_{y_i=j}(c_j − x_i) / (1 + n_j)."""
    new = centers.copy()
    for j in range(len(centers)):
        members = [xi for xi, yi in zip(x, labels) if yi == j]
        delta = sum((centers[j] - xi for xi in members), np.zeros(centers.shape[1]))
        new[j] = centers[j] - alpha * delta / (1 + len(members))
    return new


def _train_call(loss, x, labels):
    xs = mx.nd.array(x, dtype="float64")
    xs.attach_grad()
    with autograd.record():          # training mode: the rule runs
        out = loss(xs, mx.nd.array(labels))
    out.backward()
    return out.asnumpy(), xs.grad.asnumpy()


def test_center_paper_update_by_hand():
    loss = CenterLoss(3, in_units=1, update="paper", alpha=0.5)
    loss.initialize()        # centres start at zero
    loss.cast("float64")
    # step 1: class 0 twice, class 1 once, class 2 absent
    # Δc0 = ((0−2) + (0−4)) / (1+2) = −2 → c0 = 0 − 0.5·(−2) = 1
    # Δc1 = (0−6) / (1+1) = −3 → c1 = 1.5;  c2 stays 0
    value, grad = _train_call(loss, [[2.0], [4.0], [6.0]], [0, 0, 1])
    np.testing.assert_allclose(value, [2.0, 8.0, 18.0])     # old centres: ½x²
    np.testing.assert_allclose(grad, [[2.0], [4.0], [6.0]])  # x − c_old
    np.testing.assert_allclose(loss.centers.data().asnumpy(), [[1.0], [1.5], [0.0]])
    # step 2: Δc2 = (0−1)/2 → c2 = 0.25; Δc0 = (1−3)/2 = −1 → c0 = 1.5; c1 absent
    value, grad = _train_call(loss, [[1.0], [3.0]], [2, 0])
    np.testing.assert_allclose(value, [0.5, 2.0])
    np.testing.assert_allclose(grad, [[1.0], [2.0]])
    np.testing.assert_allclose(loss.centers.data().asnumpy(), [[1.5], [1.5], [0.25]])


@pytest.mark.parametrize("hybridize", [False, True])
def test_center_paper_update_two_steps(hybridize):
    loss = build(CenterLoss, dict(update="paper", alpha=0.4), 5, 3, np.float64, seed=4)
    if hybridize:
        loss.hybridize()
    centers = _params(loss)["centers"]
    rng = np.random.RandomState(9)
    # class 1 twice and 3 once (0, 2, 4 absent); then class 4 three times, 1, 2
    for labels in ([1, 3, 1], [4, 4, 4, 1, 2]):
        x = rng.normal(size=(len(labels), 3))
        value, grad = _train_call(loss, x, labels)
        # the loss and its gradient use the centres before the update ...
        np.testing.assert_allclose(value, ref_center(x, labels, centers), rtol=1e-12)
        np.testing.assert_allclose(grad, x - centers[labels], rtol=1e-12)
        # ... which then move by the paper's rule, absent classes unchanged
        centers = paper_rule(centers, x, labels, 0.4)
        np.testing.assert_allclose(loss.centers.data().asnumpy(), centers, rtol=1e-12)


def test_center_paper_update_keeps_device_copies_identical():
    # two CPU contexts stand in for two GPUs: the batch lives on the second
    devices = [mx.cpu(0), mx.cpu(1)]
    loss = CenterLoss(4, in_units=2, update="paper", alpha=0.5,
                      center_initializer=mx.init.Constant(1.0))
    loss.initialize(ctx=devices)
    x = np.array([[3.0, 1.0], [5.0, -1.0], [0.0, 0.0]])
    labels = [2, 2, 0]
    with autograd.record():
        loss(mx.nd.array(x, ctx=devices[1]), mx.nd.array(labels, ctx=devices[1]))
    expected = paper_rule(np.ones((4, 2)), x, labels, 0.5)
    for data in loss.centers.list_data():
        np.testing.assert_allclose(data.asnumpy(), expected, rtol=1e-6)


def test_center_paper_update_only_in_training_mode():
    loss = build(CenterLoss, dict(update="paper"), 3, 2, np.float64, seed=1)
    before = loss.centers.data().asnumpy()
    x, labels = _inputs(4, 2, 3, np.float64, seed=0)
    _call(loss, x, labels, np.float64)                    # inference
    _value_and_grads(loss, x, labels, np.float64)         # recording, train_mode=False
    np.testing.assert_array_equal(loss.centers.data().asnumpy(), before)
    # the Trainer skips grad_req='null' centres
    trainer = gluon.Trainer(loss.collect_params(), "sgd", {"learning_rate": 1.0})
    _train_call(loss, x, labels)
    moved = loss.centers.data().asnumpy()
    trainer.step(1)
    np.testing.assert_array_equal(loss.centers.data().asnumpy(), moved)
    assert not np.allclose(moved, before)


class _Parent(HybridBlock):
    def __init__(self, loss, **kwargs):
        super().__init__(**kwargs)
        self.loss = loss

    def hybrid_forward(self, F, x, label):
        return self.loss(x, label)


def test_center_paper_inside_hybridized_parent_raises():
    parent = _Parent(CenterLoss(3, in_units=2, update="paper"))
    parent.initialize()
    parent.hybridize()
    with pytest.raises(TypeError, match="hybridized parent"):
        parent(mx.nd.ones((2, 2)), mx.nd.array([0, 1]))
    # the gradient mode works there (no checks, no imperative update)
    parent = _Parent(CenterLoss(3, in_units=2))
    parent.initialize()
    parent.hybridize()
    out = parent(mx.nd.array([[3.0, 4.0], [0.0, 1.0]]), mx.nd.array([0, 1]))
    np.testing.assert_allclose(out.asnumpy(), [12.5, 0.5])   # centres start at 0


# ---- Ring loss ----------------------------------------------------------------

def test_ring_by_hand():
    loss = RingLoss()          # R = 1
    loss.initialize()
    x = mx.nd.array([[3.0, 4.0], [0.0, 1.0]])
    # ½(5 − 1)² and ½(1 − 1)²
    np.testing.assert_allclose(loss(x).asnumpy(), [8.0, 0.0], rtol=1e-6)
    # the label is optional and ignored
    np.testing.assert_allclose(loss(x, mx.nd.array([7, 3])).asnumpy(), [8.0, 0.0], rtol=1e-6)
    # dℓ/dR = −(||x|| − R): −4 and 0
    with autograd.record():
        total = loss(x).sum()
    total.backward()
    np.testing.assert_allclose(loss.radius.grad().asnumpy(), [-4.0], rtol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True])
def test_ring_radius_from_first_batch(hybridize):
    loss = RingLoss(radius="mean")
    loss.initialize()
    if hybridize:
        loss.hybridize()
    x = mx.nd.array([[3.0, 4.0], [5.0, 12.0]])       # norms 5 and 13: R = 9
    with autograd.record():
        out = loss(x)
    out.backward()
    np.testing.assert_allclose(loss.radius.data().asnumpy(), [9.0], rtol=1e-6)
    np.testing.assert_allclose(out.asnumpy(), [8.0, 8.0], rtol=1e-6)
    # later batches do not reset it
    loss(mx.nd.array([[1.0, 0.0]]))
    np.testing.assert_allclose(loss.radius.data().asnumpy(), [9.0], rtol=1e-6)


def test_ring_radius_loaded_is_kept():
    loss = RingLoss(radius="mean")
    loss.initialize()
    loss.radius.set_data(mx.nd.array([2.0]))           # e.g. load_parameters
    np.testing.assert_allclose(loss(mx.nd.array([[3.0, 4.0]])).asnumpy(), [4.5], rtol=1e-6)
    assert loss.radius.data().asscalar() == 2.0


def test_ring_mean_inside_hybridized_parent_raises():
    parent = _Parent(RingLoss(radius="mean"))
    parent.initialize()
    parent.hybridize()
    with pytest.raises(TypeError, match="hybridized parent"):
        parent(mx.nd.ones((2, 2)), mx.nd.array([0, 1]))


# ---- L2-Softmax -----------------------------------------------------------------

def test_alpha_lower_bound_by_hand():
    assert l2softmax_alpha_lower_bound(10) == pytest.approx(math.log(72.0), rel=1e-12)
    assert l2softmax_alpha_lower_bound(3) == pytest.approx(math.log(9.0), rel=1e-12)
    # CASIA-WebFace, p = 0.9: log(0.9·10573/0.1) = log(95157) ≈ 11.46
    assert l2softmax_alpha_lower_bound(10575) == pytest.approx(math.log(95157.0), rel=1e-12)
    assert l2softmax_alpha_lower_bound(10575) == pytest.approx(11.463, abs=1e-3)
    assert l2softmax_alpha_lower_bound(100, p=0.99) == pytest.approx(math.log(9702.0), rel=1e-12)
    for bad in [dict(num_classes=2), dict(num_classes=10, p=1.0),
                dict(num_classes=10, p=0.0), dict(num_classes=4.5)]:
        with pytest.raises(ValueError):
            l2softmax_alpha_lower_bound(**bad)


def test_l2softmax_default_alpha_is_the_bound():
    assert L2SoftmaxLoss(10).alpha == pytest.approx(math.log(72.0), rel=1e-12)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 3"):
        L2SoftmaxLoss(2)
    assert L2SoftmaxLoss(2, alpha=4.0).alpha == 4.0


def test_l2softmax_ignores_the_feature_norm_and_handles_zero():
    loss = build(L2SoftmaxLoss, dict(alpha=5.0), 4, 3, np.float64, seed=3)
    x, labels = _inputs(6, 3, 4, np.float64, seed=4)
    np.testing.assert_allclose(_call(loss, 7.5 * x, labels, np.float64).asnumpy(),
                               _call(loss, x, labels, np.float64).asnumpy(), rtol=1e-9)  # eps
    # a zero feature gives the bias-only logits and a finite gradient
    value, grad, _ = _value_and_grads(loss, np.zeros((1, 3)), [2], np.float64)
    np.testing.assert_allclose(value, ref_ce(_params(loss)["bias"][None], [2]), rtol=1e-12)
    assert np.isfinite(grad).all()


# ---- L-GM by hand -------------------------------------------------------------

def test_lgm_by_hand():
    f64 = dict(dtype="float64")
    loss = LGMLoss(2, in_units=1, alpha=0.1, lambda_lkd=0.5)
    loss.initialize()
    loss.cast("float64")
    loss.means.set_data(mx.nd.array([[0.0], [2.0]], **f64))
    # x = 1: d = [½, ½]; true class 0 → logits [−0.55, −0.5]
    got = loss(mx.nd.array([[1.0]], **f64), mx.nd.array([0])).asscalar()
    expected = math.log(math.exp(-0.55) + math.exp(-0.5)) + 0.55 + 0.5 * 0.5
    assert got == pytest.approx(expected, rel=1e-12)
    # diagonal: class 0 variance 4 → d0 = ½·1/4 = 1/8, ½log|Λ0| = ½ log 4
    diag = LGMLoss(2, in_units=1, alpha=0.0, lambda_lkd=1.0, covariance="diagonal")
    diag.initialize()
    diag.cast("float64")
    diag.means.set_data(mx.nd.array([[0.0], [2.0]], **f64))
    diag.log_var.set_data(mx.nd.array([[math.log(4.0)], [0.0]], **f64))
    got = diag(mx.nd.array([[1.0]], **f64), mx.nd.array([0])).asscalar()
    logit0, logit1 = -0.125 - math.log(2.0), -0.5
    expected = math.log(math.exp(logit0) + math.exp(logit1)) - logit0 + (0.125 + math.log(2.0))
    assert got == pytest.approx(expected, rel=1e-12)


# ---- edge cases, dtypes, errors -------------------------------------------------

@pytest.mark.parametrize("_, kind, cls, kwargs", CASES, ids=IDS)
def test_label_dtypes_and_shapes(_, kind, cls, kwargs):
    loss = build(cls, kwargs, 4, 3, np.float32, seed=0)
    x, labels = _inputs(5, 3, 4, np.float32, seed=0)
    expected = reference(kind, loss, x.astype(np.float64), labels)
    for label in (mx.nd.array(labels, dtype="int32"), mx.nd.array(labels, dtype="int64"),
                  mx.nd.array(labels, dtype="float64").reshape((-1, 1))):
        got = loss(mx.nd.array(x), label).asnumpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("_, kind, cls, kwargs", CASES, ids=IDS)
def test_float16_is_computed_in_float32(_, kind, cls, kwargs):
    loss = build(cls, kwargs, 4, 3, np.float32, seed=0)
    x, labels = _inputs(6, 3, 4, np.float32, seed=3)
    half = mx.nd.array(x, dtype="float16")
    half.attach_grad()
    with autograd.record(train_mode=False):
        got = loss(half, mx.nd.array(labels, dtype="float16"))
    got.backward()
    assert got.dtype == np.float32
    assert half.grad.dtype == np.float16 and np.isfinite(half.grad.asnumpy()).all()
    rounded = x.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(got.asnumpy(), reference(kind, loss, rounded, labels),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("_, kind, cls, kwargs", [c for c in CASES if c[1] != "ring"],
                         ids=[i for i in IDS if i != "ring"])
def test_bad_labels_raise(_, kind, cls, kwargs):
    loss = build(cls, kwargs, 3, 2, np.float32, seed=0)
    x = mx.nd.array([[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match=r"label 3 is out of range for 3 classes"):
        loss(x, mx.nd.array([0, 3]))
    with pytest.raises(ValueError, match=r"label -1 is out of range for 3 classes"):
        loss(x, mx.nd.array([-1, 0]))
    with pytest.raises(ValueError, match=r"label 1.5 "):
        loss(x, mx.nd.array([1.5, 0]))
    with pytest.raises(ValueError, match=r"expected 2 labels"):
        loss(x, mx.nd.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(batch, dim\)"):
        loss(mx.nd.array([0.1, 0.2]), mx.nd.array([0]))
    with pytest.raises(ValueError, match=r"dimension 3, but the loss was built for in_units=2"):
        loss(mx.nd.ones((2, 3)), mx.nd.array([0, 1]))


def test_ring_bad_shape_raises():
    loss = RingLoss()
    loss.initialize()
    with pytest.raises(ValueError, match=r"shape \(batch, dim\)"):
        loss(mx.nd.array([0.1, 0.2]))


def test_zero_embedding_is_finite():
    for cls, kwargs in [(RingLoss, {}), (L2SoftmaxLoss, dict(alpha=4.0)), (CenterLoss, {}),
                        (LGMLoss, dict(covariance="diagonal"))]:
        loss = build(cls, kwargs, 3, 4, np.float32, seed=1)
        value, grad, grads = _value_and_grads(loss, np.zeros((2, 4)), [0, 2], np.float32)
        assert np.isfinite(value).all() and np.isfinite(grad).all(), cls.__name__
        assert all(np.isfinite(g).all() for g in grads.values()), cls.__name__


def test_invalid_hyperparameters():
    bad = [(L2SoftmaxLoss, (5,), dict(alpha=0.0)), (L2SoftmaxLoss, (0,), dict(alpha=1.0)),
           (L2SoftmaxLoss, (5,), dict(in_units=-1)), (L2SoftmaxLoss, (5,), dict(eps=0.0)),
           (CenterLoss, (5,), dict(update="sgd")), (CenterLoss, (5,), dict(alpha=0.0)),
           (CenterLoss, (5,), dict(alpha=1.5)), (CenterLoss, (2.5,), {}),
           (RingLoss, (), dict(radius=0.0)), (RingLoss, (), dict(radius="median")),
           (LGMLoss, (5,), dict(alpha=-0.1)), (LGMLoss, (5,), dict(lambda_lkd=-1.0)),
           (LGMLoss, (5,), dict(covariance="full"))]
    for cls, args, kwargs in bad:
        with pytest.raises(ValueError):
            cls(*args, **kwargs)


# ---- training with gluon.Trainer ------------------------------------------------

@pytest.mark.parametrize("_, kind, cls, kwargs", [c for c in CASES if c[0] != "center-paper"],
                         ids=[i for i in IDS if i != "center-paper"])
def test_trainer_updates_parameters(_, kind, cls, kwargs):
    loss = build(cls, kwargs, 4, 3, np.float32, seed=2)
    params = loss.collect_params()
    assert len(list(params.keys())) > 0
    before = {name: p.data().asnumpy() for name, p in params.items()}
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.5})
    x = mx.nd.array(_inputs(6, 3, 4, np.float32, seed=1)[0])
    labels = np.array([0, 1, 1, 2, 0, 1])  # class 3 absent
    with autograd.record():
        value = loss(x, mx.nd.array(labels)).mean()
    value.backward()
    trainer.step(1)
    for name, p in params.items():
        after = p.data().asnumpy()
        if name.endswith("centers"):
            # only the centres of classes in the batch receive a gradient
            assert not np.allclose(after[:3], before[name][:3]), name
            np.testing.assert_array_equal(after[3], before[name][3])
        else:
            assert not np.allclose(after, before[name]), name
    # and a few more steps lower the loss on this batch
    for _step in range(20):
        with autograd.record():
            current = loss(x, mx.nd.array(labels)).mean()
        current.backward()
        trainer.step(1)
    assert current.asscalar() < value.asscalar()


# ---- registry -----------------------------------------------------------------

@pytest.mark.parametrize("name, cls, kwargs", [
    ("l2softmax", L2SoftmaxLoss, dict(num_classes=10)),
    ("center", CenterLoss, dict(num_classes=10, update="paper")),
    ("ring", RingLoss, {}),
    ("lgm", LGMLoss, dict(num_classes=10, covariance="diagonal"))])
def test_registry_names(name, cls, kwargs):
    assert name in fr_lib.get_loss_list()
    loss = fr_lib.get_loss(name.upper(), **kwargs)
    assert type(loss) is cls
    loss.initialize()
    x, labels = _inputs(3, 4, 10, np.float32, seed=0)
    assert np.isfinite(_call(loss, x, labels, np.float32).asnumpy()).all()

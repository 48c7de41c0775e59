"""Margin losses on cosines (fr_lib.loss.margin) against NumPy references
written from the papers' formulas, finite differences and hand calculations."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import fr_lib
from fr_lib.loss import (ArcFaceLoss, CombinedMarginLoss, CosFaceLoss,
                         NormFaceLoss, SphereFaceLoss)
from conftest import engine_block as _E
from numeric_helpers import numeric_grad

# Every test runs with the native operator (fr_lib.ops) and without it.
pytestmark = pytest.mark.usefixtures("native_mode")

EPS = 1e-7  # the clamp before arccos, as documented


# ---- NumPy references (float64, angles rather than the th/mm identities) ----

def _theta(c):
    return np.arccos(np.clip(c, -1 + EPS, 1 - EPS))


def ref_normface(c, s):
    return c


def ref_cosface(c, s, m):
    return c - m


def ref_arcface(c, s, m, easy_margin=False):
    t = _theta(c)
    if easy_margin:
        return np.where(c > 0, np.cos(t + m), c)
    # ArcFace paper / InsightFace: once θ + m passes π use cos θ − m·sin m
    return np.where(t + m <= np.pi, np.cos(t + m), c - m * np.sin(m))


def ref_combined(c, s, m1, m2, m3):
    t = _theta(c)
    main = np.cos(m1 * t + m2) - m3
    t_max = (np.pi - m2) / m1          # the angle where m1·θ + m2 reaches π
    if t_max >= np.pi:
        return main
    shift = (m1 - 1) * t_max + m2      # cos(θ+δ) ≈ cos θ − δ·sin θ at t_max
    return np.where(m1 * t + m2 <= np.pi, main, c - shift * np.sin(t_max) - m3)


def ref_sphereface(c, s, m, lam):
    t = _theta(c)
    k = np.floor(m * t / np.pi)
    psi = (-1.0) ** k * np.cos(m * t) - 2 * k
    return (lam * c + psi) / (1 + lam)


def ref_loss(cos, labels, s, target_fn, **kw):
    """Softmax cross-entropy of s·cos with the true-class logit replaced."""
    cos = np.asarray(cos, dtype=np.float64)
    rows = np.arange(len(labels))
    logits = cos.copy()
    logits[rows, labels] = target_fn(cos[rows, labels], s, **kw)
    logits *= s
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return lse - logits[rows, labels]


SPHERE_ITER = 10 ** 5  # far into the schedule: λ = lambda_min = 5, ψ matters

# (id, constructor kwargs, reference target, reference kwargs)
CASES = [
    ("normface", NormFaceLoss, dict(s=30.0), ref_normface, {}),
    ("cosface", CosFaceLoss, dict(s=64.0, m=0.35), ref_cosface, dict(m=0.35)),
    ("amsoftmax", CosFaceLoss, dict(s=30.0, m=0.35), ref_cosface, dict(m=0.35)),
    ("arcface", ArcFaceLoss, dict(s=64.0, m=0.5), ref_arcface, dict(m=0.5)),
    ("arcface-easy", ArcFaceLoss, dict(s=64.0, m=0.5, easy_margin=True),
     ref_arcface, dict(m=0.5, easy_margin=True)),
    ("combined", CombinedMarginLoss, dict(s=64.0),
     ref_combined, dict(m1=1.0, m2=0.5, m3=0.0)),
    ("combined-all", CombinedMarginLoss, dict(s=32.0, m1=1.2, m2=0.3, m3=0.2),
     ref_combined, dict(m1=1.2, m2=0.3, m3=0.2)),
    ("combined-nofallback", CombinedMarginLoss, dict(s=16.0, m1=0.9, m2=0.1, m3=0.1),
     ref_combined, dict(m1=0.9, m2=0.1, m3=0.1)),
    ("sphereface-m4", SphereFaceLoss, dict(s=30.0, m=4, iteration=SPHERE_ITER),
     ref_sphereface, dict(m=4, lam=5.0)),
    ("sphereface-m3", SphereFaceLoss, dict(s=10.0, m=3, iteration=SPHERE_ITER),
     ref_sphereface, dict(m=3, lam=5.0)),
]
IDS = [case[0] for case in CASES]


def _inputs(shape, dtype, seed):
    rng = np.random.RandomState(seed)
    cos = rng.uniform(-1, 1, size=shape).astype(dtype)
    labels = rng.randint(0, shape[1], size=shape[0])
    return cos, labels


def _value_and_grad(loss, cos, labels, dtype):
    x = mx.nd.array(cos, dtype=dtype)
    x.attach_grad()
    # train_mode=False: SphereFace's λ must not move during a check
    with autograd.record(train_mode=False):
        out = loss(x, mx.nd.array(labels, dtype=dtype))
    out.backward()
    return out.asnumpy(), x.grad.asnumpy()


# ---- forward against NumPy --------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 2), (7, 3), (16, 10), (32, 500)])
@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_forward_matches_numpy(_, cls, kwargs, ref, ref_kw, shape, dtype, atol):
    cos, labels = _inputs(shape, dtype, seed=sum(shape))
    got = _E(cls(**kwargs))(mx.nd.array(cos, dtype=dtype), mx.nd.array(labels, dtype=dtype))
    assert got.dtype == dtype and got.shape == (shape[0],)
    expected = ref_loss(cos, labels, kwargs["s"], ref, **ref_kw)
    # atol: the logits reach s = 64, so float32 log_softmax is exact to ~1e-5
    # absolute and float64 to ~1e-14 (tiny losses of confident rows)
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5, atol=atol)


# ---- backward against central finite differences ----------------------------

# True-class cosines away from every kink: ArcFace's threshold cos(π−0.5) =
# −0.878, easy margin 0, the combined thresholds −0.716 (m1=1.2, m2=0.3),
# SphereFace's k boundaries ±0.707, 0 (m=4) and ±0.5 (m=3). −0.97 and −0.93
# lie in the θ+m>π fallback region, so both branches are differentiated.
SAFE_TARGETS = np.array([-0.97, -0.93, -0.6, -0.3, 0.35, 0.62, 0.8, 0.96])


@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_backward_matches_finite_differences(_, cls, kwargs, ref, ref_kw):
    rng = np.random.RandomState(7)
    cos = rng.uniform(-0.95, 0.95, size=(len(SAFE_TARGETS), 5))
    labels = rng.randint(0, 5, size=len(SAFE_TARGETS))
    cos[np.arange(len(labels)), labels] = SAFE_TARGETS
    loss = _E(cls(**kwargs))
    _, grad = _value_and_grad(loss, cos, labels, np.float64)

    def total(c):
        return loss(mx.nd.array(c, dtype=np.float64),
                    mx.nd.array(labels, dtype=np.float64)).asnumpy().sum()

    numeric = numeric_grad(total, cos)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6 * kwargs["s"])


# ---- edge cases -------------------------------------------------------------

EXTREME = [[1.0, -1.0, 0.3],          # perfect match
           [-1.0, 1.0, 0.2],          # exactly opposite: θ = π
           [1.0 + 1e-7, 0.5, -1.0],   # rounding pushed it past 1
           [0.1, 1.0 + 1e-7, -1.0 - 1e-7]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_cosine_at_and_beyond_one_is_finite(_, cls, kwargs, ref, ref_kw, dtype):
    value, grad = _value_and_grad(_E(cls(**kwargs)), np.array(EXTREME), [0, 0, 0, 0], dtype)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    if dtype == np.float64:
        expected = ref_loss(EXTREME, [0, 0, 0, 0], kwargs["s"], ref, **ref_kw)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-12)


def _loss1(loss, cos_row, label=0):
    return loss(mx.nd.array([cos_row], dtype="float64"),
                mx.nd.array([label], dtype="float64")).asscalar()


def _ce_by_hand(target, others):
    return math.log(math.exp(target) + sum(math.exp(o) for o in others)) - target


def test_arcface_fallback_beyond_pi_by_hand():
    loss = _E(ArcFaceLoss(s=1.0, m=0.5))
    # θ = acos(−0.95) = 2.824 > π − 0.5 = 2.642: the fallback cos θ − sin(π−m)·m
    target = -0.95 - math.sin(math.pi - 0.5) * 0.5          # −1.18971
    assert _loss1(loss, [-0.95, 0.2]) == pytest.approx(_ce_by_hand(target, [0.2]), rel=1e-12)
    # θ = acos(−0.8) = 2.498 < 2.642: still cos(θ + m)
    target = math.cos(math.acos(-0.8) + 0.5)                 # −0.98999
    assert _loss1(loss, [-0.8, 0.2]) == pytest.approx(_ce_by_hand(target, [0.2]), rel=1e-12)
    # easy margin: no margin at all once cos θ <= 0
    easy = _E(ArcFaceLoss(s=1.0, m=0.5, easy_margin=True))
    assert _loss1(easy, [-0.8, 0.2]) == pytest.approx(_ce_by_hand(-0.8, [0.2]), rel=1e-12)


def test_combined_fallback_by_hand():
    loss = _E(CombinedMarginLoss(s=2.0, m1=1.2, m2=0.3, m3=0.2))
    # θ = acos(−0.9) = 2.691; 1.2·θ + 0.3 = 3.529 > π. Threshold angle
    # θt = (π − 0.3)/1.2 = 2.368, shift there δ = 0.2·θt + 0.3 = 0.7736.
    theta_t = (math.pi - 0.3) / 1.2
    target = -0.9 - (0.2 * theta_t + 0.3) * math.sin(theta_t) - 0.2
    expected = _ce_by_hand(2 * target, [2 * 0.4])
    assert _loss1(loss, [-0.9, 0.4]) == pytest.approx(expected, rel=1e-12)
    # θ = acos(0.5) = π/3: inside, cos(1.2·π/3 + 0.3) − 0.2
    target = math.cos(1.2 * math.pi / 3 + 0.3) - 0.2
    expected = _ce_by_hand(2 * target, [2 * 0.4])
    assert _loss1(loss, [0.5, 0.4]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("row", [[-0.95, 0.2, 0.1], [-0.5, 0.9, -0.2], [0.7, 0.1, 0.3]])
def test_combined_reduces_to_arcface_and_cosface(row):
    arc = _loss1(_E(ArcFaceLoss(s=64.0, m=0.5)), row)
    assert _loss1(_E(CombinedMarginLoss(s=64.0, m1=1, m2=0.5, m3=0)), row) == pytest.approx(arc)
    cosface = _loss1(_E(CosFaceLoss(s=64.0, m=0.35)), row)
    assert _loss1(_E(CombinedMarginLoss(s=64.0, m1=1, m2=0, m3=0.35)), row) == pytest.approx(cosface)


def test_sphereface_psi_by_hand():
    # m = 4, θ = 2π/3 (cos θ = −0.5): mθ = 8π/3, k = 2, ψ = cos(8π/3) − 4 = −4.5
    loss = _E(SphereFaceLoss(m=4, s=1.0, iteration=SPHERE_ITER))   # λ = 5
    target = (5 * -0.5 + -4.5) / 6
    assert _loss1(loss, [-0.5, 0.3]) == pytest.approx(_ce_by_hand(target, [0.3]), rel=1e-12)


@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_batch_of_one_class(_, cls, kwargs, ref, ref_kw):
    cos, _labels = _inputs((9, 4), np.float64, seed=3)
    labels = np.full(9, 2)
    got = _E(cls(**kwargs))(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels))
    np.testing.assert_allclose(got.asnumpy(),
                               ref_loss(cos, labels, kwargs["s"], ref, **ref_kw), rtol=1e-5)


@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_bad_labels_raise(_, cls, kwargs, ref, ref_kw):
    loss = _E(cls(**kwargs))
    cos = mx.nd.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    with pytest.raises(ValueError, match=r"label 3 is out of range for 3 classes"):
        loss(cos, mx.nd.array([0, 3]))
    with pytest.raises(ValueError, match=r"label -1 is out of range for 3 classes"):
        loss(cos, mx.nd.array([-1, 0]))
    with pytest.raises(ValueError, match=r"label 1.5 "):
        loss(cos, mx.nd.array([1.5, 0]))
    with pytest.raises(ValueError, match=r"expected 2 labels"):
        loss(cos, mx.nd.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(batch, num_classes\)"):
        loss(mx.nd.array([0.1, 0.2]), mx.nd.array([0]))


@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_float16_is_computed_in_float32(_, cls, kwargs, ref, ref_kw):
    cos, labels = _inputs((8, 6), np.float32, seed=11)
    half = mx.nd.array(cos, dtype="float16")
    half.attach_grad()
    with autograd.record(train_mode=False):
        got = _E(cls(**kwargs))(half, mx.nd.array(labels, dtype="float16"))
    got.backward()
    assert got.dtype == np.float32
    assert half.grad.dtype == np.float16 and np.isfinite(half.grad.asnumpy()).all()
    # the same (fp16-rounded) cosines in float32 give the same loss ...
    rounded = cos.astype(np.float16).astype(np.float32)
    single = _E(cls(**kwargs))(mx.nd.array(rounded), mx.nd.array(labels)).asnumpy()
    np.testing.assert_allclose(got.asnumpy(), single, rtol=1e-6)
    # ... and the original cosines give a loss close to it
    full = _E(cls(**kwargs))(mx.nd.array(cos), mx.nd.array(labels)).asnumpy()
    np.testing.assert_allclose(got.asnumpy(), full, rtol=2e-2, atol=0.1)


# ---- hybridized == imperative -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("_, cls, kwargs, ref, ref_kw", CASES, ids=IDS)
def test_hybridized_equals_imperative(_, cls, kwargs, ref, ref_kw, dtype):
    imperative, hybrid = _E(cls(**kwargs)), _E(cls(**kwargs))
    hybrid.hybridize()
    for seed in range(3):  # later calls run the cached graph
        cos, labels = _inputs((6, 5), dtype, seed)
        value_i, grad_i = _value_and_grad(imperative, cos, labels, dtype)
        value_h, grad_h = _value_and_grad(hybrid, cos, labels, dtype)
        np.testing.assert_allclose(value_h, value_i, rtol=1e-6)
        np.testing.assert_allclose(grad_h, grad_i, rtol=1e-6, atol=1e-9)


# λ after 1..5 training calls: max(5, 1000·(1 + 0.12·it)^−1), by hand
LAMBDAS = [1000 / 1.12, 1000 / 1.24, 1000 / 1.36, 1000 / 1.48, 1000 / 1.60]


def test_sphereface_lambda_advances_when_hybridized():
    imperative, hybrid = _E(SphereFaceLoss()), _E(SphereFaceLoss())
    hybrid.hybridize()
    cos, labels = _inputs((6, 5), np.float64, seed=5)
    values = []
    for step, lam in enumerate(LAMBDAS, start=1):
        outs = []
        for loss in (imperative, hybrid):
            x = mx.nd.array(cos, dtype="float64")
            with autograd.record():  # training mode: the counter advances
                outs.append(loss(x, mx.nd.array(labels)).asnumpy())
            assert loss.iteration == step
            assert loss.current_lambda == pytest.approx(lam, rel=1e-12)
        np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12)
        expected = ref_loss(cos, labels, 30.0, ref_sphereface, m=4, lam=lam)
        np.testing.assert_allclose(outs[0], expected, rtol=1e-10)
        values.append(outs[1])
    for before, after in zip(values, values[1:]):
        assert np.abs(after - before).max() > 1e-3, "λ did not change the loss"
    # outside training the counter stays and the last λ is used
    value = hybrid(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels)).asnumpy()
    assert hybrid.iteration == 5
    np.testing.assert_allclose(value, values[-1], rtol=1e-12)


def test_sphereface_lambda_floor():
    loss = _E(SphereFaceLoss(iteration=10 ** 4))
    assert loss.current_lambda == 5.0
    assert _E(SphereFaceLoss(base=1000, gamma=0.12)).lambda_at(0) == 1000.0


def test_invalid_hyperparameters():
    with pytest.raises(ValueError):
        _E(SphereFaceLoss(m=2.5))
    with pytest.raises(ValueError):
        _E(ArcFaceLoss(m=4.0))
    with pytest.raises(ValueError):
        _E(CombinedMarginLoss(m1=0))
    with pytest.raises(ValueError):
        _E(NormFaceLoss(s=0))


# ---- registry -----------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [
    ("normface", NormFaceLoss), ("cosface", CosFaceLoss), ("amsoftmax", CosFaceLoss),
    ("arcface", ArcFaceLoss), ("combined", CombinedMarginLoss),
    ("sphereface", SphereFaceLoss), ("asoftmax", SphereFaceLoss)])
def test_registry_names(name, cls):
    assert name in fr_lib.get_loss_list()
    assert type(fr_lib.get_loss(name)) is cls
    assert type(fr_lib.get_loss(name.upper(), s=16.0)) is cls

"""Sub-center ArcFace, CurricularFace, MagFace, AdaFace and Circle loss
(fr_lib.loss.advanced) against NumPy references written from the papers'
formulas, finite differences and hand calculations."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import fr_lib
from fr_lib.loss import (AdaFaceLoss, ArcFaceLoss, CircleLoss, CosFaceLoss,
                         CurricularFaceLoss, MagFaceLoss, SubCenterArcFaceLoss)
from conftest import engine_block as _E
from numeric_helpers import numeric_grad

# Every test runs with the native operator (fr_lib.ops) and without it.
pytestmark = pytest.mark.usefixtures("native_mode")

EPS = 1e-7  # the clamp before arccos, as documented


# ---- NumPy references (float64) ---------------------------------------------

def _theta(c):
    return np.arccos(np.clip(c, -1 + EPS, 1 - EPS))


def _arc(c, m, easy_margin=False):
    """ArcFace's cos(θ + m), falling back to cos θ − m·sin m past π."""
    t = _theta(c)
    if easy_margin:
        return np.where(c > 0, np.cos(t + m), c)
    return np.where(t + m <= np.pi, np.cos(t + m), c - m * np.sin(m))


def _ce(logits, labels):
    rows = np.arange(len(labels))
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return lse - logits[rows, labels]


def ref_subcenter(cos, labels, norm, s=64.0, m=0.5, k=3, easy_margin=False):
    cos = np.asarray(cos, np.float64)
    per_class = cos.reshape(len(cos), -1, k).max(axis=2)
    rows = np.arange(len(labels))
    per_class[rows, labels] = _arc(per_class[rows, labels], m, easy_margin)
    return _ce(s * per_class, labels)


def ref_curricular(cos, labels, norm, s=64.0, m=0.5, t=0.0):
    cos = np.asarray(cos, np.float64)
    rows = np.arange(len(labels))
    cy = cos[rows, labels]
    bound = np.cos(_theta(cy) + m)                     # cos(θ_y + m)
    logits = np.where(cos > bound[:, None], cos * (t + cos), cos)
    logits[rows, labels] = _arc(cy, m)
    return _ce(s * logits, labels)


def ref_magface(cos, labels, norm, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8,
                lambda_g=35.0, easy_margin=False):
    cos = np.asarray(cos, np.float64)
    rows = np.arange(len(labels))
    a = np.clip(np.asarray(norm, np.float64), l_a, u_a)
    margin = l_m + (u_m - l_m) * (a - l_a) / (u_a - l_a)
    logits = cos.copy()
    logits[rows, labels] = _arc(cos[rows, labels], margin, easy_margin)
    return _ce(s * logits, labels) + lambda_g * (1 / a + a / u_a ** 2)


def ref_adaface(cos, labels, norm, s=64.0, m=0.4, h=0.333, mu=20.0, sigma=100.0):
    cos = np.asarray(cos, np.float64)
    rows = np.arange(len(labels))
    safe = np.clip(np.asarray(norm, np.float64), 1e-3, 100)
    # the documented guard: σ + eps in the denominator
    z = np.clip((safe - mu) / ((sigma + EPS) / h), -1, 1)
    angle = np.clip(_theta(cos[rows, labels]) - m * z, EPS, np.pi - EPS)
    logits = cos.copy()
    logits[rows, labels] = np.cos(angle) - (m * z + m)
    return _ce(s * logits, labels)


def ref_circle(cos, labels, norm, gamma=256.0, m=0.25, weights_from=None):
    """log(1 + Σ_n exp(γ α_n (s_n − Δ_n)) exp(−γ α_p (s_p − Δ_p))), written
    as softplus(logsumexp(...) − ...); α from ``weights_from`` when given
    (to freeze them for finite differences)."""
    cos = np.asarray(cos, np.float64)
    frozen = cos if weights_from is None else np.asarray(weights_from, np.float64)
    out = []
    for i, y in enumerate(labels):
        others = np.delete(np.arange(cos.shape[1]), y)
        if others.size == 0:
            out.append(0.0)
            continue
        sp, sn = cos[i, y], cos[i, others]
        ap = max(1 + m - frozen[i, y], 0.0)
        an = np.maximum(frozen[i, others] + m, 0.0)
        neg = gamma * an * (sn - m)
        top = neg.max()
        lse = top + np.log(np.exp(neg - top).sum())
        out.append(np.logaddexp(0.0, lse - gamma * ap * (sp - (1 - m))))
    return np.array(out)


class Case:
    """A loss in a fixed state, its reference and how to feed it."""

    def __init__(self, name, make, ref, scale, k=1, norms=False):
        self.name, self.make, self.ref = name, make, ref
        self.scale, self.k, self.norms = scale, k, norms


CURRICULAR_T = 0.3      # a non-zero t, so that the t term is tested
ADA_STATS = (30.0, 15.0)  # μ, σ: norms in [5, 120] span the whole clip range

CASES = [
    Case("subcenter_arcface", lambda: _E(SubCenterArcFaceLoss()),
         ref_subcenter, 64.0, k=3),
    Case("subcenter_k2_easy", lambda: _E(SubCenterArcFaceLoss(s=30.0, m=0.3, k=2,
                                                           easy_margin=True)),
         lambda c, y, n: ref_subcenter(c, y, n, s=30.0, m=0.3, k=2, easy_margin=True),
         30.0, k=2),
    Case("curricularface", lambda: _E(CurricularFaceLoss(t=CURRICULAR_T)),
         lambda c, y, n: ref_curricular(c, y, n, t=CURRICULAR_T), 64.0),
    Case("magface", lambda: _E(MagFaceLoss()), ref_magface, 64.0, norms=True),
    Case("magface_easy", lambda: _E(MagFaceLoss(s=32.0, l_m=0.2, u_m=0.6, lambda_g=5.0,
                                             easy_margin=True)),
         lambda c, y, n: ref_magface(c, y, n, s=32.0, l_m=0.2, u_m=0.6, lambda_g=5.0,
                                     easy_margin=True), 32.0, norms=True),
    Case("adaface", lambda: _E(AdaFaceLoss(batch_mean=ADA_STATS[0], batch_std=ADA_STATS[1])),
         lambda c, y, n: ref_adaface(c, y, n, mu=ADA_STATS[0], sigma=ADA_STATS[1]),
         64.0, norms=True),
    Case("circle", lambda: _E(CircleLoss()), ref_circle, 256.0),
    Case("circle_small", lambda: _E(CircleLoss(gamma=32.0, m=0.4)),
         lambda c, y, n: ref_circle(c, y, n, gamma=32.0, m=0.4), 32.0),
]
IDS = [case.name for case in CASES]


def _inputs(case, batch, classes, dtype, seed):
    rng = np.random.RandomState(seed)
    cos = rng.uniform(-1, 1, size=(batch, classes * case.k)).astype(dtype)
    labels = rng.randint(0, classes, size=batch)
    norm = rng.uniform(5, 120, size=batch).astype(dtype) if case.norms else None
    return cos, labels, norm


def _extra(norm, dtype):
    return [] if norm is None else [mx.nd.array(norm, dtype=dtype)]


def _value_and_grad(loss, cos, labels, norm, dtype, train=False):
    x = mx.nd.array(cos, dtype=dtype)
    x.attach_grad()
    extra = _extra(norm, dtype)
    for e in extra:
        e.attach_grad()
    with autograd.record(train_mode=train):  # not training: the state stays
        out = loss(x, mx.nd.array(labels, dtype=dtype), *extra)
    out.backward()
    grads = [x.grad.asnumpy()] + [e.grad.asnumpy() for e in extra]
    return out.asnumpy(), grads


# ---- forward against NumPy --------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(np.float32, 4e-7), (np.float64, 1e-13)])
@pytest.mark.parametrize("batch, classes", [(1, 2), (7, 3), (16, 40)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case, batch, classes, dtype, atol):
    cos, labels, norm = _inputs(case, batch, classes, dtype, seed=batch + classes)
    got = _E(case.make())(mx.nd.array(cos, dtype=dtype), mx.nd.array(labels, dtype=dtype),
                      *_extra(norm, dtype))
    assert got.dtype == dtype and got.shape == (batch,)
    expected = case.ref(cos, labels, norm)
    # atol per unit of scale: float32 logits of size s are exact to ~s·1e-7
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-5, atol=atol * case.scale)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batch_of_one_class(case):
    cos, _, norm = _inputs(case, 9, 4, np.float64, seed=3)
    labels = np.full(9, 2)
    got = _E(case.make())(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels),
                      *_extra(norm, "float64"))
    np.testing.assert_allclose(got.asnumpy(), case.ref(cos, labels, norm), rtol=1e-10,
                               atol=1e-12)


# ---- backward against central finite differences ----------------------------

# True-class cosines away from ArcFace's kinks (threshold cos(π − m), easy 0);
# −0.97 and −0.93 lie in the θ + m > π fallback for m ≈ 0.5.
SAFE_TARGETS = np.array([-0.97, -0.93, -0.6, -0.3, 0.35, 0.62, 0.8, 0.96])


def _far_from(values, kinks, gap=1e-4):
    return np.min(np.abs(np.subtract.outer(np.ravel(values), np.ravel(kinks)))) > gap


def _check_fd(loss, cos, labels, norm=None, scale=64.0):
    _, grads = _value_and_grad(loss, cos, labels, norm, np.float64)
    extra = [] if norm is None else [norm]

    def total(c, *e):
        return loss(mx.nd.array(c, dtype="float64"), mx.nd.array(labels),
                    *[mx.nd.array(v, dtype="float64") for v in e]).asnumpy().sum()

    numeric = numeric_grad(lambda c: total(c, *extra), cos)
    np.testing.assert_allclose(grads[0], numeric, rtol=1e-5, atol=1e-6 * scale)
    return grads


def test_subcenter_backward_matches_finite_differences():
    k = 3
    rng = np.random.RandomState(1)
    cos = rng.uniform(-0.95, 0.95, size=(8, 4 * k))
    labels = rng.randint(0, 4, size=8)
    rows = np.arange(8)
    grouped = cos.reshape(8, 4, k)
    # no near-ties between the best two sub-centres of any class (the max kinks)
    top2 = np.sort(grouped, axis=2)[:, :, -2:]
    assert (top2[:, :, 1] - top2[:, :, 0]).min() > 1e-4
    best = grouped.max(axis=2)[rows, labels]
    assert _far_from(best, [math.cos(math.pi - 0.5)])
    grads = _check_fd(_E(SubCenterArcFaceLoss()), cos, labels)
    # only the winning sub-centre of each class gets a gradient
    assert ((grads[0].reshape(8, 4, k) != 0).sum(axis=2) <= 1).all()


def test_curricularface_backward_matches_finite_differences():
    rng = np.random.RandomState(7)
    cos = rng.uniform(-0.95, 0.95, size=(8, 5))
    labels = rng.randint(0, 5, size=8)
    rows = np.arange(8)
    cos[rows, labels] = SAFE_TARGETS
    bound = np.cos(np.arccos(SAFE_TARGETS) + 0.5)
    # the hard-negative mask must not flip within ±h
    assert np.abs(cos - bound[:, None]).min() > 1e-4
    hard = (cos > bound[:, None]).sum() - (cos[rows, labels] > bound).sum()
    assert hard >= 5, "the test needs hard negatives"
    _check_fd(_E(CurricularFaceLoss(t=CURRICULAR_T)), cos, labels)


def test_magface_backward_matches_finite_differences_also_in_norm():
    rng = np.random.RandomState(5)
    cos = rng.uniform(-0.95, 0.95, size=(8, 5))
    labels = rng.randint(0, 5, size=8)
    rows = np.arange(8)
    cos[rows, labels] = SAFE_TARGETS
    # inside [l_a, u_a] except 5 and 130 (clipped: zero gradient)
    norm = np.array([15.0, 130.0, 40.0, 100.0, 5.0, 70.0, 25.0, 55.0])
    margin = 0.45 + 0.35 * (np.clip(norm, 10, 110) - 10) / 100
    assert _far_from(np.arccos(SAFE_TARGETS) + margin, [np.pi])
    loss = _E(MagFaceLoss())
    grads = _check_fd(loss, cos, labels, norm)

    def total(n):
        return loss(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels),
                    mx.nd.array(n, dtype="float64")).asnumpy().sum()

    numeric = numeric_grad(total, norm)
    np.testing.assert_allclose(grads[1], numeric, rtol=1e-5, atol=1e-8)
    assert grads[1][1] == 0 and grads[1][4] == 0
    assert np.abs(grads[1][[0, 2, 3, 5, 6, 7]]).min() > 1e-6


def test_adaface_backward_matches_finite_differences_and_stops_at_norm():
    rng = np.random.RandomState(9)
    cos = rng.uniform(-0.95, 0.95, size=(8, 5))
    labels = rng.randint(0, 5, size=8)
    rows = np.arange(8)
    cos[rows, labels] = SAFE_TARGETS
    norm = np.array([20.0, 60.0, 31.0, 5.0, 42.0, 28.0, 12.0, 36.0])
    mu, sigma = ADA_STATS
    z = np.clip((norm - mu) / (sigma / 0.333), -1, 1)
    angle = np.arccos(SAFE_TARGETS) - 0.4 * z
    assert _far_from(angle, [0.0, np.pi]) and _far_from(z, [-1.0, 1.0])
    grads = _check_fd(_E(AdaFaceLoss(batch_mean=mu, batch_std=sigma)), cos, labels, norm)
    assert not grads[1].any(), "AdaFace detaches the norms"


def test_circle_backward_matches_finite_differences_with_frozen_weights():
    rng = np.random.RandomState(3)
    cos = rng.uniform(-0.95, 0.95, size=(8, 5))
    labels = rng.randint(0, 5, size=8)
    cos[np.arange(8), labels] = SAFE_TARGETS
    assert _far_from(cos, [-0.25])  # α_n's hinge at s_n = −m
    loss = _E(CircleLoss(gamma=32.0))
    _, grads = _value_and_grad(loss, cos, labels, None, np.float64)
    # the paper's gradient treats α as constants: differentiate the
    # reference with α frozen at the evaluation point
    numeric = numeric_grad(
        lambda c: ref_circle(c, labels, None, gamma=32.0, weights_from=cos).sum(), cos)
    np.testing.assert_allclose(grads[0], numeric, rtol=1e-5, atol=1e-6 * 32)


# ---- edge cases -------------------------------------------------------------

EXTREME = np.array([[1.0, -1.0, 0.3],          # perfect match
                    [-1.0, 1.0, 0.2],          # exactly opposite: θ = π
                    [1.0 + 1e-7, 0.5, -1.0],   # rounding pushed it past 1
                    [0.1, 1.0 + 1e-7, -1.0 - 1e-7]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cosine_at_and_beyond_one_is_finite(case, dtype):
    cos = np.repeat(EXTREME, case.k, axis=1)  # every sub-centre the same
    norm = np.array([1e-3, 10.0, 60.0, 150.0]) if case.norms else None
    labels = [0, 0, 0, 0]
    value, grads = _value_and_grad(_E(case.make()), cos, labels, norm, dtype)
    assert np.isfinite(value).all() and all(np.isfinite(g).all() for g in grads)
    if dtype == np.float64:
        np.testing.assert_allclose(value, case.ref(cos, labels, norm), rtol=1e-5,
                                   atol=1e-12)


def _loss1(loss, row, label=0, *extra):
    return loss(mx.nd.array([row], dtype="float64"), mx.nd.array([label]),
                *[mx.nd.array([e], dtype="float64") for e in extra]).asscalar()


def _ce_by_hand(target, others):
    return math.log(math.exp(target) + sum(math.exp(o) for o in others)) - target


@pytest.mark.parametrize("row", [[-0.95, 0.2, 0.1], [-0.5, 0.9, -0.2], [0.7, 0.1, 0.3]])
def test_subcenter_with_one_centre_is_arcface(row):
    arc = _loss1(_E(ArcFaceLoss()), row)
    assert _loss1(_E(SubCenterArcFaceLoss(k=1)), row) == pytest.approx(arc, rel=1e-12)
    # three sub-centres per class, the best one equal to the ArcFace row
    grouped = [v for c in row for v in (c - 0.3, c, c - 0.1)]
    assert _loss1(_E(SubCenterArcFaceLoss(k=3)), grouped) == pytest.approx(arc, rel=1e-12)


def test_curricularface_by_hand():
    loss = _E(CurricularFaceLoss(s=1.0, m=0.5, t=0.2))
    # θ_y = acos(0.6) = 0.9273, cos(θ_y + 0.5) = 0.1426: the 0.5 negative is
    # hard, 0.5·(0.2 + 0.5) = 0.35; the 0.1 negative is easy and stays 0.1
    target = math.cos(math.acos(0.6) + 0.5)
    expected = _ce_by_hand(target, [0.5 * 0.7, 0.1])
    assert _loss1(loss, [0.6, 0.5, 0.1]) == pytest.approx(expected, rel=1e-12)
    # θ_y = acos(−0.97) = 2.897 > π − 0.5: the target falls back to
    # −0.97 − 0.5·sin 0.5 = −1.2097, but hardness is judged against
    # cos(θ_y + 0.5) = −0.9689 (authors' code): −0.98 stays easy, 0.2 is hard
    bound = math.cos(math.acos(-0.97) + 0.5)
    assert -0.98 < bound < 0.2
    target = -0.97 - 0.5 * math.sin(0.5)
    expected = _ce_by_hand(target, [-0.98, 0.2 * 0.4])
    assert _loss1(loss, [-0.97, -0.98, 0.2]) == pytest.approx(expected, rel=1e-12)
    # no hard negative and t irrelevant: plain ArcFace
    assert _loss1(loss, [0.9, -0.2, 0.1]) == pytest.approx(
        _loss1(_E(ArcFaceLoss(s=1.0, m=0.5)), [0.9, -0.2, 0.1]), rel=1e-12)


def test_magface_by_hand():
    loss = _E(MagFaceLoss(s=2.0))
    # a = 60: m = 0.45 + 0.35·50/100 = 0.625; g = 1/60 + 60/110²
    target = math.cos(math.acos(0.4) + 0.625)
    expected = _ce_by_hand(2 * target, [2 * 0.1]) + 35 * (1 / 60 + 60 / 110 ** 2)
    assert _loss1(loss, [0.4, 0.1], 0, 60.0) == pytest.approx(expected, rel=1e-12)
    # a = 300 is clipped to 110: m = 0.8, g = 2/110
    target = math.cos(math.acos(0.4) + 0.8)
    expected = _ce_by_hand(2 * target, [2 * 0.1]) + 35 * 2 / 110
    assert _loss1(loss, [0.4, 0.1], 0, 300.0) == pytest.approx(expected, rel=1e-12)
    # constant margin, no regulariser: ArcFace
    flat = _E(MagFaceLoss(s=64.0, l_m=0.5, u_m=0.5, lambda_g=0.0))
    row = [-0.95, 0.3, 0.2]
    assert _loss1(flat, row, 0, 42.0) == pytest.approx(_loss1(_E(ArcFaceLoss()), row),
                                                       rel=1e-12)


def test_adaface_by_hand():
    loss = _E(AdaFaceLoss(s=1.0, m=0.4, h=1.0, batch_mean=20.0, batch_std=10.0))
    row, c = [0.3, 0.1], 0.3
    # ‖z‖ = μ: ẑ = 0, no angular margin, additive m: CosFace
    assert _loss1(loss, row, 0, 20.0) == pytest.approx(
        _loss1(_E(CosFaceLoss(s=1.0, m=0.4)), row), rel=1e-9)
    # ‖z‖ = 24: ẑ = 4/(10/1) = 0.4, g_angle = −0.16, g_add = 0.56
    target = math.cos(math.acos(c) - 0.16) - 0.56
    assert _loss1(loss, row, 0, 24.0) == pytest.approx(_ce_by_hand(target, [0.1]),
                                                       rel=1e-9)
    # ‖z‖ = 5: ẑ = −1.5 clipped to −1, cos(θ + m) with no additive part
    target = math.cos(math.acos(c) + 0.4)
    assert _loss1(loss, row, 0, 5.0) == pytest.approx(_ce_by_hand(target, [0.1]),
                                                      rel=1e-9)
    # ‖z‖ = 90: ẑ = 1, cos(θ − m) − 2m, θ − m = 0.14 − 0.4 clipped at eps
    target = math.cos(EPS) - 0.8
    assert _loss1(loss, [0.99, 0.1], 0, 90.0) == pytest.approx(
        _ce_by_hand(target, [0.1]), rel=1e-9)
    # h scales the standardised norm: h = 0.5 halves ẑ (0.4 -> 0.2)
    half = _E(AdaFaceLoss(s=1.0, m=0.4, h=0.5, batch_mean=20.0, batch_std=10.0))
    target = math.cos(math.acos(c) - 0.08) - 0.48
    assert _loss1(half, row, 0, 24.0) == pytest.approx(_ce_by_hand(target, [0.1]),
                                                       rel=1e-9)


def test_circle_by_hand():
    loss = _E(CircleLoss(gamma=2.0, m=0.25))
    # s_p = 0.5: α_p = 0.75, s_p − Δ_p = −0.25; s_n = 0.2: α_n = 0.45,
    # s_n − Δ_n = −0.05; s_n = −0.6: α_n = 0 (past its optimum, no push)
    expected = math.log(1 + (math.exp(2 * 0.45 * -0.05) + math.exp(0.0))
                        * math.exp(-2 * 0.75 * -0.25))
    assert _loss1(loss, [0.5, 0.2, -0.6]) == pytest.approx(expected, rel=1e-12)
    # one class: no negatives, nothing to separate
    assert _loss1(loss, [0.5]) == 0.0
    # γ = 256 and a hopeless row stay finite (and linear in the gap)
    big = _loss1(_E(CircleLoss()), [-1.0, 1.0, 1.0])
    assert np.isfinite(big) and big > 100


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_labels_raise(case):
    loss = _E(case.make())
    cos = mx.nd.array(np.repeat([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], case.k, axis=1))
    extra = [mx.nd.array([20.0, 30.0])] if case.norms else []
    with pytest.raises(ValueError, match=r"label 3 is out of range for 3 classes"):
        loss(cos, mx.nd.array([0, 3]), *extra)
    with pytest.raises(ValueError, match=r"label -1 is out of range for 3 classes"):
        loss(cos, mx.nd.array([-1, 0]), *extra)
    with pytest.raises(ValueError, match=r"label 1.5 "):
        loss(cos, mx.nd.array([1.5, 0]), *extra)
    with pytest.raises(ValueError, match=r"expected 2 labels"):
        loss(cos, mx.nd.array([0, 1, 2]), *extra)
    with pytest.raises(ValueError, match=r"shape \(batch, num_classes"):
        loss(mx.nd.array([0.1, 0.2, 0.3]), mx.nd.array([0]), *extra[:1])


def test_subcenter_columns_must_divide_by_k():
    with pytest.raises(ValueError, match=r"7 columns, not divisible by k=3"):
        _E(SubCenterArcFaceLoss(k=3))(mx.nd.ones((2, 7)) * 0.1, mx.nd.array([0, 1]))


@pytest.mark.parametrize("cls", [MagFaceLoss, AdaFaceLoss])
def test_norm_input_is_checked(cls):
    cos, labels = mx.nd.array([[0.1, 0.2], [0.3, 0.4]]), mx.nd.array([0, 1])
    with pytest.raises(ValueError, match=r"expected 2 embedding norms"):
        _E(cls())(cos, labels, mx.nd.array([20.0, 30.0, 40.0]))
    with pytest.raises(TypeError, match=r"needs the embedding norms"):
        _E(cls())(cos, labels)
    assert cls.extra_inputs == ("norm",)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float16_is_computed_in_float32(case):
    cos, labels, norm = _inputs(case, 8, 6, np.float32, seed=11)
    half = mx.nd.array(cos, dtype="float16")
    half.attach_grad()
    with autograd.record(train_mode=False):
        got = _E(case.make())(half, mx.nd.array(labels, dtype="float16"),
                          *_extra(norm, "float16"))
    got.backward()
    assert got.dtype == np.float32
    assert half.grad.dtype == np.float16 and np.isfinite(half.grad.asnumpy()).all()
    # the same fp16-rounded inputs in float32 give the same loss
    rounded = [None if v is None else v.astype(np.float16).astype(np.float32)
               for v in (cos, norm)]
    single = _E(case.make())(mx.nd.array(rounded[0]), mx.nd.array(labels),
                         *_extra(rounded[1], "float32")).asnumpy()
    np.testing.assert_allclose(got.asnumpy(), single, rtol=1e-6, atol=1e-6)


# ---- hybridized == imperative -----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hybridized_equals_imperative(case, dtype):
    imperative, hybrid = _E(case.make()), _E(case.make())
    hybrid.hybridize()
    for seed in range(3):  # later calls run the cached graph
        cos, labels, norm = _inputs(case, 6, 5, dtype, seed)
        value_i, grads_i = _value_and_grad(imperative, cos, labels, norm, dtype)
        value_h, grads_h = _value_and_grad(hybrid, cos, labels, norm, dtype)
        np.testing.assert_allclose(value_h, value_i, rtol=1e-6)
        for g_h, g_i in zip(grads_h, grads_i):
            np.testing.assert_allclose(g_h, g_i, rtol=1e-6, atol=1e-9)


def _train_call(loss, cos, labels, norm):
    x = mx.nd.array(cos, dtype="float64")
    x.attach_grad()
    with autograd.record():  # training mode: the state advances
        out = loss(x, mx.nd.array(labels), *_extra(norm, "float64"))
    out.backward()
    return out.asnumpy(), x.grad.asnumpy()


def test_curricularface_t_advances_identically_when_hybridized():
    imperative, hybrid = _E(CurricularFaceLoss()), _E(CurricularFaceLoss())
    hybrid.hybridize()
    t = 0.0  # the paper's t(0)
    for step in range(4):
        cos, labels, _ = _inputs(CASES[2], 6 - step, 5, np.float64, seed=20 + step)
        cos[np.arange(len(labels)), labels] = np.abs(cos[np.arange(len(labels)), labels])
        t_before = t
        t = 0.01 * cos[np.arange(len(labels)), labels].mean() + 0.99 * t
        expected = ref_curricular(cos, labels, None, t=t)  # updated t used at once
        outs = [_train_call(loss, cos, labels, None) for loss in (imperative, hybrid)]
        for loss in (imperative, hybrid):
            assert loss.t == pytest.approx(t, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(outs[0][0], expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-12)
        np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-10, atol=1e-12)
        # the order matters: with the old t the loss would differ
        if step == 3:
            stale = ref_curricular(cos, labels, None, t=t_before)
            assert np.abs(stale - expected).max() > 1e-6
    # outside training t stays; setting it (resume) takes effect at once
    cos, labels, _ = _inputs(CASES[2], 4, 5, np.float64, seed=99)
    hybrid(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels))
    assert hybrid.t == pytest.approx(t, rel=1e-12)
    hybrid.t = 0.7
    got = hybrid(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels)).asnumpy()
    np.testing.assert_allclose(got, ref_curricular(cos, labels, None, t=0.7), rtol=1e-10)
    # a failing call (bad label) does not move the state
    with autograd.record(), pytest.raises(ValueError):
        imperative(mx.nd.array(cos), mx.nd.array([0, 1, 2, 9]))
    assert imperative.t == pytest.approx(t, rel=1e-12)


def test_adaface_statistics_advance_identically_when_hybridized():
    imperative, hybrid = _E(AdaFaceLoss()), _E(AdaFaceLoss())
    hybrid.hybridize()
    mu, sigma = 20.0, 100.0  # the authors' initial values
    assert (hybrid.batch_mean, hybrid.batch_std) == (mu, sigma)
    for step, batch in enumerate([6, 5, 1, 7]):
        cos, labels, norm = _inputs(CASES[5], batch, 5, np.float64, seed=40 + step)
        norm[0] = 150.0  # clipped to 100 before the statistics
        safe = np.clip(norm, 1e-3, 100)
        mu = 0.01 * safe.mean() + 0.99 * mu
        if batch > 1:  # unbiased std; a single sample leaves σ alone
            sigma = 0.01 * safe.std(ddof=1) + 0.99 * sigma
        expected = ref_adaface(cos, labels, norm, mu=mu, sigma=sigma)
        outs = [_train_call(loss, cos, labels, norm) for loss in (imperative, hybrid)]
        for loss in (imperative, hybrid):
            assert loss.batch_mean == pytest.approx(mu, rel=1e-12)
            assert loss.batch_std == pytest.approx(sigma, rel=1e-12)
        np.testing.assert_allclose(outs[0][0], expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-12)
        np.testing.assert_allclose(outs[1][1], outs[0][1], rtol=1e-10, atol=1e-12)
    # outside training the statistics stay
    hybrid(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels), mx.nd.array(norm))
    assert hybrid.batch_mean == pytest.approx(mu, rel=1e-12)
    # resume: set the statistics
    hybrid.batch_mean, hybrid.batch_std = 30.0, 15.0
    got = hybrid(mx.nd.array(cos, dtype="float64"), mx.nd.array(labels),
                 mx.nd.array(norm, dtype="float64")).asnumpy()
    np.testing.assert_allclose(got, ref_adaface(cos, labels, norm, mu=30.0, sigma=15.0),
                               rtol=1e-10)


def test_state_can_be_passed_explicitly():
    cos, labels, norm = _inputs(CASES[5], 4, 5, np.float64, seed=8)
    x, y = mx.nd.array(cos, dtype="float64"), mx.nd.array(labels)
    curricular = _E(CurricularFaceLoss())
    with autograd.record():  # a given t is used as it is, never updated
        got = curricular(x, y, mx.nd.array([0.4], dtype="float64")).asnumpy()
    assert curricular.t == 0.0
    np.testing.assert_allclose(got, ref_curricular(cos, labels, None, t=0.4), rtol=1e-10)
    ada = _E(AdaFaceLoss())
    with autograd.record():
        got = ada(x, y, mx.nd.array(norm, dtype="float64"),
                  mx.nd.array([25.0], dtype="float64"),
                  mx.nd.array([8.0], dtype="float64")).asnumpy()
    assert ada.batch_mean == 20.0
    np.testing.assert_allclose(got, ref_adaface(cos, labels, norm, mu=25.0, sigma=8.0),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="both mean and std"):
        ada(x, y, mx.nd.array(norm), mx.nd.array([25.0]))


# ---- hyper-parameters and registry ------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: _E(SubCenterArcFaceLoss(k=0)), "k must be an integer >= 1"),
    (lambda: _E(SubCenterArcFaceLoss(k=2.5)), "k must be an integer >= 1"),
    (lambda: _E(SubCenterArcFaceLoss(m=4.0)), "margin m"),
    (lambda: _E(CurricularFaceLoss(m=-0.1)), "margin m"),
    (lambda: _E(CurricularFaceLoss(alpha=0)), "alpha"),
    (lambda: _E(MagFaceLoss(l_a=120.0)), "l_a"),
    (lambda: _E(MagFaceLoss(l_m=0.9)), "l_m"),
    (lambda: _E(MagFaceLoss(lambda_g=-1)), "lambda_g"),
    (lambda: _E(AdaFaceLoss(h=0)), "h must be positive"),
    (lambda: _E(AdaFaceLoss(m=2.0)), "margin m"),
    (lambda: _E(AdaFaceLoss(alpha=1.5)), "alpha"),
    (lambda: _E(AdaFaceLoss(batch_std=0.0)), "batch_std"),
    (lambda: _E(CircleLoss(gamma=0)), "gamma"),
    (lambda: _E(CircleLoss(m=1.0)), "margin m"),
    (lambda: _E(MagFaceLoss(s=-1)), "scale s"),
])
def test_invalid_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name, cls", [
    ("subcenter_arcface", SubCenterArcFaceLoss), ("curricularface", CurricularFaceLoss),
    ("magface", MagFaceLoss), ("adaface", AdaFaceLoss), ("circle", CircleLoss)])
def test_registry_names(name, cls):
    assert name in fr_lib.get_loss_list()
    assert type(fr_lib.get_loss(name)) is cls
    assert type(fr_lib.get_loss(name.upper(), eps=1e-6)) is cls
    assert cls.__name__ in fr_lib.loss.__all__


def test_unknown_name_lists_the_new_losses():
    with pytest.raises(ValueError, match=r"unknown loss 'curricular'") as info:
        fr_lib.get_loss("curricular")
    for name in ("adaface", "circle", "curricularface", "magface", "subcenter_arcface"):
        assert name in str(info.value)

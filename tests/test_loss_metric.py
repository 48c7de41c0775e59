"""Metric-learning losses (fr_lib.loss.metric) against brute-force NumPy loops
over pairs and triplets written from the papers' definitions, hand
calculations and central finite differences."""
import itertools

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import fr_lib
from fr_lib.loss import ContrastiveBatchLoss, ContrastiveLoss, TripletLoss
from numeric_helpers import numeric_grad

EPS = 1e-12  # under the square roots, as documented


# ---- NumPy references (float64, explicit loops, direct differences) ---------

def _unit(x):
    return x / np.sqrt((x ** 2).sum(axis=1, keepdims=True) + EPS)


def ref_unit(x, normalize):
    return _unit(x) if normalize else x


def ref_contrastive(e1, e2, same, margin=1.0, normalize=False):
    e1, e2 = np.asarray(e1, np.float64), np.asarray(e2, np.float64)
    if normalize:
        e1, e2 = _unit(e1), _unit(e2)
    out = []
    for a, b, y in zip(e1, e2, same):
        sq = float(((a - b) ** 2).sum())
        d = np.sqrt(sq + EPS)
        out.append(sq / 2 if y == 1 else max(0.0, margin - d) ** 2 / 2)
    return np.array(out)


def ref_contrastive_batch(x, labels, margin=1.0, normalize=False, balanced=False):
    x = np.asarray(x, np.float64)
    genuine, impostor = [], []
    for i, j in itertools.combinations(range(len(x)), 2):
        value = ref_contrastive(x[i:i + 1], x[j:j + 1], [int(labels[i] == labels[j])],
                                margin, normalize)[0]
        (genuine if labels[i] == labels[j] else impostor).append(value)
    if not balanced:
        pairs = genuine + impostor
        return sum(pairs) / len(pairs) if pairs else 0.0
    means = [np.mean(kind) for kind in (genuine, impostor) if kind]
    return float(np.mean(means)) if means else 0.0


def _dist(x, a, b, squared):
    sq = float(((x[a] - x[b]) ** 2).sum())
    return sq if squared else np.sqrt(sq + EPS)


def ref_triplet_terms(x, labels, margin, mining, squared=True, normalize=False):
    """Hinge values of the mined terms, one Python loop per definition."""
    x = np.asarray(x, np.float64)
    if normalize:
        x = _unit(x)
    n = len(x)
    D = lambda a, b: _dist(x, a, b, squared)  # noqa: E731
    terms = []
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        if not positives or not negatives:
            continue  # this anchor forms no triplet
        if mining == "all":
            terms += [max(0.0, D(a, p) - D(a, q) + margin)
                      for p in positives for q in negatives]
        elif mining == "hard":
            hardest_p = max(D(a, p) for p in positives)
            hardest_n = min(D(a, q) for q in negatives)
            terms.append(max(0.0, hardest_p - hardest_n + margin))
        else:  # FaceNet semi-hard: d(a,p) < d(a,n) < d(a,p) + margin
            for p in positives:
                dap = D(a, p)
                semi = [D(a, q) for q in negatives if dap < D(a, q) < dap + margin]
                # none: the easiest negative (largest distance)
                dan = min(semi) if semi else max(D(a, q) for q in negatives)
                terms.append(max(0.0, dap - dan + margin))
    return np.array(terms)


def ref_triplet(x, labels, margin, mining, average, **kw):
    terms = ref_triplet_terms(x, labels, margin, mining, **kw)
    active = int((terms > 0).sum())
    count = active if average == "nonzero" else terms.size
    fraction = active / terms.size if terms.size else 0.0
    return (terms.sum() / count if count else 0.0), fraction


# ---- helpers ------------------------------------------------------------------

def _pk_labels(p, k, rng):
    return np.repeat(rng.choice(50, p, replace=False), k)


def _batch(labels, dim, seed, dtype=np.float64):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(len(labels), dim)).astype(dtype)


def _labels(kind, seed):
    rng = np.random.RandomState(100 + seed)
    if kind == "pk":
        return _pk_labels(3, 4, rng)
    return rng.randint(0, 4, size=11)   # random sizes, singletons included


def _value_and_grad(loss, *inputs, dtype=np.float64, grad_input=0):
    arrays = [mx.nd.array(a, dtype=dtype) for a in inputs]
    arrays[grad_input].attach_grad()
    with autograd.record():
        out = loss(*arrays)
        first = out[0] if isinstance(out, (list, tuple)) else out
    first.backward()
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [o.asnumpy() for o in outs], arrays[grad_input].grad.asnumpy()


# ---- contrastive (pairs) --------------------------------------------------------

def test_contrastive_by_hand():
    # d(a, b) = ||(3, 4)|| = 5: genuine 5²/2; impostor (6 − 5)²/2; beyond margin 0
    a, b = [[0.0, 0.0]] * 3, [[3.0, 4.0]] * 3
    got = ContrastiveLoss(margin=6.0)(mx.nd.array(a, dtype="float64"),
                                      mx.nd.array(b, dtype="float64"),
                                      mx.nd.array([1, 0, 0]))
    np.testing.assert_allclose(got.asnumpy(), [12.5, 0.5, 0.5], rtol=1e-12)
    # gluon-face took ||(a − b)²|| = ||(9, 16)|| = 18.36 as the distance
    got = ContrastiveLoss(margin=1.0)(mx.nd.array(a), mx.nd.array(b), mx.nd.array([1, 0, 0]))
    np.testing.assert_allclose(got.asnumpy(), [12.5, 0.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("normalize", [False, True])
def test_contrastive_matches_numpy(normalize, dtype, rtol):
    rng = np.random.RandomState(1)
    e1, e2 = rng.normal(size=(2, 16, 5)) * 0.5
    same = rng.randint(0, 2, size=16)
    margin = 1.4 if normalize else 1.6   # a margin inside the range of distances
    loss = ContrastiveLoss(margin=margin, normalize=normalize)
    got = loss(mx.nd.array(e1, dtype=dtype), mx.nd.array(e2, dtype=dtype), mx.nd.array(same))
    assert got.shape == (16,) and got.dtype == dtype
    expected = ref_contrastive(e1.astype(dtype), e2.astype(dtype), same, margin, normalize)
    assert (expected[same == 0] > 0).any() and (expected[same == 0] == 0).any()
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("normalize", [False, True])
def test_contrastive_gradient_matches_finite_differences(normalize):
    rng = np.random.RandomState(2)
    e1, e2 = rng.normal(size=(2, 8, 3)) * 0.6
    same = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    margin = 1.3 if normalize else 2.0
    dist = np.sqrt(((ref_unit(e1, normalize) - ref_unit(e2, normalize)) ** 2).sum(1))
    assert (np.abs(dist - margin) > 1e-3).all()   # away from the hinge
    loss = ContrastiveLoss(margin=margin, normalize=normalize)
    (_,), grad = _value_and_grad(loss, e1, e2, same)

    def total(x):
        return ref_contrastive(x, e2, same, margin, normalize).sum()
    np.testing.assert_allclose(grad, numeric_grad(total, e1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contrastive_identical_vectors_have_finite_gradient(dtype):
    e = np.array([[0.3, -0.2, 0.5], [1.0, 1.0, 1.0]])
    (value,), grad = _value_and_grad(ContrastiveLoss(margin=1.0), e, e.copy(), [0, 1],
                                     dtype=dtype)
    assert np.isfinite(grad).all() and np.isfinite(value).all()
    # impostor at d = sqrt(eps) = 1e-6: (1 − 1e-6)²/2; genuine: 0
    np.testing.assert_allclose(value, [(1 - 1e-6) ** 2 / 2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)


def test_contrastive_errors():
    loss = ContrastiveLoss()
    a = mx.nd.zeros((3, 2))
    with pytest.raises(ValueError, match=r"same must be 1 .* or 0 .*, got 2"):
        loss(a, a, mx.nd.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"same shape \(batch, dim\), got \(3, 2\) and \(3, 4\)"):
        loss(a, mx.nd.zeros((3, 4)), mx.nd.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"expected 3 pair labels `same`"):
        loss(a, a, mx.nd.array([0, 1]))
    with pytest.raises(ValueError, match=r"margin must be >= 0, got -1"):
        ContrastiveLoss(margin=-1)
    with pytest.raises(ValueError, match=r"eps must be in \(0, 0.01\), got 0"):
        ContrastiveLoss(eps=0)


# ---- contrastive (all pairs of a batch) -------------------------------------------

@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["pk", "random"])
def test_contrastive_batch_matches_pair_loop(kind, normalize, balanced):
    for seed in range(2):
        labels = _labels(kind, seed)
        x = _batch(labels, 4, seed) * 0.5
        margin = 1.0 if normalize else 1.5
        loss = ContrastiveBatchLoss(margin=margin, normalize=normalize, balanced=balanced)
        got = loss(mx.nd.array(x, dtype="float64"), mx.nd.array(labels))
        assert got.shape == (1,)
        expected = ref_contrastive_batch(x, labels, margin, normalize, balanced)
        np.testing.assert_allclose(got.asnumpy(), [expected], rtol=1e-10)


def test_contrastive_batch_by_hand():
    # 1-D embeddings 0, 1, 3 with labels a, a, b; margin 2.5. Pairs:
    # (0,1) genuine d=1: 0.5; (0,2) impostor d=3: 0; (1,2) impostor d=2: 0.125
    x, labels = [[0.0], [1.0], [3.0]], [7, 7, 9]
    loss = ContrastiveBatchLoss(margin=2.5)
    got = loss(mx.nd.array(x, dtype="float64"), mx.nd.array(labels))
    np.testing.assert_allclose(got.asnumpy(), [(0.5 + 0 + 0.125) / 3], rtol=1e-10)
    balanced = ContrastiveBatchLoss(margin=2.5, balanced=True)
    got = balanced(mx.nd.array(x, dtype="float64"), mx.nd.array(labels))
    np.testing.assert_allclose(got.asnumpy(), [(0.5 + 0.0625) / 2], rtol=1e-10)


def test_contrastive_batch_gradient_matches_finite_differences():
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = _batch(labels, 3, seed=4) * 0.5
    loss = ContrastiveBatchLoss(margin=1.5, balanced=True)
    _, grad = _value_and_grad(loss, x, labels)

    def total(z):
        return ref_contrastive_batch(z, labels, 1.5, balanced=True)
    np.testing.assert_allclose(grad, numeric_grad(total, x), rtol=1e-5, atol=1e-8)


# ---- triplet -------------------------------------------------------------------------

MODES = [("all", "nonzero"), ("all", "all"), ("hard", "all"), ("hard", "nonzero"),
         ("semihard", "all"), ("semihard", "nonzero")]


@pytest.mark.parametrize("squared, normalize, margin",
                         [(True, False, 0.8), (False, False, 0.5), (True, True, 0.2),
                          (False, True, 0.3)])
@pytest.mark.parametrize("kind", ["pk", "random"])
@pytest.mark.parametrize("mining, average", MODES)
def test_triplet_matches_brute_force(mining, average, kind, squared, normalize, margin):
    loss = TripletLoss(margin=margin, mining=mining, average=average, squared=squared,
                       normalize=normalize, return_fraction=True)
    for seed in range(3):
        labels = _labels(kind, seed)
        x = _batch(labels, 5, seed) * 0.4
        value, fraction = loss(mx.nd.array(x, dtype="float64"), mx.nd.array(labels))
        assert value.shape == (1,) and fraction.shape == (1,)
        expected, expected_fraction = ref_triplet(x, labels, margin, mining, average,
                                                  squared=squared, normalize=normalize)
        np.testing.assert_allclose(value.asnumpy(), [expected], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fraction.asnumpy(), [expected_fraction], rtol=1e-12)


def test_triplet_float32_matches_brute_force():
    labels = _labels("pk", 0)
    x = _batch(labels, 8, 0, dtype=np.float32)
    for mining in ("all", "hard", "semihard"):
        got = TripletLoss(margin=0.5, mining=mining, normalize=True)(
            mx.nd.array(x), mx.nd.array(labels, dtype="int32"))
        assert got.dtype == np.float32
        expected, _ = ref_triplet(x, labels, 0.5, mining,
                                  "nonzero" if mining == "all" else "all", normalize=True)
        np.testing.assert_allclose(got.asnumpy(), [expected], rtol=1e-5)


# 1-D embeddings 0, 1, 1.5, 4 with labels a, a, b, b; squared distances
# D01 = 1, D02 = 2.25, D03 = 16, D12 = 0.25, D13 = 9, D23 = 6.25; margin 1.5.
HAND_X, HAND_LABELS, HAND_MARGIN = [[0.0], [1.0], [1.5], [4.0]], [0, 0, 1, 1], 1.5
HAND = {
    # 8 triplets; active: (0,1,2) .25, (1,0,2) 2.25, (2,3,0) 5.5, (2,3,1) 7.5
    ("all", "nonzero"): (15.5 / 4, 4 / 8),
    ("all", "all"): (15.5 / 8, 4 / 8),
    # per anchor: 1−2.25+1.5 = .25, 1−.25+1.5 = 2.25, 6.25−.25+1.5 = 7.5, 6.25−9+1.5 < 0
    ("hard", "all"): (10.0 / 4, 3 / 4),
    # (0,1): 2.25 in (1, 2.5): .25; (1,0): nothing in (1, 2.5), easiest 9: 0;
    # (2,3): nothing beyond 6.25, easiest 2.25: 5.5; (3,2): 9 > 7.75: 0
    ("semihard", "all"): (5.75 / 4, 2 / 4),
}


@pytest.mark.parametrize("mining, average", list(HAND), ids=[m for m, _ in HAND])
def test_triplet_by_hand(mining, average):
    loss = TripletLoss(margin=HAND_MARGIN, mining=mining, average=average,
                       return_fraction=True)
    value, fraction = loss(mx.nd.array(HAND_X, dtype="float64"), mx.nd.array(HAND_LABELS))
    expected_value, expected_fraction = HAND[(mining, average)]
    assert value.asscalar() == pytest.approx(expected_value, rel=1e-12)
    assert fraction.asscalar() == pytest.approx(expected_fraction, rel=1e-12)


def test_triplet_default_average():
    assert TripletLoss(mining="all").average == "nonzero"
    assert TripletLoss(mining="hard").average == "all"
    assert TripletLoss(mining="semihard").average == "all"


def _min_hinge_gap(x, labels, margin, squared):
    """Smallest |D(a,p) − D(a,n) + m| and smallest gap between two
    distances from one anchor: the finite difference must cross no kink."""
    gaps = []
    n = len(x)
    for a in range(n):
        ds = [_dist(x, a, b, squared) for b in range(n) if b != a]
        gaps.append(np.diff(np.sort(ds)).min())
        for p, q in itertools.product(range(n), repeat=2):
            if p != a and labels[p] == labels[a] and labels[q] != labels[a]:
                gaps.append(abs(_dist(x, a, p, squared) - _dist(x, a, q, squared) + margin))
    return min(gaps)


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_triplet_gradient_matches_finite_differences(mining, squared):
    labels = np.array([3, 3, 5, 5, 8, 8, 8])
    x = _batch(labels, 3, seed=11) * 0.5
    margin = 0.6 if squared else 0.4
    assert _min_hinge_gap(x, labels, margin, squared) > 1e-4  # away from ties
    loss = TripletLoss(margin=margin, mining=mining, squared=squared)
    (value,), grad = _value_and_grad(loss, x, labels)
    assert value[0] > 0

    def total(z):
        return ref_triplet(z, labels, margin, mining, loss.average, squared=squared)[0]
    np.testing.assert_allclose(grad, numeric_grad(total, x), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_triplet_degenerate_batches_give_zero(mining):
    loss = TripletLoss(mining=mining, return_fraction=True)
    hybrid = TripletLoss(mining=mining, return_fraction=True)
    hybrid.hybridize()
    x = _batch(np.zeros(6), 4, seed=5)
    cases = [np.full(6, 4),            # one identity: no negatives
             np.arange(6),             # all different: no positives
             ]
    for block in (loss, hybrid):
        for labels in cases:
            (value, fraction), grad = _value_and_grad(block, x, labels)
            assert value.tolist() == [0.0] and fraction.tolist() == [0.0]
            assert np.isfinite(grad).all() and not grad.any()
        (value, fraction), _ = _value_and_grad(block, x[:1], [0])   # batch of one
        assert value.tolist() == [0.0] and fraction.tolist() == [0.0]


def test_triplet_duplicate_embeddings_have_finite_gradient():
    # a PKSampler may repeat a sample of a small identity: distance 0
    x = np.array([[0.1, 0.2], [0.1, 0.2], [0.9, -0.3], [0.5, 0.5]])
    labels = [0, 0, 1, 1]
    for mining in ("all", "hard", "semihard"):
        (value,), grad = _value_and_grad(TripletLoss(mining=mining, squared=False), x, labels)
        assert np.isfinite(value).all() and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_hybridized_equals_imperative(mining, dtype):
    kwargs = dict(mining=mining, squared=False, normalize=True, margin=0.3,
                  return_fraction=True)
    imperative, hybrid = TripletLoss(**kwargs), TripletLoss(**kwargs)
    hybrid.hybridize()
    for seed, kind in enumerate(["pk", "random", "pk"]):  # two batch sizes
        labels = _labels(kind, seed)
        x = _batch(labels, 6, seed, dtype)
        outs_i, grad_i = _value_and_grad(imperative, x, labels, dtype=dtype)
        outs_h, grad_h = _value_and_grad(hybrid, x, labels, dtype=dtype)
        for h, i in zip(outs_h, outs_i):
            np.testing.assert_allclose(h, i, rtol=1e-6)
        np.testing.assert_allclose(grad_h, grad_i, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block", [ContrastiveBatchLoss(balanced=True),
                                   ContrastiveLoss(normalize=True)],
                         ids=["contrastive_batch", "contrastive"])
def test_contrastive_hybridized_equals_imperative(block):
    labels = _labels("random", 0)
    x = _batch(labels, 4, 0) * 0.4
    inputs = ([x, labels] if isinstance(block, ContrastiveBatchLoss)
              else [x, x[::-1].copy(), labels % 2])
    outs_i, grad_i = _value_and_grad(block, *inputs)
    block.hybridize()
    outs_h, grad_h = _value_and_grad(block, *inputs)
    np.testing.assert_allclose(outs_h[0], outs_i[0], rtol=1e-10)
    np.testing.assert_allclose(grad_h, grad_i, rtol=1e-9, atol=1e-12)


def test_float16_is_computed_in_float32():
    labels = _labels("pk", 1)
    x = _batch(labels, 4, 1, np.float32)
    got = TripletLoss(mining="hard")(mx.nd.array(x, dtype="float16"), mx.nd.array(labels))
    assert got.dtype == np.float32
    rounded = x.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(got.asnumpy(), [ref_triplet(rounded, labels, 0.2, "hard",
                                                           "all")[0]], rtol=1e-5)


def test_labels_as_column_and_integers():
    labels = _labels("random", 2)
    x = mx.nd.array(_batch(labels, 3, 2), dtype="float64")
    loss = TripletLoss(mining="hard")
    flat = loss(x, mx.nd.array(labels)).asnumpy()
    column = loss(x, mx.nd.array(labels.reshape(-1, 1), dtype="int32")).asnumpy()
    np.testing.assert_array_equal(flat, column)


def test_triplet_errors():
    with pytest.raises(ValueError, match=r"mining must be one of .*got 'random'"):
        TripletLoss(mining="random")
    with pytest.raises(ValueError, match=r"average must be one of .*got 'mean'"):
        TripletLoss(average="mean")
    with pytest.raises(ValueError, match=r"margin must be >= 0, got -0.1"):
        TripletLoss(margin=-0.1)
    loss = TripletLoss()
    with pytest.raises(ValueError, match=r"expected 3 labels \(one per embedding\)"):
        loss(mx.nd.zeros((3, 2)), mx.nd.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(batch, dim\), got shape \(3,\)"):
        loss(mx.nd.zeros(3), mx.nd.zeros(3))
    with pytest.raises(ValueError, match=r"expected 3 labels"):
        ContrastiveBatchLoss()(mx.nd.zeros((3, 2)), mx.nd.zeros(2))


# ---- registry ----------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", [("contrastive", ContrastiveLoss),
                                       ("contrastive_batch", ContrastiveBatchLoss),
                                       ("triplet", TripletLoss)])
def test_registry_names(name, cls):
    assert name in fr_lib.get_loss_list()
    assert type(fr_lib.get_loss(name)) is cls
    assert type(fr_lib.get_loss(name.upper(), margin=0.5)) is cls
    assert fr_lib.get_loss("triplet", mining="semihard").mining == "semihard"

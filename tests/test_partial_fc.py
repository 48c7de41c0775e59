"""Partial FC (fr_lib.train.partial_fc) against a full NormDense head, a NumPy
reference of the sampled softmax and hand-worked label remapping."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from numpy.testing import assert_allclose, assert_array_equal

import fr_lib
from fr_lib.model_zoo import NormDense
from fr_lib.train.partial_fc import PartialFC

CTX2 = [mx.cpu(0), mx.cpu(1)]


def _data(batch, dim, classes, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    y = rng.randint(0, classes, batch)
    return x, y


def _pfc_step(pfc, x, y, extra=(), batch_size=1):
    X = mx.nd.array(x)
    X.attach_grad()
    with autograd.record():
        out = pfc(X, mx.nd.array(y), *extra)
        total = out.mean()
    total.backward()
    ids, wgrad = pfc.sampled_grad()
    pfc.step(batch_size)
    return out.asnumpy(), X.grad.asnumpy(), ids, wgrad


# ---- sample_rate = 1.0 is the full softmax -------------------------------

@pytest.mark.parametrize("ctx", [[mx.cpu(0)], CTX2], ids=["1shard", "2shards"])
@pytest.mark.parametrize("name", ["arcface", "cosface", "magface", "circle"])
def test_rate_one_equals_full_normdense(ctx, name):
    batch, dim, classes = 12, 8, 23
    x, y = _data(batch, dim, classes)
    mx.random.seed(1)
    head = NormDense(classes, in_units=dim)
    head.initialize(mx.init.Normal(0.5))
    trainer = gluon.Trainer(head.collect_params(), "sgd",
                            {"learning_rate": 0.5, "momentum": 0.9, "wd": 1e-3})
    full_loss = fr_lib.get_loss(name)
    pfc = PartialFC(classes, dim, name, sample_rate=1.0, ctx=ctx, learning_rate=0.5,
                    momentum=0.9, wd=1e-3, seed=0)
    pfc.set_weight(head.weight.data())

    for step in range(2):            # the second step exercises the momentum
        xs, ys = _data(batch, dim, classes, seed=10 + step)
        extra = [mx.nd.array(np.linalg.norm(xs, axis=1) * 20)] if name == "magface" \
            else []
        X = mx.nd.array(xs)
        X.attach_grad()
        with autograd.record():
            ref = full_loss(head(X), mx.nd.array(ys), *extra)
            ref.mean().backward()
        ref_wgrad = head.weight.grad().asnumpy()
        trainer.step(1)

        out, xgrad, ids, wgrad = _pfc_step(pfc, xs, ys, extra)
        assert_array_equal(ids, np.arange(classes))
        assert_allclose(out, ref.asnumpy(), rtol=1e-5, atol=1e-5)
        assert_allclose(xgrad, X.grad.asnumpy(), rtol=1e-4, atol=1e-6)
        assert_allclose(wgrad, ref_wgrad, rtol=1e-4, atol=1e-6)
        # float32 rounding of weights of size ~1-6 after lr 0.5 steps
        assert_allclose(pfc.weight().asnumpy(), head.weight.data().asnumpy(),
                        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("softmax", ["joined", "sharded"])
def test_two_contexts_equal_one_context(softmax):
    # The sharded softmax sums per-shard log-sum-exps where one context runs
    # one double-accumulating operator over the whole matrix: its float32
    # rounding is as small relative to the largest entry (~6e-7) but not
    # relative to each near-zero entry, so it is compared against the scale.
    batch, dim, classes = 10, 6, 17
    mx.random.seed(0)     # the initial centres: independent of test order
    a = PartialFC(classes, dim, "arcface", sample_rate=1.0, ctx=[mx.cpu(0)])
    b = PartialFC(classes, dim, "arcface", sample_rate=1.0, ctx=CTX2, softmax=softmax)
    assert b.shard_ranges == [(0, 9), (9, 17)]
    b.set_weight(a.weight())
    for step in range(3):
        x, y = _data(batch, dim, classes, seed=step)
        ra, rb = _pfc_step(a, x, y), _pfc_step(b, x, y)
        for u, v in zip(ra, rb):
            assert_allclose(u, v, rtol=1e-5, atol=_atol(softmax, 1e-6, v))
    for got, want in ((b.weight(), a.weight()), (b.momentum_buffer(), a.momentum_buffer())):
        want = want.asnumpy()
        assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=_atol(softmax, 1e-7, want))


def _atol(softmax, atol, ref):
    """The tests' absolute tolerance; for the sharded softmax 2e-6 of the
    largest entry (see test_two_contexts_equal_one_context)."""
    return atol if softmax == "joined" else max(atol, 2e-6 * np.abs(ref).max())


# ---- sampled softmax against NumPy --------------------------------------

def _numpy_cosface(x, w, y, s, m):
    """Mean CosFace loss over the sampled centres ``w`` and its gradients,
    derived by hand: dL/dcos = s (softmax - onehot) / B, then the chain rule
    through cos = x̂ ŵᵀ and the two normalisations."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    nx, nw = np.linalg.norm(x, axis=1, keepdims=True), np.linalg.norm(w, axis=1,
                                                                        keepdims=True)
    xh, wh = x / nx, w / nw
    cos = xh @ wh.T
    onehot = np.eye(w.shape[0])[y]
    z = s * (cos - m * onehot)
    z_max = z.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    loss = logsum - z[np.arange(len(y)), y]
    p = np.exp(z - logsum[:, None])
    dcos = s * (p - onehot) / len(y)
    dxh, dwh = dcos @ wh, dcos.T @ xh
    dx = (dxh - xh * (dxh * xh).sum(1, keepdims=True)) / nx
    dw = (dwh - wh * (dwh * wh).sum(1, keepdims=True)) / nw
    return loss, dx, dw


@pytest.mark.parametrize("softmax", ["joined", "sharded"])
def test_sampled_loss_and_gradients_match_numpy(softmax):
    batch, dim, classes = 16, 8, 40
    x, y = _data(batch, dim, classes, seed=3)
    mx.random.seed(0)     # the initial centres: independent of test order
    pfc = PartialFC(classes, dim, "cosface", sample_rate=0.3, ctx=CTX2, seed=5,
                    s=16.0, m=0.35, learning_rate=0.0, wd=0.0, softmax=softmax)
    w0 = pfc.weight().asnumpy()
    out, xgrad, ids, wgrad = _pfc_step(pfc, x, y)
    sample = pfc.last_sample
    assert_array_equal(ids, np.concatenate(sample.indices))
    assert_array_equal(ids[sample.label], y)       # remapped labels hit the true class
    loss, dx, dw = _numpy_cosface(x, w0[ids], sample.label, 16.0, 0.35)
    assert_allclose(out, loss, rtol=1e-5, atol=1e-5)
    assert_allclose(xgrad, dx, rtol=1e-4, atol=_atol(softmax, 1e-6, dx))
    assert_allclose(wgrad, dw, rtol=1e-4, atol=_atol(softmax, 1e-6, dw))


# ---- sampling -----------------------------------------------------------

@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3, 0.75])
def test_sample_keeps_every_positive(rate):
    classes = 101
    pfc = PartialFC(classes, 4, sample_rate=rate, ctx=[mx.cpu(i) for i in range(3)],
                    seed=0)
    rng = np.random.RandomState(1)
    for trial in range(50):
        y = rng.randint(0, classes, rng.randint(1, 40))
        sample = pfc.sample(y)
        for (start, stop), k, idx in zip(pfc.shard_ranges, pfc.num_sample,
                                         sample.indices):
            pos = np.unique(y[(y >= start) & (y < stop)])
            assert set(pos) <= set(idx)
            assert idx.size == max(k, pos.size)
            assert np.all(np.diff(idx) > 0) and idx[0] >= start and idx[-1] < stop
        assert_array_equal(np.concatenate(sample.indices)[sample.label], y)


def test_negatives_are_uniform():
    pfc = PartialFC(20, 4, sample_rate=0.25, seed=0)        # 5 rows: 1 positive + 4
    counts = np.zeros(20)
    draws = 3000
    for _ in range(draws):
        counts[pfc.sample([3]).indices[0]] += 1
    assert counts[3] == draws
    freq = np.delete(counts, 3) / draws
    assert_allclose(freq, 4 / 19, atol=0.035)


def test_label_remapping_by_hand():
    # shards [0, 5) and [5, 10); 0.4 * 5 = 2 rows per shard
    pfc = PartialFC(10, 4, sample_rate=0.4, ctx=CTX2, seed=0)
    assert pfc.num_sample == [2, 2]
    # shard 0 has exactly 2 positives {1, 3}: no negatives are drawn
    s = pfc.sample([3, 8, 1, 3])
    assert_array_equal(s.indices[0], [1, 3])
    neg = int(np.setdiff1d(s.indices[1], [8])[0])
    assert 5 <= neg < 10 and neg != 8
    col8 = 2 if neg > 8 else 3           # 8 is first or second of shard 1
    assert_array_equal(s.label, [1, col8, 0, 1])
    # more positives than the rate allows: all of them are kept
    s = pfc.sample([4, 0, 2, 9])
    assert_array_equal(s.indices[0], [0, 2, 4])
    assert s.indices[1].size == 2 and 9 in s.indices[1]
    assert_array_equal(s.label[:3], [2, 0, 1])
    assert s.label[3] == 3 + list(s.indices[1]).index(9)


# ---- sparse update ------------------------------------------------------

def test_unsampled_rows_and_momentum_untouched():
    batch, dim, classes = 6, 5, 60
    pfc = PartialFC(classes, dim, "arcface", sample_rate=0.1, ctx=CTX2, seed=2,
                    learning_rate=0.3, momentum=0.9, wd=0.01)
    w0 = pfc.weight().asnumpy()
    x, y = _data(batch, dim, classes, seed=0)
    _pfc_step(pfc, x, y)
    first = np.concatenate(pfc.last_sample.indices)
    w1, m1 = pfc.weight().asnumpy(), pfc.momentum_buffer().asnumpy()
    rest = np.setdiff1d(np.arange(classes), first)
    assert_array_equal(w1[rest], w0[rest])
    assert_array_equal(m1[rest], 0)
    assert np.all(np.abs(w1[first] - w0[first]).sum(1) > 0)
    assert np.all(np.abs(m1[first]).sum(1) > 0)

    x, y = _data(batch, dim, classes, seed=1)
    _pfc_step(pfc, x, y)
    second = np.concatenate(pfc.last_sample.indices)
    w2, m2 = pfc.weight().asnumpy(), pfc.momentum_buffer().asnumpy()
    rest = np.setdiff1d(np.arange(classes), second)
    # rows sampled only at step 1 keep their weight *and* momentum (no coasting)
    assert np.setdiff1d(first, second).size > 0
    assert_array_equal(w2[rest], w1[rest])
    assert_array_equal(m2[rest], m1[rest])
    # sampled rows follow MXNet's SGD: m = mu m - lr (g + wd w), w = w + m
    assert_allclose(m2[second], w2[second] - w1[second], rtol=1e-5, atol=1e-7)


def test_state_roundtrip_across_shardings(tmp_path):
    batch, dim, classes = 8, 6, 25
    a = PartialFC(classes, dim, "cosface", sample_rate=1.0, ctx=CTX2)
    x, y = _data(batch, dim, classes, seed=0)
    _pfc_step(a, x, y)
    path = str(tmp_path / "pfc.params")
    a.save(path)
    b = PartialFC(classes, dim, "cosface", sample_rate=1.0,
                  ctx=[mx.cpu(0), mx.cpu(1), mx.cpu(2)])
    b.load(path)
    assert b.num_update == 1
    assert_array_equal(b.weight().asnumpy(), a.weight().asnumpy())
    assert_array_equal(b.momentum_buffer().asnumpy(), a.momentum_buffer().asnumpy())
    x, y = _data(batch, dim, classes, seed=1)
    _pfc_step(a, x, y), _pfc_step(b, x, y)
    assert_allclose(b.weight().asnumpy(), a.weight().asnumpy(), rtol=1e-5, atol=1e-7)
    c = PartialFC(classes + 1, dim, "cosface")
    with pytest.raises(ValueError, match="shape"):
        c.load_state_dict(a.state_dict())


# ---- errors -------------------------------------------------------------

@pytest.mark.parametrize("rate", [0, -0.1, 1.5, float("nan"), "0.1", True])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC(10, 4, sample_rate=rate)


@pytest.mark.parametrize("label, bad", [([1, 10, 2], "10"), ([-1, 2, 3], "-1"),
                                        ([1, 2.5, 3], "2.5")])
def test_bad_label_is_named(label, bad):
    pfc = PartialFC(10, 4, sample_rate=0.5, ctx=CTX2)
    with pytest.raises(ValueError, match=rf"label {bad} is out of range for 10"):
        pfc.sample(label)
    with pytest.raises(ValueError, match=rf"label {bad} "):
        pfc(mx.nd.ones((3, 4)), mx.nd.array(label))


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="shards"):
        PartialFC(1, 4, ctx=CTX2)
    with pytest.raises(ValueError, match="in_units"):
        PartialFC(10, 0)
    with pytest.raises(ValueError, match="arcface"):           # registry lists names
        PartialFC(10, 4, loss="no_such_loss")
    with pytest.raises(ValueError, match="Sub-center"):
        PartialFC(10, 4, loss="subcenter_arcface")
    pfc = PartialFC(10, 4)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        pfc(mx.nd.ones((3, 5)), mx.nd.array([1, 2, 3]))
    with pytest.raises(ValueError, match="expected 3 labels"):
        pfc(mx.nd.ones((3, 4)), mx.nd.array([1, 2]))
    with pytest.raises(RuntimeError, match="record"):
        pfc.step(1)
    pfc(mx.nd.ones((3, 4)), mx.nd.array([1, 2, 3]))           # not recorded
    with pytest.raises(RuntimeError, match="record"):
        pfc.step(1)


# ---- softmax across shards ------------------------------------------------

@pytest.mark.parametrize("name", ["arcface", "cosface", "normface", "combined"])
def test_sharded_softmax_equals_joined(name):
    """Per-shard log-sum-exps (only (batch,) vectors leave a shard) give the
    joined matrix's loss and gradients."""
    batch, dim, classes = 12, 8, 40
    x, y = _data(batch, dim, classes, seed=4)
    w = np.random.RandomState(5).normal(size=(classes, dim))
    head = np.random.RandomState(6).uniform(size=batch)
    ctx = [mx.cpu(i) for i in range(3)]
    out = {}
    for mode in ("joined", "sharded"):
        pfc = PartialFC(classes, dim, name, sample_rate=0.5, ctx=ctx, seed=3,
                        softmax=mode)
        assert pfc.softmax == mode
        pfc.set_weight(mx.nd.array(w))
        X = mx.nd.array(x)
        X.attach_grad()
        with autograd.record():
            loss = pfc(X, mx.nd.array(y))
        loss.backward(mx.nd.array(head))
        ids, wgrad = pfc.sampled_grad()
        out[mode] = loss.asnumpy(), X.grad.asnumpy(), ids, wgrad
    (la, ga, ia, wa), (lb, gb, ib, wb) = out["joined"], out["sharded"]
    assert_array_equal(ia, ib)
    assert_allclose(lb, la, rtol=1e-5)
    # float32 rounding of two MXNet formulations (the joined loss is the
    # readable formula, no longer fr_margin_ce): 1e-5 of the largest entry
    assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * np.abs(ga).max())
    assert_allclose(wb, wa, rtol=1e-4, atol=1e-5 * np.abs(wa).max())


def test_softmax_mode_choice():
    assert PartialFC(10, 4, "arcface", ctx=CTX2).softmax == "sharded"
    assert PartialFC(10, 4, "arcface").softmax == "joined"        # one shard
    assert PartialFC(10, 4, "circle", ctx=CTX2).softmax == "joined"
    with pytest.raises(ValueError, match="true-class logit"):
        PartialFC(10, 4, "curricularface", ctx=CTX2, softmax="sharded")
    with pytest.raises(ValueError, match="softmax must be"):
        PartialFC(10, 4, softmax="gathered")

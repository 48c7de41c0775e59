"""NormDense (the normalised-FC head) against NumPy and finite differences."""
import numpy as np
import mxnet as mx
from mxnet import autograd, nd

from fr_lib.model_zoo import NormDense


def _reference(x, w, eps):
    xn = x / np.sqrt((x ** 2).sum(1, keepdims=True) + eps)
    wn = w / np.sqrt((w ** 2).sum(1, keepdims=True) + eps)
    return xn @ wn.T


def _head(w, eps=1e-12, hybridize=False):
    head = NormDense(w.shape[0], in_units=w.shape[1], eps=eps)
    head.initialize()
    head.weight.set_data(nd.array(w))
    if hybridize:
        head.hybridize()
    return head


def test_cosines_match_numpy():
    rng = np.random.RandomState(0)
    x, w = rng.randn(6, 5), rng.randn(7, 5)
    for hyb in (False, True):
        head = _head(w, hybridize=hyb)
        eps = head._eps
        out = head(nd.array(x)).asnumpy()
        np.testing.assert_allclose(out, _reference(x, w, eps), rtol=1e-5, atol=1e-6)
        assert np.abs(out).max() <= 1 + 1e-6


def test_gradients_match_finite_differences():
    rng = np.random.RandomState(1)
    x, w = rng.randn(3, 4), rng.randn(5, 4)
    g = rng.randn(3, 5)                       # upstream gradient
    head = _head(w)
    eps = head._eps
    xx = nd.array(x)
    xx.attach_grad()
    with autograd.record():
        out = head(xx)
    out.backward(nd.array(g))
    f = lambda x_, w_: (_reference(x_, w_, eps) * g).sum()  # noqa: E731
    h = 1e-6
    num_x = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        d = np.zeros_like(x); d[i] = h
        num_x[i] = (f(x + d, w) - f(x - d, w)) / (2 * h)
    num_w = np.zeros_like(w)
    for i in np.ndindex(*w.shape):
        d = np.zeros_like(w); d[i] = h
        num_w[i] = (f(x, w + d) - f(x, w - d)) / (2 * h)
    np.testing.assert_allclose(xx.grad.asnumpy(), num_x, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(head.weight.grad().asnumpy(), num_w, rtol=1e-3, atol=1e-4)


def test_zero_embedding_gives_finite_output_and_gradient():
    rng = np.random.RandomState(2)
    head = _head(rng.randn(4, 3))
    x = nd.zeros((2, 3))
    x.attach_grad()
    with autograd.record():
        out = head(x)
    out.backward()
    assert np.isfinite(out.asnumpy()).all() and np.isfinite(x.grad.asnumpy()).all()
    np.testing.assert_allclose(out.asnumpy(), 0, atol=1e-6)

"""The two row normalisers of fr_lib against NumPy: ``fr_lib.metrics.l2_normalize``
(NumPy arrays and NDArrays) and ``fr_lib.model_zoo.layers.l2_normalize_rows``
(inside ``hybrid_forward``, F = nd or sym), including the zero vector."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from fr_lib import deploy, metrics
from fr_lib.metrics import l2_normalize
from fr_lib.model_zoo import NormDense
from fr_lib.model_zoo.layers import l2_normalize_rows

EPS = 1e-12


def reference(x, eps=EPS, axis=-1):
    """x / sqrt(sum(x^2) + eps), in float64."""
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).sum(axis=axis, keepdims=True) + eps)


def rows():
    x = np.random.RandomState(0).normal(size=(6, 5))
    x[2] = 0.0                # the zero vector: eps keeps it 0, not NaN
    x[4] *= 1e-2              # a short one: unit length to ~1e-9
    return x


def test_numpy_against_the_formula_and_the_zero_vector():
    x = rows()
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        out = l2_normalize(x.astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(out, reference(x), rtol=tol, atol=tol)
    out = l2_normalize(x)
    assert np.all(np.isfinite(out)) and not out[2].any()
    lengths = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(np.delete(lengths, 2), 1.0, rtol=1e-8)
    # hand calculation: (3, 4) / 5
    np.testing.assert_allclose(l2_normalize([3, 4]), [0.6, 0.8], rtol=1e-7)
    assert l2_normalize(np.array([[3, 4]], np.int64)).dtype == np.float32
    np.testing.assert_allclose(l2_normalize(x, axis=0), reference(x, axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="scalar"):
        l2_normalize(3.0)


def test_ndarray_in_ndarray_out():
    x = rows()
    out = l2_normalize(mx.nd.array(x))
    assert isinstance(out, mx.nd.NDArray) and out.dtype == np.float32
    np.testing.assert_allclose(out.asnumpy(), reference(x), rtol=1e-6, atol=1e-7)


def test_one_function_under_its_public_names():
    assert deploy.l2_normalize is metrics.l2_normalize is l2_normalize
    from fr_lib.deploy.embedders import l2_normalize as in_embedders
    assert in_embedders is l2_normalize


class _Rows(gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return l2_normalize_rows(F, x)


@pytest.mark.parametrize("hybridize", [False, True])
def test_rows_in_a_graph_against_numpy_with_its_gradient(hybridize):
    x = rows()
    block = _Rows()
    if hybridize:
        block.hybridize()          # F = mx.sym
    xs = mx.nd.array(x)
    xs.attach_grad()
    w = np.random.RandomState(1).normal(size=x.shape)
    with autograd.record():
        out = block(xs)
        loss = (out * mx.nd.array(w)).sum()
    loss.backward()
    np.testing.assert_allclose(out.asnumpy(), reference(x), rtol=1e-6, atol=1e-7)
    # d/dx <w, x/r> = (w - u <u, w>) / r with u = x/r, r = sqrt(|x|^2 + eps)
    r = np.sqrt((x * x).sum(axis=1, keepdims=True) + EPS)
    u = x / r
    expected = (w - u * (u * w).sum(axis=1, keepdims=True)) / r
    ok = np.arange(len(x)) != 2     # the zero row: the gradient is w / sqrt(eps)
    np.testing.assert_allclose(xs.grad.asnumpy()[ok], expected[ok], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(xs.grad.asnumpy()))


def test_norm_dense_uses_the_same_normaliser():
    x = rows()
    head = NormDense(3, in_units=5)
    head.initialize(mx.init.Xavier())
    weight = head.weight.data().asnumpy()
    cos = head(mx.nd.array(x)).asnumpy()
    np.testing.assert_allclose(cos, reference(x) @ reference(weight).T, rtol=1e-5, atol=1e-6)

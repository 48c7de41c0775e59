"""prepare_for_inference: same embeddings as the plain network, faster forms.

The reference is the plain, imperative network with the same parameters
(no hybridization, no oneDNN fusion, the training PReLU); the max-form PReLU
is checked against a NumPy PReLU.
"""
import mxnet as mx
import numpy as np
import pytest

from fr_lib.model_zoo import get_model, mkldnn_available, prepare_for_inference
from fr_lib.model_zoo.inference import inference_prelu_forward
from numeric_helpers import randomise_backbone

# With fr_lib's native PReLU (fr_lib.ops) and with the MXNet-operator forms.


def _pair(name, seed=0, alpha_range=(0.0, 1.0)):
    nets = []
    for _ in range(2):
        net = get_model(name)
        randomise_backbone(net, seed, alpha_range)
        nets.append(net)
    return nets


def test_max_form_equals_numpy_prelu():
    rng = np.random.RandomState(1)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    alpha = np.array([0.0, 0.25, 1.0], dtype=np.float32)
    ref = np.where(x >= 0, x, alpha.reshape(1, 3, 1, 1) * x)
    out = inference_prelu_forward(mx.nd, mx.nd.array(x), mx.nd.array(alpha),
                                  (1, -1, 1, 1))
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=0, atol=0)


@pytest.mark.parametrize("name, backend, verify, engine", [
    ("mobilefacenet", "auto", True, "mxnet"), ("mobilefacenet", None, False, "mxnet"),
    ("mobilefacenet", "auto", False, "mxnet"), ("iresnet18", "auto", True, "auto"),
    ("mobilefacenet", "auto", True, "auto"), ("mobilefacenet", "auto", False, "auto")])
def test_prepared_network_matches_plain(name, backend, verify, engine, native_mode):
    plain, fast = _pair(name)
    x = mx.nd.array(np.random.RandomState(2).uniform(-1, 1, (4, 3, 112, 112)))
    ref = plain(x).asnumpy()
    if native_mode == "fallback":  # the MXNet settings only
        engine = "mxnet"
    net = fast
    fast = prepare_for_inference(net, x if verify else None, backend=backend,
                                 engine=engine)
    assert fast.net is net
    if name == "mobilefacenet" and engine == "auto" and native_mode == "native":
        assert fast.inference_backend == "fused" and fast.fused is not None
    elif backend is None or not verify:
        assert fast.inference_backend is None and fast.fused is None
    elif mkldnn_available():
        assert fast.inference_backend == "MKLDNN"
    for _ in range(2):  # the second call runs the cached, static graph
        out = fast(x).asnumpy()
        scale = np.abs(ref).max()
        assert scale > 1e-3
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.skipif(not mkldnn_available(), reason="needs oneDNN")
def test_failing_partition_falls_back():
    # MXNet 1.9's oneDNN partitioning of SE-LResNet fails at the first call.
    plain, fast = _pair("se_lresnet18e", seed=5)
    x = mx.nd.array(np.random.RandomState(6).uniform(-1, 1, (2, 3, 112, 112)))
    ref = plain(x).asnumpy()
    fast = prepare_for_inference(fast, x, backend="MKLDNN")
    assert fast.inference_backend is None
    out = fast(x).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_slopes_outside_unit_interval_keep_exact_prelu():
    plain, fast = _pair("mobilefacenet", seed=3, alpha_range=(-0.5, 1.5))
    x = mx.nd.array(np.random.RandomState(4).uniform(-1, 1, (2, 3, 112, 112)))
    ref = plain(x).asnumpy()
    out = prepare_for_inference(fast, x)(x).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_micro_batches_give_the_same_embeddings():
    plain, fast = _pair("mobilefacenet", seed=5)
    x = mx.nd.array(np.random.RandomState(6).uniform(-1, 1, (10, 3, 112, 112)))
    ref = plain(x).asnumpy()
    fast = prepare_for_inference(fast, x, micro_batch=4,  # 4 + 4 + 2 images
                                 engine="mxnet")
    out = fast(x).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # preparing again replaces the micro-batching instead of stacking it
    again = prepare_for_inference(fast, x)(x).asnumpy()
    np.testing.assert_allclose(again, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(ValueError, match="micro_batch"):
        prepare_for_inference(fast, micro_batch=0)


def test_the_network_itself_is_not_patched():
    """prepare_for_inference returns a wrapper: the network's own methods and
    instance attributes stay as they were (only its class-level PReLU form
    and its hybridize settings change)."""
    plain, fast = _pair("mobilefacenet", seed=7)
    x = mx.nd.array(np.random.RandomState(8).uniform(-1, 1, (3, 3, 112, 112)))
    before = set(vars(fast))
    prepared = prepare_for_inference(fast, x, micro_batch=2)
    added = set(vars(fast)) - before
    assert not {"forward", "hybrid_forward", "fused", "inference_backend"} & added
    patched = []
    fast.apply(lambda b: patched.append(b) if "hybrid_forward" in vars(b) else None)
    assert not patched
    assert prepared.net is fast and prepared.micro_batch == 2
    ref = plain(x).asnumpy()
    for out in (prepared(x), fast(x)):  # the wrapper, and the network alone
        np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-4,
                                   atol=1e-4 * np.abs(ref).max())


def test_options_are_checked():
    net = get_model("mobilefacenet")
    net.initialize()
    with pytest.raises(ValueError):
        prepare_for_inference(net, prelu="fast")
    with pytest.raises(ValueError):
        prepare_for_inference(net, backend=1)
    with pytest.raises(ValueError, match="engine"):
        prepare_for_inference(net, engine="tensorrt")
    assert isinstance(mkldnn_available(), bool)

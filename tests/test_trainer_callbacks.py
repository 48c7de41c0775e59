"""Verification as a callback (fr_lib.train.callbacks.Verification), given to
FaceTrainer explicitly, and FaceTrainer.fit closing its data source."""
import os
import sys
import threading

import numpy as np
import mxnet as mx
import pytest
from mxnet import gluon

from fr_lib.data.source import ArrayBatches
from fr_lib.metrics import VerificationEvaluator
from fr_lib.train import FaceTrainer, RecordBatches, read_log
from fr_lib.train.callbacks import Callback, Verification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_helper  # noqa: E402


def _pairs(num_pairs=40, seed=1):
    """Verification pairs of the training classes, as (2N, 1, 4, 4) 'images'."""
    X, y = train_helper.make_data(seed=0)
    rng = np.random.default_rng(seed)
    idx, issame = [], []
    for k in range(num_pairs):
        a = rng.integers(len(y))
        pool = np.flatnonzero((y == y[a]) if k % 2 == 0 else (y != y[a]))
        idx += [a, rng.choice(pool)]
        issame.append(k % 2 == 0)
    return X[idx].reshape(-1, 1, 4, 4), np.array(issame)


def _trainer(out_dir, callbacks=(), val_sets=None, **kwargs):
    X, y = train_helper.make_data()
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Flatten(), train_helper.make_mlp(0.0))
    cfg = train_helper.config(str(out_dir), kwargs.pop("max_iters", 10),
                              resume=False, **kwargs)
    return FaceTrainer(cfg, ArrayBatches(X.reshape(-1, 1, 4, 4), y, 24, seed=3),
                       backbone=backbone, callbacks=callbacks, val_sets=val_sets)


class _Accuracies(Callback):
    """Records what VerificationEvaluator says about the trainer's net right
    after each verification (the callback before it in the list)."""

    def __init__(self, sets):
        self.evaluator = VerificationEvaluator(sets, batch_size=64, ctx=mx.cpu(0),
                                               progress=False)
        self.seen = {}

    def on_iteration(self, trainer, record):
        if trainer.verification.verified_at == record["iteration"]:
            r = self.evaluator.evaluate(trainer.net)["toy"]
            self.seen[record["iteration"]] = r.accuracy


def test_explicit_verification_logs_what_the_evaluator_computes(tmp_path):
    sets = {"toy": _pairs()}
    check = _Accuracies(sets)
    verification = Verification(sets, every=4)
    trainer = _trainer(tmp_path, callbacks=[verification, check], max_iters=10)
    assert trainer.verification is verification
    result = trainer.fit()
    verify = read_log(str(tmp_path))["verify"]
    # every 4 iterations, then once at the end
    assert [r["iteration"] for r in verify] == [4, 8, 10]
    assert verification.verified_at == 10
    # the logged accuracies are those of an independent evaluator on the
    # same network at the same iteration
    for r in verify[:2]:
        assert r["toy"]["accuracy"] == check.seen[r["iteration"]]
    final = VerificationEvaluator(sets, batch_size=64, ctx=mx.cpu(0),
                                  progress=False).evaluate(trainer.net)["toy"]
    assert verify[-1]["toy"]["accuracy"] == final.accuracy
    assert verify[-1]["metric"] == final.accuracy      # one set: its accuracy
    assert result.results["toy"].accuracy == final.accuracy
    # the best model is the best logged metric (the first of equal ones)
    metrics = [r["metric"] for r in verify]
    assert result.best_metric == max(metrics)
    assert result.best_iteration == verify[int(np.argmax(metrics))]["iteration"]
    assert [r["best"] for r in verify].count(True) >= 1
    assert f"best-{result.best_iteration:09d}" in trainer.best_path
    assert os.path.exists(trainer.best_path)


def test_every_is_honoured_and_zero_means_only_at_the_end(tmp_path):
    trainer = _trainer(tmp_path / "a", callbacks=[Verification({"toy": _pairs()},
                                                               every=3)], max_iters=7)
    trainer.fit()
    assert [r["iteration"] for r in read_log(str(tmp_path / "a"))["verify"]] == \
        [3, 6, 7]
    trainer = _trainer(tmp_path / "b", callbacks=[Verification({"toy": _pairs()})],
                       max_iters=5)
    trainer.fit()
    assert [r["iteration"] for r in read_log(str(tmp_path / "b"))["verify"]] == [5]
    # ending on a multiple of every: verified once there, not twice
    trainer = _trainer(tmp_path / "c", callbacks=[Verification({"toy": _pairs()},
                                                               every=3)], max_iters=6)
    trainer.fit(max_iters=3)   # stops at 3: verified at the end of this fit
    trainer.fit()              # 6
    assert [r["iteration"] for r in read_log(str(tmp_path / "c"))["verify"]] == [3, 6]


def test_explicit_verification_best_metric_survives_resume(tmp_path):
    first = _trainer(tmp_path, callbacks=[Verification({"toy": _pairs()}, every=3)],
                     max_iters=6)
    result = first.fit()
    cfg = train_helper.config(str(tmp_path), 8, resume=True)
    X, y = train_helper.make_data()
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Flatten(), train_helper.make_mlp(0.0))
    again = FaceTrainer(cfg, ArrayBatches(X.reshape(-1, 1, 4, 4), y, 24, seed=3),
                        backbone=backbone,
                        callbacks=[Verification({"toy": _pairs()}, every=3)])
    resumed = again.fit()
    assert resumed.iterations == 8
    verify = read_log(str(tmp_path))["verify"]
    assert [r["iteration"] for r in verify] == [3, 6, 8]
    assert resumed.best_metric == max(r["metric"] for r in verify) >= result.best_metric


def test_val_sets_and_an_explicit_callback_give_the_same_run(tmp_path):
    """TrainConfig.verify_every + val_sets= is the same callback, added by the trainer."""
    implicit = _trainer(tmp_path / "a", val_sets={"toy": _pairs()}, verify_every=5,
                        max_iters=12)
    assert isinstance(implicit.verification, Verification)
    r1 = implicit.fit()
    r2 = _trainer(tmp_path / "b", callbacks=[Verification({"toy": _pairs()}, every=5)],
                  max_iters=12).fit()
    strip = [{k: v for k, v in r.items() if k != "time"}
             for r in read_log(str(tmp_path / "a"))["verify"]]
    assert [r["iteration"] for r in strip] == [5, 10, 12]
    assert strip == [{k: v for k, v in r.items() if k != "time"}
                     for r in read_log(str(tmp_path / "b"))["verify"]]
    assert (r1.best_metric, r1.best_iteration) == (r2.best_metric, r2.best_iteration)


def test_verification_sets_given_twice_are_refused(tmp_path):
    with pytest.raises(ValueError, match="given twice"):
        _trainer(tmp_path, callbacks=[Verification({"toy": _pairs()})],
                 val_sets={"toy": _pairs()})
    with pytest.raises(ValueError, match="at least one"):
        Verification({})


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "fr_prefetch" and t.is_alive()]


def test_fit_closes_the_data_source_which_stays_usable(tmp_path):
    from fr_lib.data.synthetic import write_dataset
    before = len(_prefetch_threads())
    info = write_dataset(str(tmp_path / "data"), num_identities=4,
                         images_per_identity=4, num_val_pairs=0, seed=0)
    data = RecordBatches(info["out_dir"], batch_size=4, seed=1, prefetch=2)
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Conv2D(4, 5, strides=4), gluon.nn.GlobalAvgPool2D(),
                 gluon.nn.Dense(8))
    cfg = train_helper.config(str(tmp_path / "run"), 6, resume=False, ctx=["cpu(0)"],
                              loss_warmup_iters=0, warmup_iters=0, checkpoint_every=0)
    trainer = FaceTrainer(cfg, data, backbone=backbone)

    class Watch(Callback):
        running = 0

        def on_iteration(self, trainer, record):
            Watch.running = max(Watch.running, len(_prefetch_threads()) - before)

    trainer.callbacks.append(Watch())
    trainer.fit(max_iters=3)
    assert Watch.running == 1                  # it prefetched while training
    assert len(_prefetch_threads()) == before  # and stopped when fit returned
    # the source continues where training left it: batch 3 of epoch 0 (of 4)
    assert data.state_dict()["batch"] == 3
    reference = RecordBatches(info["out_dir"], batch_size=4, seed=1, prefetch=0)
    reference.load_state_dict(data.state_dict())
    X, y = data.next_batch()
    Xr, yr = reference.next_batch()
    np.testing.assert_array_equal(X.asnumpy(), Xr.asnumpy())
    np.testing.assert_array_equal(y.asnumpy(), yr.asnumpy())
    data.close()
    # and a second fit on the same trainer still trains from it
    assert trainer.fit().iterations == 6
    assert len(_prefetch_threads()) == before

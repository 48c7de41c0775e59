"""The loss contract (issue 16, item 1): every registered loss declares what it
consumes; FaceTrainer/fr-train either trains it or refuses it when built, naming
the loss and the reason (so does recipes.check_recipe, i.e. fr-train --dry-run)."""
import os
import sys

import mxnet as mx
import numpy as np
import pytest
from numpy.testing import assert_allclose

from fr_lib.loss import LOSSES, LossContract, contract_of, get_loss_list
from fr_lib.data import PKSampler
from fr_lib.train import ArrayBatches, FaceTrainer
from fr_lib.train.trainer import loss_refusal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_helper  # noqa: E402

TRAINABLE = [n for n in get_loss_list() if loss_refusal(n) is None]
REFUSED = [n for n in get_loss_list() if loss_refusal(n) is not None]
# the metric losses train on P×K batches (a PKSampler in the data source)
PK_ONLY = [n for n in REFUSED if loss_refusal(n, pk=True) is None]


def test_every_registered_loss_declares_a_contract():
    for name in get_loss_list():
        c = contract_of(name)
        assert isinstance(c, LossContract), name
        cls = LOSSES.lookup(name)
        if cls.__module__.startswith("fr_lib"):
            assert cls.contract == c, name
    assert contract_of("magface").extra_inputs == ("norm",)
    assert contract_of("subcenter_arcface").head_k_arg == "k"
    assert contract_of("triplet").sampler == "pk"
    assert contract_of("center").needs_num_classes
    assert contract_of("center").regularizer_weight == 0.1
    assert contract_of("ring").regularizer_weight == 0.01
    assert contract_of("lgm").regularizer_weight is None
    with pytest.raises(ValueError, match="consumes must be one of"):
        LossContract("pixels")
    with pytest.raises(ValueError, match="a regulariser consumes the embeddings"):
        LossContract("logits", regularizer_weight=0.1)


def _trainer(tmp_path, loss, hybridize, contexts, max_iters=2, pk=False, **kwargs):
    X, y = train_helper.make_data(per_class=4)
    values = dict(loss=loss, loss_kwargs={}, loss_warmup_iters=0, warmup_iters=0,
                  batch_size=8, checkpoint_every=0, hybridize=hybridize,
                  ctx=contexts)
    values.update(kwargs)
    cfg = train_helper.config(str(tmp_path), max_iters, **values)
    data = ArrayBatches(X, y, batch_sampler=PKSampler(y, 4, 2, seed=1)) if pk \
        else ArrayBatches(X, y, 8, seed=1)
    return FaceTrainer(cfg, data, backbone=train_helper.make_mlp(0.0))


# every trainable loss with its defaults, and Center loss with the paper's update
CASES = [pytest.param(n, {}, id=n) for n in TRAINABLE + PK_ONLY] + \
    [pytest.param("center", {"update": "paper"}, id="center-paper")]


@pytest.mark.parametrize("contexts", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
@pytest.mark.parametrize("hybridize", [True, False])
@pytest.mark.parametrize("loss, loss_kwargs", CASES)
def test_trainable_losses_train_two_iterations(tmp_path, loss, loss_kwargs, hybridize,
                                               contexts):
    trainer = _trainer(tmp_path, loss, hybridize, contexts, pk=loss in PK_ONLY,
                       loss_kwargs=loss_kwargs)
    trainer.fit(1)  # parameters exist after the first step
    before = {k: v.data(trainer.ctx[0]).asnumpy().copy()
              for k, v in trainer.params.items()}
    trainer.fit(2)
    records = trainer.history if hasattr(trainer, "history") else None
    changed = [k for k, v in trainer.params.items()
               if not np.array_equal(v.data(trainer.ctx[0]).asnumpy(), before[k])]
    assert changed, f"{loss}: no parameter changed"
    for v in trainer.params.values():
        assert np.isfinite(v.data(trainer.ctx[0]).asnumpy()).all(), loss
    del records


@pytest.mark.parametrize("loss", REFUSED)
def test_refused_losses_are_refused_when_built(tmp_path, loss):
    with pytest.raises(ValueError, match=f"loss '{loss}' cannot be trained") as err:
        _trainer(tmp_path, loss, True, ["cpu(0)"])
    assert str(err.value) == loss_refusal(loss)
    assert contract_of(loss).trainer_refusal() in str(err.value)


def test_which_losses_train():
    """The objective layer trains every loss except the pair loss (the
    regularisers center and ring as softmax + λ·regulariser); the P×K metric
    losses need a P×K data source."""
    assert sorted(REFUSED) == ["contrastive", "contrastive_batch", "triplet"]
    assert {"center", "ring"} <= set(TRAINABLE)
    assert "regulariser" in loss_refusal("ring", head="partial_fc")
    assert sorted(PK_ONLY) == ["contrastive_batch", "triplet"]
    assert "pk_k" in loss_refusal("triplet")


def test_check_recipe_reports_the_refusal():
    from fr_lib.recipes import check_recipe, load_recipe
    recipe = load_recipe("quick-synthetic")
    recipe["train"]["loss"], recipe["train"]["loss_kwargs"] = "triplet", {}
    with pytest.raises(ValueError, match=r"train\.loss: loss 'triplet' cannot be "
                                         r"trained .*metric loss"):
        check_recipe(recipe)
    for loss in ("center", "ring", "adaface", "subcenter_arcface"):  # now trainable
        recipe["train"]["loss"], recipe["train"]["loss_kwargs"] = loss, {}
        check_recipe(recipe)
    recipe["train"]["loss"], recipe["train"]["pk_k"] = "triplet", 4  # P×K batches
    check_recipe(recipe)
    recipe["train"].update(loss="center", loss_warmup_iters=10)
    with pytest.raises(ValueError, match="train.loss_warmup_iters: loss 'center' has "
                                         "no head"):
        check_recipe(recipe)
    # λ of softmax + λ·regulariser: train.regularizer_weight
    recipe["train"].update(loss_warmup_iters=0, pk_k=0, regularizer_weight=0.003,
                           loss_kwargs={"update": "paper"})
    check_recipe(recipe)
    for loss, weight, why in (("center", 0, "must be a positive number, got 0"),
                              ("arcface", 0.1, "'arcface' is not a regulariser")):
        recipe["train"].update(loss=loss, loss_kwargs={}, regularizer_weight=weight)
        with pytest.raises(ValueError, match=f"train.regularizer_weight: .*{why}"):
            check_recipe(recipe)


def test_fr_train_config_trains_triplet_on_pk_batches(tmp_path):
    from mxnet import gluon
    from fr_lib.data.synthetic import write_dataset
    from fr_lib.train import train
    info = write_dataset(str(tmp_path / "data"), num_identities=4,
                         images_per_identity=4, num_val_pairs=0, seed=0)
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Conv2D(4, 5, strides=4), gluon.nn.GlobalAvgPool2D(),
                 gluon.nn.Dense(8))
    config = {"data": info["out_dir"], "batch_size": 4, "pk_k": 2, "max_iters": 2,
              "loss": "triplet", "loss_kwargs": {"normalize": True},
              "out_dir": str(tmp_path / "run"), "progress": False,
              "checkpoint_every": 0, "log_every": 1}
    seen = []
    result = train(config, backbone=backbone,
                   callbacks=[lambda t, r: seen.append(t.data.batch_sampler)])
    assert result.iterations == 2 and np.isfinite(result.last_loss)
    assert isinstance(seen[0], PKSampler)
    with pytest.raises(ValueError, match="not P×K"):
        train(dict(config, pk_k=0, out_dir=str(tmp_path / "run2")), backbone=backbone)


def test_fr_train_trains_a_regulariser_with_its_weight(tmp_path):
    from mxnet import gluon
    from fr_lib.data.synthetic import write_dataset
    from fr_lib.train import train
    from fr_lib.train.objective import RegularisedObjective
    info = write_dataset(str(tmp_path / "data"), num_identities=4,
                         images_per_identity=4, num_val_pairs=0, seed=0)
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Conv2D(4, 5, strides=4), gluon.nn.GlobalAvgPool2D(),
                 gluon.nn.Dense(8))
    config = {"data": info["out_dir"], "batch_size": 4, "max_iters": 2,
              "loss": "ring", "loss_kwargs": {"radius": "mean"},
              "regularizer_weight": 0.05, "out_dir": str(tmp_path / "run"),
              "progress": False, "checkpoint_every": 0, "log_every": 1}
    seen = []
    result = train(config, backbone=backbone,
                   callbacks=[lambda t, r: seen.append(t.objective)])
    assert result.iterations == 2 and np.isfinite(result.last_loss)
    assert isinstance(seen[0], RegularisedObjective) and seen[0].weight == 0.05


# -- correctness of what the objective layer feeds each loss --------------------
def _first_step(tmp_path, loss, contexts=("cpu(0)",), **kwargs):
    """The trainer, a batch, the head's output before the step (NumPy), the
    embeddings, and the mean loss the first step reports."""
    trainer = _trainer(tmp_path, loss, True, list(contexts), **kwargs)
    X, y = train_helper.make_data(per_class=4)
    X, y = mx.nd.array(X[::5]), mx.nd.array(y[::5])  # 8 samples, several classes
    trainer.prepare(X)
    emb = trainer.net(X)
    out = trainer.head(emb).asnumpy() if trainer.objective.has_head else None
    return trainer, y.asnumpy().astype(int), out, emb.asnumpy(), trainer.train_step(X, y)


def _ce(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def _with_target(cos, y, target, s):
    logits = s * cos.astype(np.float64)
    logits[np.arange(len(y)), y] = s * target
    return _ce(logits, y).mean()


@pytest.mark.parametrize("engine", ["auto", "mxnet"])  # native loss forms or not
def test_sphereface_gets_lambda_of_the_trainers_iteration(tmp_path, engine):
    trainer, y, cos, _, loss = _first_step(tmp_path, "sphereface",
                                           loss_kwargs={"s": 8.0}, engine=engine)
    lam = 1000.0 / (1 + 0.12 * 1)  # Caffe's schedule at the first iteration
    theta = np.arccos(np.clip(cos[np.arange(len(y)), y], -1 + 1e-7, 1 - 1e-7))
    k = np.floor(4 * theta / np.pi)
    psi = (-1) ** k * np.cos(4 * theta) - 2 * k
    target = (lam * np.cos(theta) + psi) / (1 + lam)
    assert_allclose(loss, _with_target(cos, y, target, 8.0), rtol=1e-4)
    assert trainer.loss.iteration == 1


@pytest.mark.parametrize("contexts", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
def test_curricularface_t_after_one_step(tmp_path, contexts):
    trainer, y, cos, _, loss = _first_step(tmp_path, "curricularface", contexts)
    # t <- 0.01 * mean(clip(cos_y)) + 0.99 * 0 over the whole batch
    cos_y = cos[np.arange(len(y)), y]
    t = 0.01 * np.clip(cos_y, -1, 1).mean()
    assert_allclose(trainer.loss.t, t, rtol=1e-5)
    if len(contexts) == 1:  # the loss of this batch uses the updated t
        theta = np.arccos(np.clip(cos_y, -1 + 1e-7, 1 - 1e-7))
        cos_ym = np.cos(theta + 0.5)
        target = np.where(cos_y > np.cos(np.pi - 0.5), cos_ym,
                          cos_y - 0.5 * np.sin(0.5))
        others = np.where(cos > cos_ym[:, None], cos * (t + cos), cos)
        assert_allclose(loss, _with_target(others, y, target, 64.0), rtol=1e-4)


@pytest.mark.parametrize("engine", ["auto", "mxnet"])
def test_magface_gets_the_embedding_norms(tmp_path, engine):
    trainer, y, cos, emb, loss = _first_step(
        tmp_path, "magface", loss_kwargs={"s": 8.0, "l_a": 0.5, "u_a": 5.0},
        engine=engine)
    a = np.clip(np.linalg.norm(emb, axis=1), 0.5, 5.0)
    m = 0.45 + (0.8 - 0.45) / 4.5 * (a - 0.5)
    theta = np.arccos(np.clip(cos[np.arange(len(y)), y], -1 + 1e-7, 1 - 1e-7))
    target = np.where(np.cos(theta) > np.cos(np.pi - m), np.cos(theta + m),
                      np.cos(theta) - m * np.sin(m))
    expected = _with_target(cos, y, target, 8.0) + 35.0 * (1 / a + a / 25.0).mean()
    assert_allclose(loss, expected, rtol=1e-4)


def test_adaface_statistics_after_one_step(tmp_path):
    trainer, y, cos, emb, _ = _first_step(tmp_path, "adaface", ["cpu(0)", "cpu(1)"])
    norms = np.clip(np.linalg.norm(emb.astype(np.float64), axis=1), 1e-3, 100)
    assert_allclose(trainer.loss.batch_mean, 0.01 * norms.mean() + 0.99 * 20, rtol=1e-6)
    assert_allclose(trainer.loss.batch_std, 0.01 * norms.std(ddof=1) + 0.99 * 100,
                    rtol=1e-6)


def test_subcenter_head_is_c_times_k_wide(tmp_path):
    trainer, y, cos, _, loss = _first_step(tmp_path, "subcenter_arcface",
                                           loss_kwargs={"k": 2, "s": 8.0})
    assert cos.shape == (8, 2 * train_helper.NUM_CLASSES)
    cos_y = cos.reshape(8, -1, 2).max(axis=2)
    theta = np.arccos(np.clip(cos_y[np.arange(8), y], -1 + 1e-7, 1 - 1e-7))
    target = np.where(np.cos(theta) > np.cos(np.pi - 0.5), np.cos(theta + 0.5),
                      np.cos(theta) - 0.5 * np.sin(0.5))
    assert_allclose(loss, _with_target(cos_y, y, target, 8.0), rtol=1e-4)


# -- the regularisers: softmax + λ·regulariser ------------------------------------
def _regularised_first_step(tmp_path, loss, contexts, **kwargs):
    """The trainer, labels, embeddings (float64), the Dense head's W and b
    before the step, and the mean loss of the first step."""
    trainer = _trainer(tmp_path, loss, True, list(contexts), **kwargs)
    X, y = train_helper.make_data(per_class=4)
    X, y = mx.nd.array(X[::5]), mx.nd.array(y[::5])  # 8 samples, several classes
    trainer.prepare(X)
    emb = trainer.net(X).asnumpy().astype(np.float64)
    fc = trainer.objective.base.head
    W, b = (p.data().asnumpy().astype(np.float64) for p in (fc.weight, fc.bias))
    return trainer, y.asnumpy().astype(int), emb, W, b, trainer.train_step(X, y)


@pytest.mark.parametrize("contexts", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
@pytest.mark.parametrize("loss, loss_kwargs", [
    ("center", {}), ("center", {"update": "paper", "alpha": 0.5}),
    ("ring", {"radius": 2.0})], ids=["center", "center-paper", "ring"])
def test_regulariser_first_step_is_softmax_plus_weighted_term(tmp_path, loss,
                                                             loss_kwargs, contexts):
    trainer, y, emb, W, b, value = _regularised_first_step(
        tmp_path, loss, contexts, loss_kwargs=loss_kwargs)
    lam = contract_of(loss).regularizer_weight
    assert trainer.objective.weight == lam and trainer.objective.base.name == "softmax"
    norm2 = (emb ** 2).sum(axis=1)
    # the centres start at 0, the radius at 2
    reg = 0.5 * norm2 if loss == "center" else 0.5 * (np.sqrt(norm2) - 2.0) ** 2
    assert_allclose(value, (_ce(emb @ W.T + b, y) + lam * reg).mean(), rtol=1e-5)
    if loss == "ring":
        assert trainer.loss.radius.data().asscalar() != 2.0  # trained with the head
        return
    present = np.unique(y)
    for c in range(len(contexts)):  # every copy of the centres alike
        centres = trainer.loss.centers.data(trainer.ctx[c]).asnumpy()
        if loss_kwargs.get("update") == "paper":
            # the paper's rule with the embeddings of the whole batch, from 0:
            # c_j = α Σ_{y_i=j} x_i / (1 + n_j)
            expect = np.zeros_like(centres)
            for j in present:
                expect[j] = 0.5 * emb[y == j].sum(axis=0) / (1 + (y == j).sum())
            assert_allclose(centres, expect, rtol=1e-5, atol=1e-6)
        else:  # moved by the optimizer, with the gradient of λ·center
            assert np.abs(centres[present]).min(axis=1).max() > 0
    absent = np.setdiff1d(np.arange(train_helper.NUM_CLASSES), present)
    assert not centres[absent].any()
    saved = mx.nd.load(trainer.save_checkpoint() + "/head.params")
    assert_allclose(saved["reg.centers"].asnumpy(), centres)
    assert_allclose(saved["head.weight"].asnumpy(),
                    trainer.objective.base.head.weight.data().asnumpy())


def test_regularised_objective_options():
    from fr_lib.train.objective import Objective, RegularisedObjective
    obj = Objective("ring", {}, 4, regularizer_weight=0.5)
    assert isinstance(obj, RegularisedObjective) and obj.weight == 0.5
    assert not obj.has_head and obj.state_dict() == {}
    with pytest.raises(ValueError, match="must be a positive number"):
        Objective("center", {}, 4, regularizer_weight=0.0)
    with pytest.raises(ValueError, match="'arcface' is not a regulariser"):
        Objective("arcface", {}, 4, regularizer_weight=0.1)
    with pytest.raises(ValueError, match="head='partial_fc' is not supported"):
        Objective("center", {}, 4, head_kind="partial_fc")
    # another classification loss under the regulariser
    cos = RegularisedObjective("center", {}, 4, base_loss="normface",
                               base_loss_kwargs={"s": 8.0})
    assert type(cos.base.head).__name__ == "NormDense"


def test_skipped_step_leaves_the_paper_centres(tmp_path):
    trainer = _trainer(tmp_path, "center", True, ["cpu(0)", "cpu(1)"],
                       loss_kwargs={"update": "paper"})
    X, y = train_helper.make_data(per_class=4)
    X, y = mx.nd.array(X[::5]), mx.nd.array(y[::5])
    X[0] = np.nan  # NaN embeddings reach the paper's update of class y[0]
    assert trainer.train_step(X, y) is None and trainer.bad_steps == 1
    for c in trainer.ctx:
        assert not trainer.loss.centers.data(c).asnumpy().any()
    X[0] = 0.0
    assert trainer.train_step(X, y) is not None
    centres = [trainer.loss.centers.data(c).asnumpy() for c in trainer.ctx]
    assert np.isfinite(centres[0]).all() and centres[0].any()
    assert_allclose(centres[1], centres[0])


@pytest.mark.parametrize("loss, loss_kwargs", [("center", {"update": "paper"}),
                                               ("ring", {"radius": "mean"})])
def test_regulariser_resume_is_exact(tmp_path, loss, loss_kwargs):
    kw = dict(checkpoint_every=2, resume=True, loss_kwargs=loss_kwargs)
    full = _trainer(tmp_path / "full", loss, True, ["cpu(0)"], max_iters=4, **kw)
    full.fit(4)
    part = _trainer(tmp_path / "part", loss, True, ["cpu(0)"], max_iters=4, **kw)
    part.fit(2)
    resumed = _trainer(tmp_path / "part", loss, True, ["cpu(0)"], max_iters=4, **kw)
    steps, step = [], resumed.train_step
    resumed.train_step = lambda X, y: steps.append(1) or step(X, y)
    resumed.fit(4)
    assert len(steps) == 2  # iterations 3 and 4, after the checkpoint of 2
    for a, b in zip(resumed.params.values(), full.params.values()):  # same order
        assert a.shape == b.shape
        assert_allclose(a.data().asnumpy(), b.data().asnumpy(), rtol=1e-6, atol=1e-7)
    reg = [(t.loss.centers if loss == "center" else t.loss.radius).data().asnumpy()
           for t in (full, part, resumed)]
    assert_allclose(reg[2], reg[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(reg[1], reg[0])  # they moved after iteration 2


@pytest.mark.parametrize("loss", ["curricularface", "adaface"])
def test_resume_restores_the_running_state(tmp_path, loss):
    kw = dict(checkpoint_every=2, resume=True)
    full = _trainer(tmp_path / "full", loss, True, ["cpu(0)"], max_iters=4, **kw)
    full.fit(4)
    part = _trainer(tmp_path / "part", loss, True, ["cpu(0)"], max_iters=4, **kw)
    part.fit(2)
    resumed = _trainer(tmp_path / "part", loss, True, ["cpu(0)"], max_iters=4, **kw)
    resumed.fit(4)
    assert resumed.objective.state_dict() == full.objective.state_dict()
    assert full.objective.state_dict() != part.objective.state_dict()
    for a, b in zip(resumed.params.values(), full.params.values()):  # same order
        assert a.shape == b.shape
        assert_allclose(a.data().asnumpy(), b.data().asnumpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("contexts", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
def test_contrastive_batch_loss_of_the_first_pk_step(tmp_path, contexts):
    trainer = _trainer(tmp_path, "contrastive_batch", True, contexts, pk=True)
    X, y = trainer.data.next_batch()
    trainer.data.load_state_dict(dict(trainer.data.state_dict(), epoch=0, batch=0))
    assert len(np.unique(y.asnumpy())) == 4  # P=4 identities x K=2
    trainer.prepare(X)
    emb, labels = trainer.net(X).asnumpy().astype(np.float64), y.asnumpy()

    def by_hand(e, l):  # mean over the ordered pairs i != j, margin 1
        d = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1) + 1e-12)
        same = l[:, None] == l[None]
        off = ~np.eye(len(l), dtype=bool)
        cost = np.where(same, d ** 2, np.maximum(1 - d, 0) ** 2) / 2
        return cost[off].mean()
    shards = np.array_split(np.arange(8), len(contexts))  # each context its shard
    expected = np.mean([by_hand(emb[i], labels[i]) for i in shards])
    assert_allclose(trainer.train_step(X, y), expected, rtol=1e-4)


def test_skipped_step_leaves_the_running_state(tmp_path):
    trainer = _trainer(tmp_path, "curricularface", True, ["cpu(0)"])
    X, y = train_helper.make_data(per_class=4)
    X, y = mx.nd.array(X[::5]), mx.nd.array(y[::5])
    X[0] = np.nan
    assert trainer.train_step(X, y) is None  # non-finite: skipped and undone
    assert trainer.loss.t == 0.0 and trainer.bad_steps == 1
    X[0] = 0.0
    assert trainer.train_step(X, y) is not None and trainer.loss.t != 0.0

"""Partial FC as a head of FaceTrainer / fr-train (TrainConfig.head='partial_fc'),
the trainer's own randomness and the renamed options (issue 16, items 1-4)."""
import os
import random
import shutil
import sys
import warnings

import mxnet as mx
import numpy as np
import pytest
from numpy.testing import assert_allclose

from fr_lib.loss import get_loss_list
from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig, read_log
from fr_lib.train.trainer import loss_refusal, partial_fc_refusal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_helper  # noqa: E402


def _trainer(out_dir, max_iters=4, backbone_dropout=0.0, **kwargs):
    X, y = train_helper.make_data(per_class=4)
    values = dict(ctx=["cpu(0)"], loss_warmup_iters=0, warmup_iters=0, batch_size=8,
                  checkpoint_every=0, head="partial_fc", sample_rate=0.5)
    values.update(kwargs)
    cfg = train_helper.config(str(out_dir), max_iters, **values)
    return FaceTrainer(cfg, ArrayBatches(X, y, 8, seed=1),
                       backbone=train_helper.make_mlp(backbone_dropout))


def _losses(out_dir):
    return [r["loss"] for r in read_log(str(out_dir))["train"]]


def test_rate_one_trains_as_the_full_normdense_head(tmp_path):
    """sample_rate=1 through the trainer = NormDense + ArcFace through the
    gluon Trainer (same lr schedule, momentum, wd, gradient scale), started
    from the same centres: same losses and weights up to float rounding."""
    X, _ = train_helper.make_data(per_class=4)
    pfc = _trainer(tmp_path / "pfc", sample_rate=1.0, lr_mode="cosine", warmup_iters=2)
    full = _trainer(tmp_path / "full", head="auto", lr_mode="cosine", warmup_iters=2)
    for t in (pfc, full):
        t.prepare(mx.nd.array(X[:2]))
    w0 = pfc.partial_fc.weight().asnumpy()
    full.head.weight.set_data(mx.nd.array(w0))
    for p, q in zip(pfc.net.collect_params().values(), full.net.collect_params().values()):
        assert np.array_equal(p.data().asnumpy(), q.data().asnumpy())  # same seed
    pfc.fit()
    full.fit()
    assert_allclose(_losses(tmp_path / "pfc"), _losses(tmp_path / "full"), rtol=1e-5)
    # (centres of norm ~0.01 move by O(1): rounding grows with 1/||w||)
    assert_allclose(pfc.partial_fc.weight().asnumpy(),
                    full.head.weight.data().asnumpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(pfc.partial_fc.weight().asnumpy(), w0)  # it trained
    for p, q in zip(pfc.net.collect_params().values(), full.net.collect_params().values()):
        assert_allclose(p.data().asnumpy(), q.data().asnumpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ctx,hybridize", [(["cpu(0)"], True),
                                           (["cpu(0)", "cpu(1)"], False)])
def test_resume_is_bitwise_and_global_rngs_are_untouched(tmp_path, ctx, hybridize):
    """Stop after 3 of 6 iterations, resume in a new trainer: the same losses,
    backbone, class centres and momentum, bit for bit (sample_rate 0.5: the
    sampling matters; dropout: MXNet's generator matters); NumPy's and
    Python's global generators are as they were before."""
    np.random.seed(11)
    random.seed(11)
    np_state, py_state = np.random.get_state(), random.getstate()
    kw = dict(ctx=ctx, hybridize=hybridize, checkpoint_every=3, backbone_dropout=0.2)
    a = _trainer(tmp_path / "a", 6, **kw)
    a.fit()
    b = _trainer(tmp_path / "b", 6, **kw)
    b.fit(3)
    b = _trainer(tmp_path / "b", 6, **kw)  # a new process would do the same
    b.fit()
    assert read_log(str(tmp_path / "b"))["resume"][0]["iteration"] == 3
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    for name in ("backbone.params", "partial_fc.params"):
        pa = mx.nd.load(str(tmp_path / "a" / "checkpoints" / "ckpt-000000006" / name))
        pb = mx.nd.load(str(tmp_path / "b" / "checkpoints" / "ckpt-000000006" / name))
        assert sorted(pa) == sorted(pb)
        for k in pa:
            assert np.array_equal(pa[k].asnumpy(), pb[k].asnumpy()), (name, k)
    assert "momentum" in pa and np.abs(pa["momentum"].asnumpy()).max() > 0
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
    assert random.getstate() == py_state


def test_a_bad_step_leaves_the_centres_and_momentum_as_they_were(tmp_path):
    t = _trainer(tmp_path, 2, ctx=["cpu(0)", "cpu(1)"])
    t.fit(1)
    w, m = t.partial_fc.weight().asnumpy(), t.partial_fc.momentum_buffer().asnumpy()
    X, y = t.data.next_batch()
    X[0, 0] = np.inf
    assert t.train_step(X, y) is None and t.bad_steps == 1
    assert np.array_equal(t.partial_fc.weight().asnumpy(), w)
    assert np.array_equal(t.partial_fc.momentum_buffer().asnumpy(), m)
    assert t.partial_fc.num_update == 1


PFC_LOSSES = [n for n in get_loss_list() if loss_refusal(n, head="partial_fc") is None]


def test_which_losses_partial_fc_takes():
    assert sorted(PFC_LOSSES) == ["amsoftmax", "arcface", "asoftmax", "circle",
                                  "combined", "cosface", "magface", "normface",
                                  "sphereface"]


@pytest.mark.parametrize("ctx", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
@pytest.mark.parametrize("hybridize", [True, False])
@pytest.mark.parametrize("loss", PFC_LOSSES)
def test_every_loss_it_takes_trains_two_iterations(tmp_path, loss, hybridize, ctx):
    t = _trainer(tmp_path, 2, loss=loss, loss_kwargs={}, ctx=ctx, hybridize=hybridize)
    t.fit(1)
    w = t.partial_fc.weight().asnumpy()
    before = {k: p.data(t.ctx[0]).asnumpy().copy() for k, p in t.params.items()}
    result = t.fit()
    assert result.bad_steps == 0 and np.isfinite(result.last_loss), loss
    assert not np.array_equal(t.partial_fc.weight().asnumpy(), w), loss
    assert any(not np.array_equal(p.data(t.ctx[0]).asnumpy(), before[k])
               for k, p in t.params.items()), loss
    # a loss that reweights more than the true-class logit cannot be sharded
    if loss in ("circle", "magface", "sphereface", "asoftmax"):
        assert t.partial_fc.softmax == "joined"


def test_refusals_name_the_reason(tmp_path):
    for loss, why in (("curricularface", "running state"),
                      ("subcenter_arcface", "k centres per class"),
                      ("softmax", "needs a cosine loss"),
                      ("lgm", "consumes the embeddings"),
                      ("center", "it is a regulariser on the embeddings")):
        assert why in loss_refusal(loss, head="partial_fc"), loss
        with pytest.raises(ValueError, match=why):
            _trainer(tmp_path, loss=loss, loss_kwargs={})
    assert loss_refusal("arcface", head="partial_fc") is None
    assert "not one of" in loss_refusal("arcface", head="bogus")
    for change, why in ((dict(optimizer="adam"), "optimizer='sgd'"),
                        (dict(sample_rate=0.0), r"sample_rate must be a number in \(0, 1\]"),
                        (dict(amp="bfloat16"), "amp is not supported"),
                        (dict(loss_warmup_iters=2), "loss_warmup_iters"),
                        (dict(partial_fc_softmax="sharded", loss="circle", loss_kwargs={}),
                         "softmax='sharded' needs a loss")):
        with pytest.raises(ValueError, match=why):
            _trainer(tmp_path, **change)
    cfg = TrainConfig(head="partial_fc", kvstore="dist_sync").to_dict()
    assert "all-gather" in partial_fc_refusal(cfg)


def test_renamed_options_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="'num_workers' is now called "
                                                "'decode_threads'"), \
            pytest.warns(DeprecationWarning, match="'contexts' is now called 'ctx'"):
        cfg = TrainConfig(num_workers=3, contexts=["cpu(0)"])
    assert cfg.decode_threads == 3 and cfg.ctx == ["cpu(0)"]
    assert "num_workers" not in cfg.to_dict() and "contexts" not in cfg.to_dict()
    with pytest.warns(DeprecationWarning):
        assert TrainConfig.from_dict({"contexts": ["cpu(1)"]}).ctx == ["cpu(1)"]
    with pytest.warns(DeprecationWarning):
        assert cfg.contexts == ["cpu(0)"]
    with pytest.raises(ValueError, match="old name of 'ctx'"):
        TrainConfig(contexts=["cpu(0)"], ctx=["cpu(0)"])
    from fr_lib.recipes import load_recipe
    with pytest.warns(DeprecationWarning, match="num_workers"):
        r = load_recipe("quick-synthetic", ["train.num_workers=2"], quick=False)
    assert r["train"]["decode_threads"] == 2 and "num_workers" not in r["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig(decode_threads=1, ctx=["cpu(0)"])  # the new names: no warning


def test_partial_fc_recipe_trains_and_resumes_through_fr_train(tmp_path, monkeypatch):
    """fr-train partial-fc-synthetic (its entry point, in this process): a few
    iterations on a small synthetic set; a run resumed from its middle
    checkpoint ends bitwise where the uninterrupted run ended."""
    from fr_lib.recipes import train_main
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path / "data"))
    common = ["partial-fc-synthetic", "--full",
              "--set", "synthetic={num_identities: 24, images_per_identity: 4, "
                       "num_val_pairs: 40, difficulty: 0.3, seed: 0}",
              "--set", "train.backbone_kwargs={width: [4, 8, 8], embedding_size: 16}",
              "--set", "train.batch_size=8", "--set", "train.max_iters=4",
              "--set", "train.checkpoint_every=2", "--set", "train.verify_every=0",
              "--set", "train.warmup_iters=0", "--set", "train.progress=false",
              "--set", "train.log_every=1"]
    assert train_main(common + ["--out", str(tmp_path / "a")]) == 0
    ckpts = tmp_path / "a" / "checkpoints"
    assert (ckpts / "ckpt-000000004" / "partial_fc.params").is_file()
    events = read_log(str(tmp_path / "a"))
    assert events["start"][0]["config"]["head"] == "partial_fc"
    assert len(events["verify"]) == 1  # at the end, on synth_val
    # an interrupted copy: the last checkpoint and the log after it gone
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "ckpt-000000004")
    assert train_main(common + ["--out", str(tmp_path / "b"),
                                "--set", "train.resume=true"]) == 0
    assert read_log(str(tmp_path / "b"))["resume"][0]["iteration"] == 2
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert read_log(str(tmp_path / "a"))["verify"][-1]["metric"] == \
        read_log(str(tmp_path / "b"))["verify"][-1]["metric"]
    # (two CPU contexts: each keeps its own BatchNorm statistics, saved apart)
    for name in ("backbone.params", "partial_fc.params", "trainer.states",
                 "context_stats.params"):
        assert (ckpts / "ckpt-000000004" / name).read_bytes() == \
            (tmp_path / "b" / "checkpoints" / "ckpt-000000004" / name).read_bytes(), name


def test_resume_with_another_seed_is_refused(tmp_path):
    """The seed is the trainer's whole random state: resuming a run under
    another seed would not continue it."""
    _trainer(tmp_path, 2, head="auto").fit()
    other = _trainer(tmp_path, 4, head="auto", seed=4)
    with pytest.raises(ValueError, match="trained with seed=3, this configuration "
                                         "has seed=4"):
        other.fit()

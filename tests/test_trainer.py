"""FaceTrainer: data parallelism, NaN guard, loss warm-up, clipping, checkpoints,
exact resumption after SIGKILL, verification and the log."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import mxnet as mx
import pytest
from mxnet import gluon
from numpy.testing import assert_allclose

from fr_lib.train import (ArrayBatches, CheckpointError, FaceTrainer, NonFiniteError,
                          RecordBatches, TrainConfig, exclude_from_weight_decay,
                          plot_log, read_log, train)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_helper  # noqa: E402


def _config(tmp_path, **kwargs):
    return train_helper.config(str(tmp_path), kwargs.pop("max_iters", 10), **kwargs)


def _trainer(tmp_path, data=None, dropout=0.0, **kwargs):
    X, y = train_helper.make_data()
    data = data or ArrayBatches(X, y, kwargs.get("batch_size", 24), seed=3)
    return FaceTrainer(_config(tmp_path, **kwargs), data,
                       backbone=train_helper.make_mlp(dropout))


def _params(trainer):
    """Parameter values by position (block names differ between instances)."""
    return {i: v.data(trainer.ctx[0]).asnumpy().copy()
            for i, v in enumerate(trainer.params.values())}


def test_two_cpu_contexts_match_one(tmp_path):
    one = _trainer(tmp_path / "one", max_iters=8, resume=False)
    two = _trainer(tmp_path / "two", ctx=["cpu(0)", "cpu(1)"], max_iters=8,
                   resume=False)
    r1, r2 = one.fit(), two.fit()
    assert r1.iterations == r2.iterations == 8
    p1, p2 = _params(one), _params(two)
    for k in p1:
        assert_allclose(p1[k], p2[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # both contexts hold the same weights after the update
    w = two.net[0].weight
    assert_allclose(w.data(mx.cpu(0)).asnumpy(), w.data(mx.cpu(1)).asnumpy())
    l1 = [r["loss"] for r in read_log(r1.log_path)["train"]]
    l2 = [r["loss"] for r in read_log(r2.log_path)["train"]]
    assert_allclose(l1, l2, rtol=1e-4)


class _Poisoned:
    """Wraps a data source; the batches of the given iterations hold a NaN."""

    def __init__(self, source, bad):
        self.source, self.bad, self.count = source, set(bad), 0
        self.num_classes = source.num_classes

    def next_batch(self):
        X, y = self.source.next_batch()
        self.count += 1
        if self.count in self.bad:
            X = X.copy()
            X[0, 0] = np.nan
        return X, y

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)


def test_injected_nan_is_skipped_and_counted(tmp_path):
    X, y = train_helper.make_data()
    data = _Poisoned(ArrayBatches(X, y, 24, seed=3), bad={4})
    trainer = _trainer(tmp_path, data=data, max_iters=8, resume=False)
    trainer.fit(max_iters=3)
    before = _params(trainer)
    assert trainer.train_step(*data.next_batch()) is None  # iteration 4: NaN
    after = _params(trainer)
    for k in before:
        assert np.array_equal(before[k], after[k]), k   # nothing changed
    result = trainer.fit()
    assert result.iterations == 8 and result.bad_steps == 1
    assert all(np.isfinite(v).all() for v in _params(trainer).values())
    bad = read_log(result.log_path)["bad_step"]
    assert [r["iteration"] for r in bad] == [4]


def test_many_nans_in_a_row_stop_with_clear_message(tmp_path):
    X, y = train_helper.make_data()
    data = _Poisoned(ArrayBatches(X, y, 24, seed=3), bad=range(7, 100))
    trainer = _trainer(tmp_path, data=data, max_iters=30, max_bad_steps=3)
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps.*iteration 9.*"
                                             r"ckpt-000000005"):
        trainer.fit()
    assert trainer.bad_steps == 3
    assert [it for it, _ in trainer.checkpoints.list()] == [5]
    assert trainer.checkpoints.load().state["bad_steps"] == 0  # a good one


def test_loss_warmup_then_margin_against_numpy(tmp_path):
    trainer = _trainer(tmp_path, max_iters=3, loss_warmup_iters=2, resume=False,
                       lr_mode="constant", warmup_iters=0)
    s, m = 16.0, 0.3

    def reference(margin):
        peek = ArrayBatches(*train_helper.make_data(), 24, seed=3)
        peek.load_state_dict(trainer.data.state_dict())
        X, y = peek.next_batch()
        trainer.prepare(X)  # idempotent: later calls change nothing
        emb = trainer.net(X).asnumpy()  # no dropout outside autograd
        W = trainer.head.weight.data().asnumpy()
        cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ \
            (W / np.linalg.norm(W, axis=1, keepdims=True)).T
        yi = y.asnumpy().astype(int)
        logits = s * cos
        if margin:
            t = np.arccos(np.clip(cos[np.arange(len(yi)), yi], -1, 1))
            logits[np.arange(len(yi)), yi] = s * np.cos(t + m)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(yi)), yi].mean()

    expected = [reference(False)]
    trainer.fit(max_iters=1)
    expected.append(reference(False))
    trainer.fit(max_iters=2)
    expected.append(reference(True))   # iteration 3: past the warm-up
    trainer.fit(max_iters=3)
    losses = [r["loss"] for r in read_log(trainer.log_path)["train"]]
    assert_allclose(losses, expected, rtol=1e-4)


def test_global_norm_clipping_bounds_the_update(tmp_path):
    trainer = _trainer(tmp_path, max_iters=1, lr=0.1, lr_mode="constant",
                       warmup_iters=0, momentum=0.0, wd=0.0, clip_global_norm=1e-3,
                       resume=False, loss_warmup_iters=0)
    X, y = trainer.data.next_batch()
    trainer.prepare(X)
    before = _params(trainer)
    trainer.train_step(X, y)
    after = _params(trainer)
    step = np.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert_allclose(step, 0.1 * 1e-3, rtol=1e-3)


def test_weight_decay_exclusions():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3), gluon.nn.BatchNorm(), gluon.nn.PReLU(),
            gluon.nn.Dense(2))
    names = exclude_from_weight_decay(net.collect_params())
    kinds = sorted(n.split("_")[-1] for n in names)
    assert kinds == ["alpha", "beta", "bias", "bias", "gamma"]
    assert all(net.collect_params()[n].wd_mult == 0 for n in names)
    assert net[0].weight.wd_mult == 1


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, max_iters=5, resume=False)
    trainer.fit()  # ckpt-5

    def no_space(fname):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.trainer, "save_states", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        trainer.fit(max_iters=10)
    assert [it for it, _ in trainer.checkpoints.list()] == [5]
    assert trainer.checkpoints.load().iteration == 5
    assert not [n for n in os.listdir(trainer.checkpoints.directory)
                if n.startswith(".tmp")]


def test_corrupt_checkpoint_on_resume(tmp_path):
    _trainer(tmp_path, max_iters=10, resume=False).fit()  # ckpt-5, ckpt-10
    params = tmp_path / "checkpoints" / "ckpt-000000010" / "head.params"
    with open(params, "r+b") as f:
        f.truncate(10)
    with pytest.raises(CheckpointError, match=r"head\.params: 10 bytes.*truncated.*"
                                              r"ckpt-000000005"):
        _trainer(tmp_path, max_iters=12).fit()
    assert (tmp_path / "checkpoints" / "ckpt-000000005" / "meta.json").exists()
    resumed = _trainer(tmp_path, max_iters=12,
                       resume=str(tmp_path / "checkpoints" / "ckpt-000000005"))
    assert resumed.fit().iterations == 12


def _run_helper(out_dir, max_iters, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(HERE, "train_helper.py"),
                             str(out_dir), str(max_iters), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """Kill -9 between checkpoints, resume: same iterations and losses, same weights."""
    full = _run_helper(tmp_path / "full", 20)
    killed = _run_helper(tmp_path / "killed", 20, 8)
    marker = tmp_path / "killed" / "checkpoints" / "ckpt-000000010"
    deadline = time.time() + 60
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), killed.communicate()[0].decode()[-2000:]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    out_full = full.communicate()[0].decode()
    assert full.returncode == 0, out_full[-2000:]
    resumed = _run_helper(tmp_path / "killed", 20)
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, out[-2000:]
    assert "done 20 0" in out

    a = read_log(tmp_path / "full")
    b = read_log(tmp_path / "killed")
    assert [r["iteration"] for r in b["train"]] == list(range(1, 21))
    assert len(b["resume"]) == 1 and b["resume"][0]["iteration"] >= 10
    assert_allclose([r["loss"] for r in b["train"]], [r["loss"] for r in a["train"]],
                    rtol=1e-5, atol=1e-6)
    assert_allclose([r["lr"] for r in b["train"]], [r["lr"] for r in a["train"]])
    for name in ("backbone.params", "head.params"):
        pa = mx.nd.load(str(tmp_path / "full" / "checkpoints" / "ckpt-000000020" / name))
        pb = mx.nd.load(str(tmp_path / "killed" / "checkpoints" / "ckpt-000000020" / name))
        for k in pa:
            assert_allclose(pa[k].asnumpy(), pb[k].asnumpy(), rtol=1e-5, atol=1e-6)


def test_dist_sync_two_workers_match_one_process(tmp_path):
    """MXNet's parameter server on 127.0.0.1: 2 workers x 12 = 1 process x 24."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(port),
               DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="2", PYTHONUNBUFFERED="1")
    procs = []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"],
                                          env=dict(env, DMLC_ROLE=role),
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "train_helper.py"),
                                     str(tmp_path / "dist"), "6", "dist_sync"],
                                    env=dict(env, DMLC_ROLE="worker"),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                   for _ in range(2)]
        procs += workers
        single = _trainer(tmp_path / "single", max_iters=6, dropout=0.0, resume=False,
                          checkpoint_every=0)
        single.fit()
        outs = [w.communicate(timeout=120)[0].decode() for w in workers]
        for w, out in zip(workers, outs):
            assert w.returncode == 0, out[-2000:]
        assert sorted(o.split("done")[-1].split()[0] for o in outs) == ["0", "1"]
        assert all(o.split("done")[-1].split()[1:] == ["2", "6"] for o in outs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for name in ("backbone.params", "head.params"):
        pa = mx.nd.load(str(tmp_path / "dist" / "checkpoints" / "ckpt-000000006" / name))
        pb = mx.nd.load(str(tmp_path / "single" / "checkpoints" / "ckpt-000000006" / name))
        for k in pa:
            assert_allclose(pa[k].asnumpy(), pb[k].asnumpy(), rtol=1e-4, atol=1e-5)


def _image_pairs(num_pairs=40, seed=1):
    """Verification pairs of the training classes, as (2N, 1, 4, 4) 'images'."""
    X, y = train_helper.make_data(seed=0)
    rng = np.random.default_rng(seed)
    idx, issame = [], []
    for k in range(num_pairs):
        a = rng.integers(len(y))
        same = k % 2 == 0
        pool = np.flatnonzero((y == y[a]) if same else (y != y[a]))
        idx += [a, rng.choice(pool)]
        issame.append(same)
    return X[idx].reshape(-1, 1, 4, 4), np.array(issame)


def test_verification_best_model_and_log_plot(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    X, y = train_helper.make_data()
    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Flatten(), train_helper.make_mlp(0.0))
    trainer = FaceTrainer(_config(tmp_path, max_iters=12, verify_every=6, resume=False),
                          ArrayBatches(X.reshape(-1, 1, 4, 4), y, 24, seed=3),
                          backbone=backbone, val_sets={"toy": _image_pairs()})
    result = trainer.fit()
    verify = read_log(tmp_path)["verify"]
    assert [r["iteration"] for r in verify] == [6, 12]
    assert result.best_metric == max(r["metric"] for r in verify) > 0.8
    assert os.path.exists(trainer.best_path)
    assert f"best-{result.best_iteration:09d}" in trainer.best_path
    assert 0 <= verify[-1]["toy"]["eer"] <= 1
    axes = plot_log(str(tmp_path))
    assert len(axes) == 2 and axes[0].get_xlabel() == "iteration"


def test_config_from_dict_rejects_unknown_keys():
    cfg = TrainConfig.from_dict({"loss": "cosface", "lr": 0.05})
    assert cfg.loss == "cosface" and cfg.to_dict()["lr"] == 0.05
    with pytest.raises(ValueError, match="unknown training option.*'lrate'"):
        TrainConfig.from_dict({"lrate": 0.1})


def test_record_batches_resume_and_train_from_config(tmp_path):
    from fr_lib.data.synthetic import write_dataset
    info = write_dataset(str(tmp_path / "data"), num_identities=4,
                         images_per_identity=4, num_val_pairs=0, seed=0)
    a = RecordBatches(info["out_dir"], batch_size=4, seed=1)
    batches = [a.next_batch() for _ in range(6)]  # crosses an epoch (4 per epoch)
    b = RecordBatches(info["out_dir"], batch_size=4, seed=1)
    a2 = RecordBatches(info["out_dir"], batch_size=4, seed=1)
    for _ in range(2):
        a2.next_batch()
    b.load_state_dict(a2.state_dict())
    for X, y in batches[2:]:
        Xb, yb = b.next_batch()
        assert_allclose(Xb.asnumpy(), X.asnumpy())
        assert_allclose(yb.asnumpy(), y.asnumpy())
    with pytest.raises(ValueError, match="batch_size"):
        RecordBatches(info["out_dir"], batch_size=8, seed=1).load_state_dict(b.state_dict())

    backbone = gluon.nn.HybridSequential()
    backbone.add(gluon.nn.Conv2D(4, 5, strides=4), gluon.nn.GlobalAvgPool2D(),
                 gluon.nn.Dense(8))
    result = train({"data": info["out_dir"], "batch_size": 4, "max_iters": 3,
                    "loss": "cosface", "ctx": ["cpu(0)", "cpu(1)"], "no_wd": True,
                    "out_dir": str(tmp_path / "run"), "progress": False,
                    "checkpoint_every": 0, "log_every": 1}, backbone=backbone)
    assert result.iterations == 3 and np.isfinite(result.last_loss)
    assert os.path.basename(result.checkpoint) == "ckpt-000000003"


def test_plot_log_labels_do_not_overlap(tmp_path):
    # issue 14: the learning-rate label of the twin axis was drawn over the
    # accuracy panel's label; compare their bounding boxes after a draw.
    import matplotlib
    matplotlib.use("Agg")
    with open(tmp_path / "log.jsonl", "w") as f:
        for it in range(0, 200, 10):
            f.write(json.dumps({"event": "train", "iteration": it,
                                "loss": 20 - it / 20, "lr": 0.1 * (1 - it / 200)}) + "\n")
        f.write(json.dumps({"event": "verify", "iteration": 199,
                            "toy": {"accuracy": 0.9}}) + "\n")
    axes = plot_log(str(tmp_path))
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax_lr = [a for a in fig.axes if a not in list(axes)][0]
    lr_right = ax_lr.get_tightbbox(renderer).x1
    acc_left = axes[1].get_tightbbox(renderer).x0
    assert lr_right < acc_left, (lr_right, acc_left)


def test_a_warm_up_as_long_as_the_run_is_refused_when_the_trainer_is_built(tmp_path):
    """The schedule is built from the config by one function, for the trainer
    and for fr-train's check; the error names the TrainConfig options."""
    with pytest.raises(ValueError, match=r"lr_mode: the 'cosine' schedule refuses "
                                         r"max_iters=4, warmup_iters=4: .*warmup_iters < "
                                         r"max_iters"):
        _trainer(tmp_path, max_iters=4, warmup_iters=4, lr_mode="cosine")
    assert not (tmp_path / "log.jsonl").exists()
    trainer = _trainer(tmp_path, max_iters=4, warmup_iters=2, lr_mode="cosine")
    assert 0 < trainer.schedule(1) < trainer.schedule(2)    # warming up, then decaying

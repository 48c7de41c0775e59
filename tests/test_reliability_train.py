"""Training runs that never lose work or report the wrong model (issue 15, the
training loop): one run per out_dir, the run lock, an honest NaN guard, label
checks on every path, resume by name, disk-full and umask, SIGKILL-and-resume on
two contexts. Each test reproduces a reported failure."""
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import mxnet as mx
import pytest
from mxnet import gluon
from numpy.testing import assert_array_equal

from fr_lib.train import (ArrayBatches, CheckpointError, FaceTrainer, NonFiniteError,
                          RunDirectoryError, RunLock, TrainConfig, read_checkpoint,
                          read_log)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_helper  # noqa: E402
from test_trainer import _Poisoned, _run_helper, _trainer  # noqa: E402


def _ckpts(out):
    d = os.path.join(out, "checkpoints")
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def _old_runs(out):
    parent, name = os.path.split(str(out))
    return sorted(os.path.join(parent, n) for n in os.listdir(parent)
                  if n.startswith(name + ".old-"))


# -- 1. a run directory belongs to one run -------------------------------------------

def test_rerun_into_used_out_dir_is_refused_and_fresh_moves_it_aside(tmp_path):
    out = tmp_path / "run"
    _trainer(out, max_iters=10, resume=False).fit()        # ckpt-5, ckpt-10
    assert _ckpts(out) == ["ckpt-000000005", "ckpt-000000010"]
    # the reported case: a second run without resume deleted its own checkpoints
    # (pruning kept the old, higher ones) and reported the old model
    with pytest.raises(RunDirectoryError, match=rf"{out}.*already holds a training run"
                                                r".*ckpt-000000010.*resume.*fresh"):
        _trainer(out, max_iters=4, resume=False).fit()
    assert _ckpts(out) == ["ckpt-000000005", "ckpt-000000010"]  # untouched
    assert not os.path.exists(out / ".lock")                    # released

    result = _trainer(out, max_iters=4, resume=False, fresh=True).fit()
    assert result.iterations == 4
    assert _ckpts(out) == ["ckpt-000000004"]
    assert os.path.isdir(result.checkpoint) and result.checkpoint.endswith("ckpt-000000004")
    log = read_log(out)
    assert len(log["start"]) == 1 and max(r["iteration"] for r in log["train"]) == 4
    with pytest.raises(ValueError, match="contradict"):
        _trainer(out, max_iters=4, resume=True, fresh=True)
    (old,) = _old_runs(out)     # the old run, whole, beside it
    assert _ckpts(old) == ["ckpt-000000005", "ckpt-000000010"]
    assert max(r["iteration"] for r in read_log(old)["train"]) == 10


def test_resume_by_checkpoint_name_sets_newer_checkpoints_aside(tmp_path):
    out = tmp_path / "run"
    _trainer(out, max_iters=10, resume=False).fit()         # ckpt-5, ckpt-10
    # the name the corrupt-checkpoint message suggests, not a full path
    trainer = _trainer(out, max_iters=8, resume="ckpt-000000005")
    result = trainer.fit()
    assert result.iterations == 8 and len(read_log(out)["resume"]) == 1
    # ckpt-10 (the abandoned continuation) would win "newest" and pruning
    assert _ckpts(out) == ["ckpt-000000005", "ckpt-000000008"]
    (old,) = _old_runs(out)
    assert _ckpts(old) == ["ckpt-000000010"]
    assert max(r["iteration"] for r in read_log(out)["train"]) == 8
    with pytest.raises(CheckpointError, match=r"resume='ckpt-000000099'.*"
                                              r"ckpt-000000005, ckpt-000000008|"
                                              r"resume='ckpt-000000099'.*ckpt-000000008"):
        _trainer(out, max_iters=9, resume="ckpt-000000099").fit()


def test_resume_true_without_checkpoint_moves_leftovers_aside(tmp_path):
    out = tmp_path / "run"
    os.makedirs(out)
    with open(out / "log.jsonl", "w") as f:   # a run killed before its first checkpoint
        f.write('{"event": "start", "iteration": 0}\n{"event": "train", "iteration": 1')
    result = _trainer(out, max_iters=4).fit()            # resume=True
    assert result.iterations == 4
    assert len(read_log(out)["start"]) == 1
    (old,) = _old_runs(out)
    assert read_log(old)["start"]


# -- 2. the run lock ----------------------------------------------------------------

def test_second_trainer_on_the_same_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    refused = []

    def second_writer(trainer, record):
        if record["iteration"] == 2:
            with pytest.raises(RunDirectoryError,
                               match=rf"{out} is in use: process {os.getpid()}"):
                _trainer(out, max_iters=4).fit()
            refused.append(True)

    first = _trainer(out, max_iters=4, resume=False)
    first.callbacks.append(second_writer)
    assert first.fit().iterations == 4 and refused
    assert len(read_log(out)["start"]) == 1       # the log is the first run's alone
    assert not os.path.exists(out / ".lock")


def test_lock_held_by_another_process_names_its_pid(tmp_path):
    out = tmp_path / "run"
    os.makedirs(out)
    code = ("import sys, time; from fr_lib.train.checkpoint import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunDirectoryError, match=rf"process {holder.pid} on "):
            _trainer(out, max_iters=4, resume=False).fit()
        # killed without releasing: the kernel drops the flock, the file stays
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert os.path.exists(out / ".lock")
        assert _trainer(out, max_iters=4, resume=False).fit().iterations == 4
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_stale_lock_file_with_dead_pid_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    os.makedirs(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(out / ".lock", "w") as f:
        f.write(f"{dead.pid} somehost\n")
    with caplog.at_level(logging.WARNING, logger="fr_lib"):
        assert _trainer(out, max_iters=4, resume=False).fit().iterations == 4
    assert f"stale lock of process {dead.pid}" in caplog.text
    assert not os.path.exists(out / ".lock")


def test_lock_released_when_training_fails(tmp_path):
    out = tmp_path / "run"

    def crash(trainer, record):
        if record["iteration"] == 2:
            raise KeyboardInterrupt

    trainer = _trainer(out, max_iters=4, resume=False)
    trainer.callbacks.append(crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not os.path.exists(out / ".lock")
    with RunLock(out):
        pass


def test_lock_without_flock_uses_pid_liveness(tmp_path, monkeypatch):
    """Where flock is missing: O_EXCL, a live holder refused, a dead one taken over."""
    import builtins
    real_import = builtins.__import__

    def no_fcntl(name, *args, **kwargs):
        if name == "fcntl":
            raise ImportError("no fcntl")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fcntl)
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirectoryError, match=f"process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    (tmp_path / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    RunLock(tmp_path).acquire().release()
    assert not (tmp_path / ".lock").exists()


# -- 3. an honest NaN guard -----------------------------------------------------------

def _bn_net():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3, padding=1), gluon.nn.BatchNorm(),
            gluon.nn.Activation("relu"), gluon.nn.Flatten(), gluon.nn.Dense(8))
    return net


def _image_data(seed=0, size=8):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(train_helper.NUM_CLASSES), 12)
    centers = rng.normal(size=(train_helper.NUM_CLASSES, 1, size, size))
    X = centers[y] + 0.5 * rng.normal(size=(len(y), 1, size, size))
    return X.astype(np.float32), y


class _OnePixel(_Poisoned):
    """The batches of the given iterations hold one NaN pixel."""

    def next_batch(self):
        X, y = self.source.next_batch()
        self.count += 1
        if self.count in self.bad:
            X = X.copy()
            X[0, 0, 2, 3] = np.nan
        return X, y


def _all_values(trainer):
    """Every parameter (running statistics included) on every context."""
    return {(k, i): d.asnumpy().copy() for k, p in trainer.params.items()
            for i, d in enumerate(p.list_data())}


@pytest.mark.parametrize("clip,check_update", [(None, True), (10.0, True), (None, False)])
def test_nan_pixel_leaves_batchnorm_statistics_untouched(tmp_path, clip, check_update):
    """One NaN pixel in one batch: before, every running statistic of the
    first BatchNorm became NaN and eval mode gave every image one embedding."""
    X, y = _image_data()
    data = _OnePixel(ArrayBatches(X, y, 24, seed=3), bad={3})
    cfg = train_helper.config(str(tmp_path), 6, resume=False, clip_global_norm=clip,
                              ctx=["cpu(0)", "cpu(1)"], check_update=check_update)
    trainer = FaceTrainer(cfg, data, backbone=_bn_net())
    trainer.fit(max_iters=2)
    before = _all_values(trainer)
    X3, y3 = data.next_batch()
    assert np.isnan(X3.asnumpy()).sum() == 1
    assert trainer.train_step(X3, y3) is None                  # skipped ...
    after = _all_values(trainer)
    for key in before:                                        # ... and undone
        assert_array_equal(after[key], before[key], err_msg=str(key))
    result = trainer.fit()
    assert result.bad_steps == 1
    stats = [p for k, p in trainer.params.items() if "running" in k]
    assert len(stats) == 2
    for p in stats:
        for d in p.list_data():
            assert np.isfinite(d.asnumpy()).all()
    emb = trainer.net(mx.nd.array(X[:4])).asnumpy()            # eval mode
    assert np.isfinite(emb).all()
    assert np.abs(emb[0] - emb[1]).max() > 1e-3 and np.abs(emb[0] - emb[3]).max() > 1e-3


def test_nan_pixel_native_engine_running_statistics(tmp_path):
    """The native engine writes running statistics in its forward pass."""
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (16, 3, 112, 112)).astype("float32")
    y = rng.randint(0, 10, 16)
    cfg = TrainConfig(backbone="mobilefacenet", num_classes=10, batch_size=8,
                      max_iters=3, lr=0.01, checkpoint_every=0, progress=False,
                      engine="native", out_dir=str(tmp_path))
    trainer = FaceTrainer(cfg, ArrayBatches(X, y, 8, shuffle=False))
    Xb, yb = trainer.data.next_batch()
    assert trainer.train_step(Xb, yb) is not None
    before = _all_values(trainer)
    Xn = Xb.copy()
    Xn[0, 0, 5, 5] = np.nan
    assert trainer.train_step(Xn, yb) is None
    after = _all_values(trainer)
    for key in before:
        assert_array_equal(after[key], before[key], err_msg=str(key))
    assert trainer.train_step(Xb, yb) is not None


@pytest.mark.parametrize("contexts,clip,expected", [
    (["cpu(0)"], None, 1), (["cpu(0)", "cpu(1)"], None, 1),
    (["cpu(0)", "cpu(1)"], 1e3, 2)])
def test_guard_waits_for_the_device_once_per_step(tmp_path, monkeypatch, contexts, clip,
                                                 expected):
    """The loss, the gradient norm and the updated weights come back in one
    transfer (two with clipping, which needs the norm before the update); the
    guard used to read one loss per context plus the gradient norm."""
    trainer = _trainer(tmp_path, max_iters=4, resume=False, ctx=contexts,
                       clip_global_norm=clip)
    X, y = trainer.data.next_batch()
    trainer.train_step(X, y)
    reads = []
    real = mx.nd.NDArray.asnumpy

    def counting(self):
        reads.append(self.shape)
        return real(self)

    monkeypatch.setattr(mx.nd.NDArray, "asnumpy", counting)
    X, y = trainer.data.next_batch()
    assert trainer.train_step(X, y) is not None
    monkeypatch.undo()
    assert reads[0] == y.shape                          # the labels, on the host
    assert len(reads) - 1 == expected, reads


def _finite_checkpoint(path):
    ckpt = read_checkpoint(path)
    for name in ("backbone.params", "head.params"):
        for k, v in mx.nd.load(ckpt.file(name)).items():
            assert np.isfinite(v.asnumpy()).all(), (path, name, k)


@pytest.mark.parametrize("clip", [None, 1e3])
def test_divergent_learning_rate_is_caught_after_the_update(tmp_path, clip):
    """5 steps at lr 0.1 (ckpt-5), then resumed at lr 1e38: every update
    overflows. Before, those steps counted as good, ckpt-10 was written with
    inf values and named as the last good checkpoint."""
    X, y = train_helper.make_data()

    def trainer(lr, resume):
        cfg = train_helper.config(str(tmp_path), 30, resume=resume, lr=lr,
                                  lr_mode="constant", warmup_iters=0, max_bad_steps=6,
                                  clip_global_norm=clip)
        return FaceTrainer(cfg, ArrayBatches(X, y, 24, seed=3),
                           backbone=train_helper.make_mlp(0.0))

    trainer(0.1, False).fit(max_iters=5)
    trainer = trainer(1e38, True)
    with pytest.raises(NonFiniteError, match=r"6 consecutive steps \(up to iteration 11\)"
                                             r".*update.*ckpt-000000005") as err:
        trainer.fit()
    assert "ckpt-000000010" not in str(err.value)
    assert _ckpts(tmp_path) == ["ckpt-000000005"]               # none during the streak
    _finite_checkpoint(os.path.join(tmp_path, "checkpoints", "ckpt-000000005"))
    bad = read_log(tmp_path)["bad_step"]
    assert [r["iteration"] for r in bad] == list(range(6, 12))
    assert {r["reason"] for r in bad} == {"update"}
    assert read_log(tmp_path)["checkpoint_skipped"][0]["iteration"] == 10
    for v in _all_values(trainer).values():                     # rolled back
        assert np.isfinite(v).all()


def test_checkpoint_with_non_finite_tensors_is_refused(tmp_path):
    trainer = _trainer(tmp_path, max_iters=4, resume=False)
    trainer.fit()
    w = trainer.head.weight.data(trainer.ctx[0])
    w[0, 0] = np.inf
    trainer.iteration += 1
    with pytest.raises(NonFiniteError, match=r"not writing a checkpoint.*weight"):
        trainer.save_checkpoint()
    assert _ckpts(tmp_path) == ["ckpt-000000004"]


def test_resume_refuses_a_checkpoint_with_non_finite_values(tmp_path):
    """Such a checkpoint (written by an older fr_lib) is not a good one."""
    trainer = _trainer(tmp_path, max_iters=5, resume=False)
    trainer.fit()                                               # ckpt-5
    trainer.head.weight.data(trainer.ctx[0])[1, 2] = np.nan
    trainer.iteration = 6                                       # as the old code did
    trainer.checkpoints.save(6, {"backbone.params": trainer.net.save_parameters,
                                 "head.params": trainer.head.save_parameters,
                                 "trainer.states": trainer.trainer.save_states},
                             trainer._state())
    with pytest.raises(CheckpointError, match=r"ckpt-000000006: holds non-finite values "
                                              r"\(.*weight.*older.*ckpt-000000005"):
        _trainer(tmp_path, max_iters=8).fit()
    resumed = _trainer(tmp_path, max_iters=8, resume="ckpt-000000005").fit()
    assert resumed.iterations == 8 and resumed.bad_steps == 0


# -- 4. labels out of range -----------------------------------------------------------

def test_trainer_rejects_out_of_range_labels_naming_the_batch(tmp_path):
    X, y = train_helper.make_data()
    y = y.copy()
    y[100] = 10                       # 11 classes in the data, num_classes=10
    trainer = _trainer(tmp_path, data=ArrayBatches(X, y, 24, seed=3, shuffle=False),
                       max_iters=10, resume=False, num_classes=10)
    with pytest.raises(ValueError, match=r"iteration 5: label 10 of sample 4 of the "
                                         r"batch \(data epoch 0, batch 4, dataset index "
                                         r"100\).*num_classes=10"):
        trainer.fit()
    assert trainer.iteration == 4


_LABEL_SCRIPT = textwrap.dedent("""
    import numpy as np, mxnet as mx
    from fr_lib.loss import get_loss
    from fr_lib.native import native_blocks, to_native
    cos = mx.nd.array(np.random.default_rng(0).uniform(-1, 1, (4, 10)))
    for name in ("arcface", "curricularface"):
        for hybrid in (False, True):
            loss = to_native(get_loss(name, s=16))  # native where it loads
            if hybrid:
                loss.hybridize()
            for bad in (10, 12, -1):
                label = mx.nd.array([1, 2, bad, 3])
                cos.attach_grad()
                try:
                    with mx.autograd.record():
                        out = loss(cos, label)
                    out.backward()
                    mx.nd.waitall()
                    print(name, hybrid, bad, "NO-ERROR", out.asnumpy(), flush=True)
                except (ValueError, mx.base.MXNetError) as err:
                    text = str(err)
                    named = any(w in text for w in ("out of range", "out of bound",
                                                    "not a class id"))
                    print(name, hybrid, bad, "ERROR", named, flush=True)
    print("native", bool(native_blocks(loss)), flush=True)
""")


@pytest.mark.parametrize("native", ["1", "0"])
def test_losses_reject_out_of_range_labels_on_every_path(native):
    """FR_LIB_NATIVE on/off x imperative/hybridized, forward and backward; in a
    subprocess, since the reported failure (FR_LIB_NATIVE=0, hybridized: an
    index_copy outside the matrix) was a segfault at exit."""
    env = dict(os.environ, FR_LIB_NATIVE=native, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _LABEL_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    expected = [f"{name} {hybrid} {bad} ERROR True"
                for name in ("arcface", "curricularface")
                for hybrid in (False, True) for bad in (10, 12, -1)]
    assert lines == expected + [f"native {native == '1'}"], proc.stdout


def test_fallback_trainer_rejects_labels_before_the_graph(tmp_path):
    """The reported run: FR_LIB_NATIVE=0, hybridized, num_classes too small."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        import train_helper
        from fr_lib.train import ArrayBatches, FaceTrainer
        X, y = train_helper.make_data()
        cfg = train_helper.config({str(tmp_path)!r}, 5, resume=False, num_classes=6)
        t = FaceTrainer(cfg, ArrayBatches(X, y, 24, seed=3),
                        backbone=train_helper.make_mlp(0.0))
        try:
            t.fit()
        except ValueError as err:
            print("REFUSED", err)
    """)
    env = dict(os.environ, FR_LIB_NATIVE="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "REFUSED iteration 1: label" in proc.stdout and "num_classes=6" in proc.stdout


# -- 5. resume by name, full disk, umask -----------------------------------------------

def test_resume_with_full_disk_names_the_log_and_the_disk(tmp_path, monkeypatch):
    _trainer(tmp_path, max_iters=5, resume=False).fit()
    from fr_lib.train.trainer import run_dir as trainer_module

    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer_module, "atomic_write_text", no_space)
    with pytest.raises(RunDirectoryError, match=rf"training log {tmp_path}/log.jsonl.*"
                                                r"No space left.*bytes free"):
        _trainer(tmp_path, max_iters=8).fit()
    assert not os.path.exists(tmp_path / ".lock")


def test_run_and_checkpoint_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        _trainer(out, max_iters=5, resume=False).fit()
    finally:
        os.umask(old)
    ckpt = out / "checkpoints" / "ckpt-000000005"
    for path in (out, out / "checkpoints", ckpt):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, path
    for path in (out / "log.jsonl", ckpt / "meta.json", ckpt / "head.params"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder):
    """Fill the file system of ``folder`` to the last byte."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        with pytest.raises(OSError) as err:
            while True:
                f.write(b"\0" * 4096)
        assert err.value.errno == errno.ENOSPC
        for _ in range(4096):   # the last partial page
            try:
                f.write(b"\0")
            except OSError:
                break
    assert os.statvfs(folder).f_bavail == 0


def test_disk_full_on_a_real_tmpfs(small_tmpfs):
    out = small_tmpfs / "run"
    trainer = _trainer(out, max_iters=10, resume=False)
    trainer.fit(max_iters=5)                              # ckpt-5
    _fill(small_tmpfs)
    with pytest.raises(CheckpointError, match=r"No space left on device.*bytes free"):
        trainer.fit(max_iters=10)
    assert not os.path.exists(out / ".lock")
    assert _ckpts(out) == ["ckpt-000000005"]              # the previous one, intact
    read_checkpoint(str(out / "checkpoints" / "ckpt-000000005"))
    with pytest.raises(RunDirectoryError, match=r"log.jsonl.*No space left.*0 bytes free"):
        _trainer(out, max_iters=10).fit()                 # resume with 0 bytes free
    os.remove(small_tmpfs / "filler")
    assert _trainer(out, max_iters=10).fit().iterations == 10


def test_resume_in_the_same_process_keeps_each_momentum_with_its_weight(tmp_path):
    """gluon.Trainer numbers parameters by their sorted global names: with
    layers named dense9/dense10 the second layer sorts first, with
    dense11/dense12 it does not, so a checkpoint's momentum went to the wrong
    weights (an MXNetError on the shapes, or a silent mix-up)."""
    def mlp(first, second):
        net = gluon.nn.HybridSequential(prefix="mlp_")
        net.add(gluon.nn.Dense(32, activation="relu", prefix=f"dense{first}_"),
                gluon.nn.Dense(8, prefix=f"dense{second}_"))
        return net

    X, y = train_helper.make_data()

    def trainer(net, **kw):
        cfg = train_helper.config(str(tmp_path), 8, **kw)
        return FaceTrainer(cfg, ArrayBatches(X, y, 24, seed=3), backbone=net)

    a = trainer(mlp(9, 10), resume=False)
    a.fit(max_iters=5)
    a.fit()                                                     # 8, uninterrupted
    b = trainer(mlp(11, 12), resume="ckpt-000000005")
    assert b.fit().iterations == 8
    for pa, pb in zip(a.params.values(), b.params.values()):
        assert_array_equal(pa.data().asnumpy(), pb.data().asnumpy(), err_msg=pa.name)


# -- 6. SIGKILL and resume on two contexts ----------------------------------------------

def test_sigkill_then_resume_two_contexts_matches_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_TEST_CONTEXTS", "cpu(0),cpu(1)")
    full = _run_helper(tmp_path / "full", 15)
    killed = _run_helper(tmp_path / "killed", 15, 7)
    marker = tmp_path / "killed" / "checkpoints" / "ckpt-000000010"
    deadline = time.time() + 90
    while not marker.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), killed.communicate()[0].decode()[-2000:]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert os.path.exists(tmp_path / "killed" / ".lock")    # left behind, stale
    out_full = full.communicate()[0].decode()
    assert full.returncode == 0, out_full[-2000:]
    resumed = _run_helper(tmp_path / "killed", 15)
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, out[-2000:]
    assert "done 15 0" in out and "stale lock" in out

    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "killed")
    assert a["start"][0]["contexts"] == ["cpu(0)", "cpu(1)"]
    assert [r["iteration"] for r in b["train"]] == list(range(1, 16))
    assert [r["loss"] for r in b["train"]] == [r["loss"] for r in a["train"]]
    for name in ("backbone.params", "head.params", "trainer.states"):
        pa, pb = (open(tmp_path / run / "checkpoints" / "ckpt-000000015" / name,
                       "rb").read() for run in ("full", "killed"))
        assert pa == pb, name                                # bitwise

"""A real 2-worker dist_sync cluster on 127.0.0.1 (fr_lib.train.launch)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon

from fr_lib.train import launch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3


def _reference(init, n_workers):
    """The same training in one process on the whole global batch."""
    rng = np.random.RandomState(0)
    X = rng.randn(8 * n_workers, 5).astype("float32")
    Y = rng.randn(8 * n_workers, 3).astype("float32")
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(4, activation="tanh", in_units=5),
            gluon.nn.Dense(3, in_units=4))
    net.initialize()
    params = list(net.collect_params().values())
    for i, p in enumerate(params):
        p.set_data(mx.nd.array(init[f"p{i}"]))
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 0.1, "momentum": 0.9})
    x, y = mx.nd.array(X), mx.nd.array(Y)
    for _ in range(STEPS):
        with autograd.record():
            loss = ((net(x) - y) ** 2).sum()
        loss.backward()
        trainer.step(8 * n_workers)
    return [p.data().asnumpy() for p in params]


def test_two_workers_dist_sync(tmp_path):
    rng = np.random.RandomState(1)
    init = {"p0": rng.randn(4, 5), "p1": rng.randn(4), "p2": rng.randn(3, 4),
            "p3": rng.randn(3)}
    init = {k: v.astype("float32") for k, v in init.items()}
    np.savez(tmp_path / "init.npz", **init)
    codes = launch.launch_local(
        [sys.executable, os.path.join(HERE, "dist_worker.py"), str(tmp_path),
         str(STEPS)], num_workers=2, num_servers=1, timeout=120)
    assert codes == [0, 0]
    w0 = np.load(tmp_path / "worker0.npz")
    w1 = np.load(tmp_path / "worker1.npz")
    ref = _reference(init, 2)
    for i in range(4):
        # identical weights on both workers ...
        np.testing.assert_array_equal(w0[f"p{i}"], w1[f"p{i}"])
        # ... and equal to one process training on the global batch
        np.testing.assert_allclose(w0[f"p{i}"], ref[i], rtol=1e-5, atol=1e-6)
        # and training actually moved them
        assert np.abs(w0[f"p{i}"] - init[f"p{i}"]).max() > 1e-3


def test_failing_worker_is_reported(tmp_path):
    with pytest.raises(launch.LaunchError, match="worker .* exited with code 3"):
        launch.launch_local([sys.executable, "-c", "import sys; sys.exit(3)"],
                            num_workers=2, timeout=60)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_workers"):
        launch.launch_local([sys.executable, "-c", "pass"], num_workers=0)
    with pytest.raises(TypeError, match="list of arguments"):
        launch.launch_local("python train.py")
    with pytest.raises(ValueError, match="role"):
        launch.cluster_env("boss", 1, 1, 9000)


def test_command_line_help():
    out = subprocess.run([sys.executable, "-m", "fr_lib.train.launch", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "dist_sync" in out.stdout

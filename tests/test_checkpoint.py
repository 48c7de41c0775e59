"""Atomic checkpoints: save/load, keep-last-N, corruption and failed writes."""
import errno
import json
import os
import random

import numpy as np
import mxnet as mx
import pytest
from mxnet import gluon
from numpy.testing import assert_allclose, assert_array_equal

from fr_lib.train import (CheckpointError, CheckpointManager, file_sha256,
                          read_checkpoint, rng_state, set_rng_state, step_seed)


def _net(seed):
    mx.random.seed(seed)
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize()
    return net


def _save(manager, it, net, extra=b"abc"):
    return manager.save(it, {"net.params": net.save_parameters, "extra.bin": extra},
                        {"position": it})


def test_save_load_roundtrip(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=None)
    net = _net(0)
    path = _save(manager, 7, net)
    assert os.path.basename(path) == "ckpt-000000007"
    ckpt = manager.load()
    assert ckpt.iteration == 7 and ckpt.state == {"position": 7}
    other = gluon.nn.Dense(3, in_units=4)
    other.load_parameters(ckpt.file("net.params"))
    assert_array_equal(other.weight.data().asnumpy(), net.weight.data().asnumpy())
    with open(ckpt.file("extra.bin"), "rb") as f:
        assert f.read() == b"abc"
    meta = json.load(open(os.path.join(path, "meta.json")))
    import hashlib
    assert meta["files"]["extra.bin"] == {"size": 3,
                                          "sha256": hashlib.sha256(b"abc").hexdigest()}
    assert file_sha256(ckpt.file("extra.bin")) == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(CheckpointError, match="no file 'missing'"):
        ckpt.file("missing")


def test_keep_last_prunes_only_after_a_complete_save(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    net = _net(0)
    for it in (1, 2, 3, 4):
        _save(manager, it, net)
    assert [it for it, _ in manager.list()] == [3, 4]
    # another prefix in the same folder is independent
    best = CheckpointManager(tmp_path, prefix="best", keep_last=1)
    best.save(2, {"x": b"1"})
    assert [it for it, _ in manager.list()] == [3, 4]
    assert [it for it, _ in best.list()] == [2]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_corrupt_checkpoint_clear_error_previous_intact(tmp_path, damage):
    manager = CheckpointManager(tmp_path, keep_last=3)
    net = _net(0)
    _save(manager, 1, net)
    path = _save(manager, 2, net)
    params = os.path.join(path, "net.params")
    if damage == "truncate":
        with open(params, "r+b") as f:
            f.truncate(os.path.getsize(params) // 2)
        pattern = r"net\.params: \d+ bytes, but the checkpoint recorded \d+ \(truncated"
    elif damage == "flip":
        data = bytearray(open(params, "rb").read())
        data[-5] ^= 0xFF
        open(params, "wb").write(bytes(data))
        pattern = r"net\.params: checksum mismatch"
    elif damage == "delete":
        os.remove(params)
        pattern = r"net\.params: missing"
    else:
        with open(os.path.join(path, "meta.json"), "w") as f:
            f.write('{"iteration": 2, "fil')
        pattern = r"meta\.json: corrupt or truncated"
    with pytest.raises(CheckpointError, match=pattern) as info:
        manager.load()
    assert "ckpt-000000001" in str(info.value)  # names what is left
    assert manager.load(manager.path_for(1)).iteration == 1
    ckpt, skipped = manager.load_latest_valid()
    assert ckpt.iteration == 1 and len(skipped) == 1


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    """A full disk (simulated: the writer fails half-way) changes nothing."""
    manager = CheckpointManager(tmp_path, keep_last=1)
    net = _net(0)
    _save(manager, 1, net)
    before = {n: file_sha256(os.path.join(manager.path_for(1), n))
              for n in ("net.params", "extra.bin", "meta.json")}

    def full_disk(path):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match="No space left.*intact.*ckpt-000000001"):
        manager.save(2, {"net.params": net.save_parameters, "big.bin": full_disk})
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000001"]  # no partial dir
    after = {n: file_sha256(os.path.join(manager.path_for(1), n)) for n in before}
    assert after == before
    assert manager.load().iteration == 1


def test_stale_temporary_directory_is_removed(tmp_path):
    os.makedirs(tmp_path / ".tmp-ckpt-000000005-abc")  # left by a SIGKILL
    (tmp_path / ".tmp-ckpt-000000005-abc" / "net.params").write_bytes(b"x")
    manager = CheckpointManager(tmp_path)
    assert os.listdir(tmp_path) == []
    assert manager.latest() is None
    with pytest.raises(CheckpointError, match="no ckpt-"):
        manager.load()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(str(tmp_path / "nope"))


def test_resave_same_iteration_and_interrupted_replace(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(3, {"x": b"old"})
    manager.save(3, {"x": b"new"})  # e.g. a resumed run writes iteration 3 again
    assert open(manager.load().file("x"), "rb").read() == b"new"
    # killed between the two renames of a replacement: the old one comes back
    os.rename(manager.path_for(3), manager.path_for(3) + ".old")
    manager = CheckpointManager(tmp_path)
    assert open(manager.load().file("x"), "rb").read() == b"new"
    assert os.listdir(tmp_path) == ["ckpt-000000003"]


def test_rng_state_roundtrip_through_json():
    np.random.seed(5)
    random.seed(5)
    state = json.loads(json.dumps(rng_state()))
    a = (np.random.rand(3), random.random())
    np.random.seed(0)
    random.seed(0)
    set_rng_state(state)
    b = (np.random.rand(3), random.random())
    assert_allclose(a[0], b[0])
    assert a[1] == b[1]


def test_step_seed_is_a_fixed_function():
    seeds = [step_seed(0, i) for i in range(100)]
    assert seeds == [step_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and step_seed(1, 0) != step_seed(0, 1)
    assert all(0 <= s < 2 ** 31 for s in seeds)

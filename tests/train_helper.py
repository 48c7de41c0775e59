"""Train a tiny MLP with fr_lib.train.FaceTrainer (used by test_trainer.py).

Run as ``python tests/train_helper.py OUT_DIR MAX_ITERS [SLEEP_AFTER]``: the
data are synthetic vectors drawn from a fixed seed; checkpoints every 5
iterations, one log line per iteration, ``resume=True``. With
``SLEEP_AFTER`` the process sleeps 0.2 s after each iteration past that one,
so that a test can kill it with SIGKILL between two checkpoints.

``python tests/train_helper.py OUT_DIR MAX_ITERS dist_sync`` runs one worker
of a parameter-server job (the ``DMLC_*`` variables say which): batches of
12 per worker from its shard, no dropout.
"""
import os
import sys
import time

import numpy as np
from mxnet import gluon

from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig

NUM_CLASSES, DIM = 10, 16


def make_data(seed=0, per_class=24):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(NUM_CLASSES, DIM))
    y = np.repeat(np.arange(NUM_CLASSES), per_class)
    X = centers[y] + 0.6 * rng.normal(size=(len(y), DIM))
    return X.astype(np.float32), y


def make_mlp(dropout=0.1):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(32, activation="relu"), gluon.nn.Dropout(dropout),
            gluon.nn.Dense(8))
    return net


def config(out_dir, max_iters, **kwargs):
    # FR_TEST_CONTEXTS="cpu(0),cpu(1)": the same run data-parallel on two contexts
    contexts = os.environ.get("FR_TEST_CONTEXTS", "cpu(0)").split(",")
    values = dict(ctx=contexts, loss="arcface", loss_kwargs={"s": 16, "m": 0.3},
                  loss_warmup_iters=3, batch_size=24, max_iters=max_iters, lr=0.1,
                  lr_mode="cosine", warmup_iters=3, checkpoint_every=5, keep_last=10,
                  out_dir=out_dir, log_every=1, progress=False, resume=True, seed=3)
    values.update(kwargs)
    return TrainConfig(**values)


def main(argv):
    out_dir, max_iters = argv[0], int(argv[1])
    if len(argv) > 2 and argv[2].startswith("dist"):
        return dist_worker(out_dir, max_iters, argv[2])
    sleep_after = int(argv[2]) if len(argv) > 2 else None

    def slow_down(trainer, record):
        if sleep_after is not None and record["iteration"] >= sleep_after:
            time.sleep(0.2)

    X, y = make_data()
    trainer = FaceTrainer(config(out_dir, max_iters), ArrayBatches(X, y, 24, seed=3),
                          backbone=make_mlp(), callbacks=[slow_down])
    result = trainer.fit()
    print("done", result.iterations, result.bad_steps)


def dist_worker(out_dir, max_iters, kvstore):
    X, y = make_data()

    def shard(num_parts, part_index):
        return ArrayBatches(X, y, 12, seed=3, num_parts=num_parts, part_index=part_index)

    cfg = config(out_dir, max_iters, kvstore=kvstore, batch_size=12, resume=False,
                 checkpoint_every=0)
    trainer = FaceTrainer(cfg, shard, backbone=make_mlp(0.0))
    result = trainer.fit()
    print("done", trainer.rank, trainer.num_workers, result.iterations)


if __name__ == "__main__":
    main(sys.argv[1:])

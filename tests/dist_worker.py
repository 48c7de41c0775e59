"""A worker of the 2-worker dist_sync test (tests/test_launch.py).

Every worker trains the same small network from the same initial weights on
its own half of a fixed global batch, for a few SGD steps, through
``kvstore='dist_sync'``; it saves its final weights as ``<out>/worker<rank>.npz``.
"""
import os
import sys

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

out = sys.argv[1]
steps = int(sys.argv[2])
kv = mx.kv.create("dist_sync")
rank, n = kv.rank, kv.num_workers

rng = np.random.RandomState(0)
X = rng.randn(8 * n, 5).astype("float32")      # global batch
Y = rng.randn(8 * n, 3).astype("float32")
mine = slice(rank * 8, (rank + 1) * 8)

net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(4, activation="tanh", in_units=5), gluon.nn.Dense(3, in_units=4))
net.initialize(mx.init.Xavier(rnd_type="gaussian"))
init = np.load(os.path.join(out, "init.npz"))
params = list(net.collect_params().values())
for i, p in enumerate(params):
    p.set_data(mx.nd.array(init[f"p{i}"]))
trainer = gluon.Trainer(net.collect_params(), "sgd",
                        {"learning_rate": 0.1, "momentum": 0.9}, kvstore=kv)
x, y = mx.nd.array(X[mine]), mx.nd.array(Y[mine])
for _ in range(steps):
    with autograd.record():
        loss = ((net(x) - y) ** 2).sum()
    loss.backward()
    # the servers sum the workers' gradients: normalise by the global batch
    trainer.step(8 * n)
np.savez(os.path.join(out, f"worker{rank}.npz"),
         **{f"p{i}": p.data().asnumpy() for i, p in enumerate(params)})

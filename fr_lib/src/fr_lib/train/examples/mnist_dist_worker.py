"""The worker of the book's kvstore section (one ``dist_sync`` process).

Start it as the workers of a cluster, e.g. with
:func:`fr_lib.train.launch.launch_local`::

    python -m fr_lib.train.examples.mnist_dist_worker OUT_DIR STEPS BATCH

It trains a softmax classifier on its own shard of MNIST and saves
``weight{rank}.npy`` and ``log{rank}.json`` into ``OUT_DIR``.
"""
import json
import sys

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon, nd

from fr_lib.data import load_mnist
from fr_lib.data.sampler import ShardSampler
from fr_lib.utils.device import default_devices


def main(argv=None):
    """Join the cluster, train on this worker's shard, save weights and log.

    Parameters
    ----------
    argv : list of str or None
        ``[OUT_DIR, STEPS, BATCH]`` (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    out_dir, steps, batch = argv[0], int(argv[1]), int(argv[2])
    kv = mx.kv.create('dist_sync')        # join the scheduler, wait for all
    rank, n = kv.rank, kv.num_workers
    devices = default_devices()           # the usable GPUs, else [cpu(0)]
    ctx = devices[rank % len(devices)]    # one GPU per worker when there are

    d = load_mnist()
    X = d.X_train.reshape(len(d.X_train), -1).astype('float32')
    Y = d.y_train.astype('float32')
    # each worker reads only its own shard: disjoint, together the whole set
    mine = np.array(list(ShardSampler(len(Y), num_parts=n, part_index=rank,
                                      shuffle=True)))

    net = gluon.nn.Dense(10, in_units=784)
    net.initialize(mx.init.Zero(), ctx=ctx)  # all workers start equal
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.1, 'momentum': 0.9},
                            kvstore=kv)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    log = []
    for step in range(steps):
        idx = mine[(step * batch) % len(mine):][:batch]
        x, y = nd.array(X[idx], ctx=ctx), nd.array(Y[idx], ctx=ctx)
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch * n)           # the server sums n workers' grads
        log.append(float(loss.mean().asscalar()))
    w = net.weight.data().asnumpy()
    np.save(f'{out_dir}/weight{rank}.npy', w)
    with open(f'{out_dir}/log{rank}.json', 'w') as f:
        json.dump({'rank': rank, 'num_workers': n, 'samples': len(mine),
                   'loss': log}, f)


if __name__ == "__main__":
    main()

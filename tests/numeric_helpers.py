"""Helpers shared by the tests: finite differences and randomised backbones.

Importable from any test module (pytest puts ``tests/`` on ``sys.path``).
"""
import mxnet as mx
import numpy as np


def numeric_grad(f, x, h=1e-6):
    """Central finite differences of the scalar function ``f`` at ``x``
    (evaluated in float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (f(up) - f(down)) / (2 * h)
    return grad


def randomise_backbone(net, seed, alpha_range=(0.0, 1.0), shift=0.1):
    """Initialise ``net`` (MSRAPrelu) and draw the parameters that make every
    branch of an inference path matter: BatchNorm gammas and variances in
    [0.5, 1.5], betas and means in [-shift, shift], PReLU slopes from
    ``alpha_range``. Returns ``net``."""
    mx.random.seed(seed)
    net.initialize(mx.init.MSRAPrelu())
    rng = np.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith(("gamma", "running_var")):
            value = rng.uniform(0.5, 1.5, p.shape)
        elif name.endswith(("beta", "running_mean")):
            value = rng.uniform(-shift, shift, p.shape)
        elif name.endswith("alpha"):
            value = rng.uniform(*alpha_range, p.shape)
        else:
            continue
        p.set_data(mx.nd.array(value))
    return net

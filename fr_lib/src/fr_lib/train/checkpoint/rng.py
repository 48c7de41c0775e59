"""Random states around checkpoints: the MXNet seed of each step
(:func:`step_seed`) and the global NumPy/Python states for code that relies
on them (:func:`rng_state`, :func:`set_rng_state`).
"""
import random

import numpy as np

__all__ = ["rng_state", "set_rng_state", "step_seed"]


def rng_state():
    """The global NumPy and Python random states as JSON-serialisable data.

    Returns
    -------
    dict
        ``{'numpy': [...], 'python': [...]}``; give it to :func:`set_rng_state`.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def set_rng_state(state):
    """Restore the states saved by :func:`rng_state`.

    Parameters
    ----------
    state : dict
        As returned by :func:`rng_state` (after a JSON round trip).
    """
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def step_seed(seed, iteration):
    """The MXNet seed used for step ``iteration`` of a run seeded with ``seed``.

    A fixed hash of both numbers into ``[0, 2**31)``, so that neighbouring
    seeds and iterations give unrelated streams.

    Parameters
    ----------
    seed, iteration : int

    Returns
    -------
    int
    """
    ss = np.random.SeedSequence([int(seed), int(iteration)])
    return int(ss.generate_state(1, np.uint32)[0] >> 1)


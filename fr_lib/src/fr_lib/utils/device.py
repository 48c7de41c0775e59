"""Which devices to compute on: usable GPUs, or one or several CPU contexts."""
import logging

import mxnet as mx

__all__ = ["list_gpus", "get_devices", "describe_devices"]

logger = logging.getLogger("fr_lib")


def _gpu_works(ctx):
    """Run a tiny kernel: a GPU is counted only if MXNet can compute on it.

    MXNet's GPU wheels carry kernels for sm_50..sm_86 only, so on Hopper
    (H100/H200) ``num_gpus()`` is positive but every kernel fails.
    """
    try:
        (mx.nd.ones((2,), ctx=ctx) * 2).asnumpy()
        return True, ""
    except mx.base.MXNetError as err:
        return False, str(err).strip().splitlines()[0] if str(err).strip() else "error"


def list_gpus():
    """The GPU contexts MXNet can actually run kernels on.

    Returns
    -------
    list of mxnet.Context
        Empty on the CPU wheel, without GPUs, or when no GPU runs MXNet's
        kernels (each skipped GPU is logged with the reason).
    """
    try:
        count = mx.context.num_gpus()
    except mx.base.MXNetError:
        count = 0
    usable = []
    for i in range(count):
        ok, why = _gpu_works(mx.gpu(i))
        if ok:
            usable.append(mx.gpu(i))
        else:
            logger.warning("fr_lib: gpu(%d) is visible but MXNet cannot run on it "
                           "(%s); skipping it", i, why)
    return usable


def get_devices(num_gpus=None, num_cpus=1):
    """Contexts for (data-parallel) computation.

    Parameters
    ----------
    num_gpus : int or None
        How many GPUs to use; ``None`` uses every usable GPU, ``0`` forces CPU.
    num_cpus : int
        How many CPU contexts to return when no GPU is used. Several CPU
        contexts (``cpu(0)``, ``cpu(1)``, ...) share the same processor but let
        multi-device code (split, per-device forward/backward, gradient
        all-reduce) run and be tested on a laptop.

    Returns
    -------
    list of mxnet.Context
    """
    if num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    gpus = [] if num_gpus == 0 else list_gpus()
    if num_gpus is not None and num_gpus > len(gpus):
        raise ValueError(f"asked for {num_gpus} GPU(s), but only {len(gpus)} "
                         "usable GPU(s) were found")
    if gpus:
        devices = gpus if num_gpus is None else gpus[:num_gpus]
        logger.info("fr_lib: using %s", describe_devices(devices))
        return devices
    devices = [mx.cpu(i) for i in range(num_cpus)]
    if num_gpus != 0:
        logger.warning("fr_lib: no usable GPU found; falling back to %s",
                       describe_devices(devices))
    return devices


def describe_devices(devices):
    """A short human-readable summary, e.g. ``'2 devices: cpu(0), cpu(1)'``."""
    names = ", ".join(str(d) for d in devices)
    return f"{len(devices)} device{'s' if len(devices) != 1 else ''}: {names}"

"""Which devices to compute on: usable GPUs, or one or several CPU contexts."""
import logging

import mxnet as mx

__all__ = ["list_gpus", "get_devices", "describe_devices", "default_devices",
           "as_devices", "has_gpu", "reset_default_devices"]

logger = logging.getLogger("fr_lib")

# What a call without a device choice uses: probed once per process (the
# probe runs a kernel on each GPU; quick_mode() asks on every pick()).
_DEFAULT = []


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

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

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
        # info, not a warning: a CPU machine is a normal place to read the
        # book (a GPU that MXNet cannot run on is warned about by list_gpus)
        logger.info("fr_lib: no usable GPU found; falling back to %s",
                       describe_devices(devices))
    return devices


def default_devices():
    """Every usable GPU, else ``[cpu(0)]``: probed once, then remembered.

    This is what fr_lib's loops use when the caller names no device (their
    ``ctx=None``). Unlike :func:`get_devices` it logs nothing when there is
    no GPU, so a CPU notebook's output stays as it was; a GPU that MXNet
    cannot run on (e.g. Hopper with the cu11x wheels) is still reported once.
    Call :func:`reset_default_devices` after changing what MXNet can see.
    """
    if not _DEFAULT:
        _DEFAULT.extend(list_gpus() or [mx.cpu(0)])
    return list(_DEFAULT)


def reset_default_devices():
    """Forget the remembered probe of :func:`default_devices` (for tests)."""
    _DEFAULT.clear()


def has_gpu():
    """True when :func:`default_devices` found a GPU MXNet can compute on."""
    return default_devices()[0].device_type == "gpu"


def as_devices(ctx=None):
    """A non-empty list of contexts from ``None``, one context or a list.

    ``None`` means :func:`default_devices`. This is how fr_lib's loops read
    their ``ctx`` argument, so ``ctx=mx.gpu(0)``, ``ctx=[mx.gpu(0),
    mx.gpu(1)]`` and ``ctx=get_devices()`` all work.
    """
    if ctx is None:
        return default_devices()
    if isinstance(ctx, mx.Context):
        return [ctx]
    devices = list(ctx)
    if not devices or not all(isinstance(c, mx.Context) for c in devices):
        raise ValueError(f"ctx must be an mx.Context or a non-empty list of "
                         f"them, got {ctx!r}")
    return devices


def describe_devices(devices):
    """A short human-readable summary, e.g. ``'2 devices: cpu(0), cpu(1)'``."""
    names = ", ".join(str(d) for d in devices)
    return f"{len(devices)} device{'s' if len(devices) != 1 else ''}: {names}"

"""Iteration-based learning-rate schedules with a linear warm-up.

Every schedule here is a pure function of the iteration: ``schedule(t)`` is
the learning rate of the update that follows ``t`` finished updates
(``t = 0`` for the very first one). It keeps no state between calls, so a
resumed run gets exactly the rates of an uninterrupted one, which is not true
of MXNet's own ``FactorScheduler``/``MultiFactorScheduler`` (they lower
``base_lr`` in place as they are called).

The classes subclass :class:`mxnet.lr_scheduler.LRScheduler`, so they can be
handed to an MXNet optimizer as well (``lr_scheduler=...``); MXNet then calls
them with its own update count, which starts at 1, and overwrites
``base_lr`` with the optimizer's ``learning_rate``. :class:`FaceTrainer`
instead sets the rate itself before every update, from the iteration it
saves in its checkpoints.

>>> lr = make_schedule('cosine', base_lr=0.1, max_update=1000, warmup_steps=100)
>>> lr(0), lr(100), lr(1000)
(0.0, 0.1, 0.0)
"""
import math

from mxnet import lr_scheduler

from ..utils.registry import Registry

__all__ = ["WarmupSchedule", "ConstantSchedule", "StepSchedule",
           "CosineSchedule", "PolySchedule", "make_schedule", "get_schedule_list", "SCHEDULES"]


def _check_nonneg_int(name, value):
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


class WarmupSchedule(lr_scheduler.LRScheduler):
    """Base class: a linear warm-up, then :meth:`after_warmup`.

    For ``t < warmup_steps`` the rate rises linearly from
    ``warmup_begin_lr`` (at ``t = 0``) towards ``base_lr`` (reached at
    ``t = warmup_steps``); from there on :meth:`after_warmup` decides.

    Parameters
    ----------
    base_lr : float
        The rate at the end of the warm-up.
    warmup_steps : int, default 0
        Iterations of warm-up (0: none).
    warmup_begin_lr : float, default 0.0
        The rate at ``t = 0``.
    """

    def __init__(self, base_lr=0.1, warmup_steps=0, warmup_begin_lr=0.0):
        warmup_steps = _check_nonneg_int("warmup_steps", warmup_steps)
        if base_lr < 0 or warmup_begin_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got base_lr={base_lr}, "
                             f"warmup_begin_lr={warmup_begin_lr}")
        if warmup_steps and warmup_begin_lr > base_lr:
            raise ValueError(f"warmup_begin_lr={warmup_begin_lr} must not exceed "
                             f"base_lr={base_lr}")
        super().__init__(base_lr=float(base_lr), warmup_steps=warmup_steps,
                         warmup_begin_lr=float(warmup_begin_lr), warmup_mode="linear")

    def __call__(self, num_update):
        t = _check_nonneg_int("iteration", num_update)
        if t < self.warmup_steps:
            return (self.warmup_begin_lr
                    + (self.base_lr - self.warmup_begin_lr) * t / self.warmup_steps)
        return float(self.after_warmup(t))

    def after_warmup(self, t):
        """The rate at iteration ``t >= warmup_steps`` (subclasses define it)."""
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())
                           if not k.startswith("_") and k != "warmup_final_lr")
        return f"{type(self).__name__}({fields})"


class ConstantSchedule(WarmupSchedule):
    """Warm-up, then ``base_lr`` for ever.

    Parameters
    ----------
    base_lr, warmup_steps, warmup_begin_lr
        See :class:`WarmupSchedule`.
    """

    def after_warmup(self, t):
        return self.base_lr


class StepSchedule(WarmupSchedule):
    """Warm-up, then ``base_lr · factor^k`` after ``k`` of the ``steps``.

    Parameters
    ----------
    base_lr : float
    steps : sequence of int
        Iterations at which the rate is multiplied by ``factor``
        (increasing; InsightFace's emore recipe: 100k, 160k, 220k).
    factor : float, default 0.1
    warmup_steps, warmup_begin_lr
        See :class:`WarmupSchedule`.

    Notes
    -----
    The rate at ``t = steps[i]`` is already the lowered one. A step that
    falls inside the warm-up lowers the rate the warm-up ends on.
    """

    def __init__(self, base_lr=0.1, steps=(), factor=0.1, warmup_steps=0,
                 warmup_begin_lr=0.0):
        super().__init__(base_lr, warmup_steps, warmup_begin_lr)
        steps = [_check_nonneg_int("steps", s) for s in steps]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps must be strictly increasing, got {steps}")
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {factor}")
        self.steps, self.factor = steps, float(factor)

    def after_warmup(self, t):
        return self.base_lr * self.factor ** sum(t >= s for s in self.steps)


class _DecaySchedule(WarmupSchedule):
    """Decay from ``base_lr`` at ``warmup_steps`` to ``final_lr`` at ``max_update``."""

    def __init__(self, base_lr=0.1, max_update=1, final_lr=0.0, warmup_steps=0,
                 warmup_begin_lr=0.0):
        super().__init__(base_lr, warmup_steps, warmup_begin_lr)
        max_update = _check_nonneg_int("max_update", max_update)
        if max_update <= self.warmup_steps:
            raise ValueError(f"max_update={max_update} must be larger than "
                             f"warmup_steps={self.warmup_steps}")
        if not 0 <= final_lr <= base_lr:
            raise ValueError(f"final_lr must be in [0, base_lr={base_lr}], got {final_lr}")
        self.max_update, self.final_lr = max_update, float(final_lr)

    def _progress(self, t):
        """Fraction of the decay done at ``t``, in [0, 1]."""
        span = self.max_update - self.warmup_steps
        return min(1.0, (t - self.warmup_steps) / span)


class CosineSchedule(_DecaySchedule):
    r"""Warm-up, then a half cosine from ``base_lr`` down to ``final_lr``.

    .. math:: \eta(t) = \eta_f + (\eta_0 - \eta_f)\,
              \frac{1 + \cos(\pi p)}{2},\quad
              p = \min\left(1, \frac{t - w}{T - w}\right)

    with ``w = warmup_steps`` and ``T = max_update`` (SGDR, arXiv 1608.03983,
    without restarts).

    Parameters
    ----------
    base_lr : float
    max_update : int
        Iteration at which ``final_lr`` is reached (it stays there after).
    final_lr : float, default 0.0
    warmup_steps, warmup_begin_lr
        See :class:`WarmupSchedule`.
    """

    def after_warmup(self, t):
        p = self._progress(t)
        return self.final_lr + (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * p)) / 2


class PolySchedule(_DecaySchedule):
    r"""Warm-up, then a polynomial decay to ``final_lr``.

    .. math:: \eta(t) = \eta_f + (\eta_0 - \eta_f)\,(1 - p)^{\text{power}}

    with ``p`` as in :class:`CosineSchedule`.

    Parameters
    ----------
    base_lr : float
    max_update : int
    power : float, default 2.0
        1 is a linear decay.
    final_lr : float, default 0.0
    warmup_steps, warmup_begin_lr
        See :class:`WarmupSchedule`.
    """

    def __init__(self, base_lr=0.1, max_update=1, power=2.0, final_lr=0.0,
                 warmup_steps=0, warmup_begin_lr=0.0):
        super().__init__(base_lr, max_update, final_lr, warmup_steps, warmup_begin_lr)
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}")
        self.power = float(power)

    def after_warmup(self, t):
        return self.final_lr + (self.base_lr - self.final_lr) * \
            (1 - self._progress(t)) ** self.power


#: The learning-rate schedules by name: a :class:`fr_lib.utils.registry.Registry`
#: like ``LOSSES`` and ``MODELS`` (case-insensitive names; an unknown name raises
#: ``ValueError`` listing the valid ones). :func:`make_schedule` builds one.
SCHEDULES = Registry("lr schedule")
for _name, _cls in (("constant", ConstantSchedule), ("step", StepSchedule),
                    ("cosine", CosineSchedule), ("poly", PolySchedule)):
    SCHEDULES.add(_name, _cls)
del _name, _cls


def get_schedule_list():
    """Names accepted by :func:`make_schedule`, sorted."""
    return SCHEDULES.names()


def make_schedule(mode, base_lr, max_update=None, warmup_steps=0,
                  warmup_begin_lr=0.0, steps=(), factor=0.1, power=2.0, final_lr=0.0):
    """Build a schedule by name.

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    mode : {'constant', 'step', 'cosine', 'poly'}
    base_lr : float
    max_update : int, optional
        Needed by ``'cosine'`` and ``'poly'``.
    warmup_steps, warmup_begin_lr
        See :class:`WarmupSchedule`.
    steps, factor
        For ``'step'`` (see :class:`StepSchedule`).
    power
        For ``'poly'``.
    final_lr
        For ``'cosine'`` and ``'poly'``.

    Returns
    -------
    WarmupSchedule

    Raises
    ------
    ValueError
        For an unknown mode (the message lists the valid ones) or bad values.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a schedule name (str), got {type(mode).__name__}")
    SCHEDULES.lookup(mode)  # ValueError naming every valid schedule
    key = mode.lower()
    common = dict(base_lr=base_lr, warmup_steps=warmup_steps,
                  warmup_begin_lr=warmup_begin_lr)
    if key == "constant":
        return ConstantSchedule(**common)
    if key == "step":
        return StepSchedule(steps=steps, factor=factor, **common)
    if max_update is None:
        raise ValueError(f"the {key!r} schedule needs max_update")
    if key == "cosine":
        return CosineSchedule(max_update=max_update, final_lr=final_lr, **common)
    return PolySchedule(max_update=max_update, power=power, final_lr=final_lr, **common)

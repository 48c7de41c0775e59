"""Learning-rate schedules of fr_lib.train.schedule against hand calculations."""
import math

import mxnet as mx
import pytest
from numpy.testing import assert_allclose

from fr_lib.train import (ConstantSchedule, CosineSchedule, PolySchedule,
                          StepSchedule, make_schedule)


def test_linear_warmup_values():
    s = ConstantSchedule(base_lr=0.1, warmup_steps=4, warmup_begin_lr=0.02)
    # 0.02 + (0.1 - 0.02) * t / 4
    assert_allclose([s(t) for t in range(6)], [0.02, 0.04, 0.06, 0.08, 0.1, 0.1])


def test_step_schedule_by_hand():
    s = StepSchedule(base_lr=1.0, steps=[3, 5], factor=0.5, warmup_steps=2)
    assert_allclose([s(t) for t in range(7)], [0.0, 0.5, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_cosine_schedule_by_hand():
    s = CosineSchedule(base_lr=0.1, max_update=12, final_lr=0.01, warmup_steps=2)
    # t = 2 + 10 p: 0.01 + 0.09 (1 + cos(pi p)) / 2
    assert_allclose(s(2), 0.1)
    assert_allclose(s(7), 0.01 + 0.09 * 0.5)         # p = 1/2
    assert_allclose(s(4.0), 0.01 + 0.09 * (1 + math.cos(math.pi / 5)) / 2)
    assert_allclose([s(12), s(100)], [0.01, 0.01])  # stays at final_lr
    assert_allclose(s(1), 0.05)                      # warm-up from 0


def test_poly_schedule_by_hand():
    s = PolySchedule(base_lr=0.2, max_update=10, power=2)
    assert_allclose([s(0), s(5), s(8), s(10), s(11)], [0.2, 0.05, 0.008, 0.0, 0.0])
    lin = PolySchedule(base_lr=1.0, max_update=5, power=1, final_lr=0.5, warmup_steps=1)
    assert_allclose([lin(1), lin(3), lin(5)], [1.0, 0.75, 0.5])


def test_schedules_are_stateless_and_mxnet_schedulers():
    s = make_schedule("step", 0.1, steps=[2])
    first = [s(t) for t in (5, 0, 3, 1)]
    assert first == [s(t) for t in (5, 0, 3, 1)]  # order of calls does not matter
    assert isinstance(s, mx.lr_scheduler.LRScheduler)
    opt = mx.optimizer.SGD(learning_rate=0.1, lr_scheduler=make_schedule("poly", 0.1, 10))
    assert opt.learning_rate == pytest.approx(0.1)


def test_make_schedule_errors():
    with pytest.raises(ValueError, match="unknown lr schedule 'exponential'. "
                       "Valid names: constant, cosine, poly, step"):
        make_schedule("exponential", 0.1)
    with pytest.raises(TypeError, match="schedule name"):
        make_schedule(None, 0.1)
    with pytest.raises(ValueError, match="max_update"):
        make_schedule("cosine", 0.1)
    with pytest.raises(ValueError, match="larger than"):
        make_schedule("cosine", 0.1, max_update=5, warmup_steps=5)
    with pytest.raises(ValueError, match="increasing"):
        make_schedule("step", 0.1, steps=[5, 3])
    with pytest.raises(ValueError, match="iteration"):
        make_schedule("constant", 0.1)(-1)


def test_schedules_are_a_registry_like_losses_and_models():
    from fr_lib.train.schedule import SCHEDULES, get_schedule_list
    from fr_lib.utils.registry import Registry
    assert isinstance(SCHEDULES, Registry)
    assert get_schedule_list() == ["constant", "cosine", "poly", "step"]
    assert list(SCHEDULES) == get_schedule_list()
    assert "Cosine" in SCHEDULES and "exponential" not in SCHEDULES
    # names are case-insensitive, as for get_loss / get_model
    assert isinstance(make_schedule("COSINE", 0.1, 10), CosineSchedule)

"""fr_lib.utils.checks: the shared argument checks (one rule each)."""
import numpy as np
import mxnet as mx
import pytest

from fr_lib.utils.checks import check_int, check_labels, compute_dtype, label_errors


def test_compute_dtype_widens_half_only():
    assert compute_dtype(np.float16) is np.float32
    assert compute_dtype("float32") is np.float32
    assert compute_dtype(np.float64) is np.float64


@pytest.mark.parametrize("value", [3, 3.0, np.int64(3)])
def test_check_int_accepts_integers(value):
    assert check_int("n", value, 1) == 3


@pytest.mark.parametrize("value", [True, 2.5, 0, -1, "3", None, float("nan")])
def test_check_int_refuses_with_the_name(value):
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1"):
        check_int("n", value, 1)


def test_label_errors_marks_every_kind_of_bad_label():
    values = np.array([0, 4, 5, -1, 1.5, np.nan, np.inf, 2])
    assert label_errors(values, 5).tolist() == [False, False, True, True, True,
                                                True, True, False]


def test_check_labels_returns_int64_host_labels():
    out = check_labels(mx.nd.array([[0], [3]]), 4, batch=2)
    assert out.dtype == np.int64 and out.tolist() == [0, 3]


def test_check_labels_names_the_first_bad_label_and_the_count():
    with pytest.raises(ValueError, match=r"label 7 is out of range for 4 classes"):
        check_labels([1, 7, 9], 4)
    with pytest.raises(ValueError, match=r"expected 3 labels \(one per row\)"):
        check_labels(np.zeros(2), 4, batch=3, per="row")


def test_renamed_attribute_reads_the_new_name_and_warns():
    from fr_lib.utils.deprecation import renamed_attribute

    class Run:
        contexts = renamed_attribute("Run", "contexts", "ctx")
        devices = renamed_attribute("Run", "devices", "ctx", settable=True)

    run = Run()
    run.ctx = ["cpu(0)"]
    with pytest.warns(DeprecationWarning, match=r"^Run\.contexts is now Run\.ctx$"):
        assert run.contexts == ["cpu(0)"]
    with pytest.raises(AttributeError):  # read-only unless settable
        run.contexts = []
    with pytest.warns(DeprecationWarning):
        run.devices = ["cpu(1)"]
    assert run.ctx == ["cpu(1)"]

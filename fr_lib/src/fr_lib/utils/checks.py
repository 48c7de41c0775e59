"""The argument checks that losses, heads, samplers and the trainer share.

One rule each, so that every part of fr_lib refuses the same bad input with
the same words:

- :func:`compute_dtype`: float16 input is computed in float32 (fp16 has a
  1e-3 resolution near cos θ = 1, overflows ``exp(s·cos θ)`` for s = 64 and
  squared distances at 256); every other float type is kept.
- :func:`check_int`: an integer option at or above a lower bound.
- :func:`label_errors` / :func:`check_labels`: class ids must be finite
  integers in ``[0, num_classes)``.
"""
import numbers

import numpy as np

__all__ = ["compute_dtype", "check_int", "label_errors", "check_labels"]


def compute_dtype(dtype):
    """The NumPy type arithmetic on ``dtype`` input runs in: float32 for
    float16, ``dtype`` itself otherwise."""
    return np.float32 if np.dtype(dtype) == np.float16 else np.dtype(dtype).type


def check_int(name, value, low):
    """``value`` as an ``int``, or a ValueError naming ``name`` unless it is
    an integer (not a bool; ``3.0`` is accepted) at least ``low``."""
    try:
        ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
              and int(value) == value and value >= low)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _host_values(label):
    """Labels (NDArray, NumPy array or sequence) as a flat float64 array."""
    if hasattr(label, "asnumpy"):
        label = label.asnumpy()
    return np.asarray(label, dtype=np.float64).reshape(-1)


def label_errors(values, num_classes):
    """Boolean mask of the entries of ``values`` (flat, on the host) that are
    not class ids in ``[0, num_classes)``: not finite, not integer, negative
    or too large."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (~np.isfinite(values) | (values != np.floor(values))
                | (values < 0) | (values >= num_classes))


def check_labels(label, num_classes, batch=None, per="embedding"):
    """The labels as a flat int64 array on the host, or a ValueError.

    ``batch``: the number of labels expected (one per ``per``: "embedding",
    "row of the cosine matrix", ...). The error names the first bad label
    and the range it should be in."""
    values = _host_values(label)
    if batch is not None and values.size != batch:
        shape = getattr(label, "shape", (values.size,))
        raise ValueError(f"expected {batch} labels (one per {per}), got shape "
                         f"{tuple(shape)}")
    bad = label_errors(values, num_classes)
    if bad.any():
        raise ValueError(f"label {values[bad][0]:g} is out of range for "
                         f"{num_classes} classes: labels must be integers in "
                         f"[0, {num_classes})")
    return values.astype(np.int64)

"""Quick mode: one environment variable that shrinks data and epochs everywhere."""
import os

__all__ = ["QUICK_ENV", "quick_mode", "pick"]

QUICK_ENV = "FR_QUICK"


def quick_mode(default=None):
    """Whether to run the quick setting (small data, few epochs).

    Book: introduced in ``chapter_introduction/face-recognition-task`` (人脸识别任务).

    ``FR_QUICK`` decides when it is set: 1/true/yes/on (case-insensitive)
    means quick, 0/false/no/off means full.

    Parameters
    ----------
    default : bool or None
        What an unset (or empty) ``FR_QUICK`` means. ``None``, the book's
        rule: quick unless MXNet can compute on a GPU here
        (:func:`fr_lib.utils.has_gpu`), so a laptop or a CPU runtime gets
        the minutes-long setting and a GPU the full one.

    Raises
    ------
    ValueError
        For any other value of ``FR_QUICK``.
    """
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value == "":
        if default is None:
            from .device import has_gpu
            return not has_gpu()
        return bool(default)
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{QUICK_ENV}={value!r} is not understood; use 1 or 0")


def pick(full, quick):
    """``quick`` in quick mode, otherwise ``full`` -- e.g. ``pick(20, 2)`` epochs.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).
    """
    return quick if quick_mode() else full

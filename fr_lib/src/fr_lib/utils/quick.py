"""Quick mode: one environment variable that shrinks data and epochs everywhere."""
import os

__all__ = ["QUICK_ENV", "quick_mode", "pick"]

QUICK_ENV = "FR_QUICK"


def quick_mode():
    """True when ``FR_QUICK`` is set to 1/true/yes/on (case-insensitive)."""
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{QUICK_ENV}={value!r} is not understood; use 1 or 0")


def pick(full, quick):
    """``quick`` in quick mode, otherwise ``full`` -- e.g. ``pick(20, 2)`` epochs."""
    return quick if quick_mode() else full

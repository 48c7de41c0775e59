"""Old names kept working while they warn: one rule for renamed attributes.

fr_lib calls the devices a computation runs on ``ctx`` everywhere (MXNet's
word); attributes that were called ``contexts`` or ``devices`` before that
answer to the old name with a :class:`DeprecationWarning`.
"""
import warnings

__all__ = ["renamed_attribute"]


def renamed_attribute(owner, old, new, settable=False):
    """A property named ``old`` that reads (and, with ``settable``, writes)
    attribute ``new``, warning ``"<owner>.<old> is now <owner>.<new>"``."""
    message = f"{owner}.{old} is now {owner}.{new}"

    def get(self):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    def set_(self, value):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        setattr(self, new, value)
    return property(get, set_ if settable else None,
                    doc=f"Deprecated name of :attr:`{new}`.")

"""Put a computed number into a page's text (MyST-NB's ``glue``), anywhere."""
__all__ = ["glue"]


def glue(name, value, display=True):
    """``myst_nb.glue(name, value, display)`` when MyST-NB is installed.

    The book's build (Jupyter Book, MyST-NB) replaces a ``{glue:text}``
    role naming ``name`` in a markdown cell with ``value``, so a page's prose
    can quote a number its code computed. Where MyST-NB is absent (Colab, a plain Jupyter) the
    text shows the role as written, and this function only returns
    ``value`` so the cell still shows it. NumPy scalars are glued as Python
    numbers.
    """
    import numpy as np
    if isinstance(value, np.generic):
        # a plain number: NumPy 2 prints np.float64(...), which the {glue:text}
        # role's format spec (e.g. :.1f) cannot read
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    myst_glue(name, value, display=display)
    return None

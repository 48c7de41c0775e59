"""Interactive controls for the notebooks (needs ipywidgets)."""

__all__ = ["require_ipywidgets", "slider"]


def require_ipywidgets():
    """Import ipywidgets or explain how to install it.

    Book: introduced in ``chapter_loss/margin-explorer`` (交互式间隔探索器).
    """
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError("this interactive cell needs ipywidgets: "
                          "pip install 'ipywidgets>=8,<9'") from err
    return ipywidgets


def slider(description, value, lo, hi, step):
    """A float slider with a Chinese-friendly wide description.

    Book: introduced in ``chapter_loss/margin-explorer`` (交互式间隔探索器).
    """
    widgets = require_ipywidgets()
    return widgets.FloatSlider(value=value, min=lo, max=hi, step=step,
                               description=description, continuous_update=False,
                               style={"description_width": "initial"})

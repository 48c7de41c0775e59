"""The data root: ``~/.mxnet/datasets/face`` unless ``FR_DATA_ROOT`` says otherwise."""
import os

__all__ = ["DATA_ROOT_ENV", "get_data_root"]

DATA_ROOT_ENV = "FR_DATA_ROOT"


def get_data_root(root=None, create=False):
    """Directory holding face datasets (``emore/``, ``faces_synthetic/`` ...).

    Parameters
    ----------
    root : str or None
        Explicit directory; otherwise ``$FR_DATA_ROOT``, otherwise
        ``~/.mxnet/datasets/face`` (gluon-face's convention).
    create : bool
        Create the directory if it does not exist.
    """
    root = root or os.environ.get(DATA_ROOT_ENV) or os.path.join(
        "~", ".mxnet", "datasets", "face")
    root = os.path.abspath(os.path.expanduser(root))
    if create:
        os.makedirs(root, exist_ok=True)
    return root

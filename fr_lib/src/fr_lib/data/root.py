"""The data root: ``~/.mxnet/datasets/face`` unless ``FR_DATA_ROOT`` says otherwise,
and the folder names of the data sets in it (``emore/``)."""
import os
import warnings

__all__ = ["DATA_ROOT_ENV", "EMORE_DIR", "LEGACY_DIR_NAMES", "get_data_root",
           "get_dataset_dir", "resolve_data_dir"]

DATA_ROOT_ENV = "FR_DATA_ROOT"

#: The folder of MS1M-ArcFace (MS1MV2) under the data root.
EMORE_DIR = "emore"

#: Older folder names still found on disk: ``faces_emore`` is the name of
#: InsightFace's zip and of the folder earlier versions of this book used.
LEGACY_DIR_NAMES = {EMORE_DIR: ("faces_emore",)}


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


def resolve_data_dir(path, warn=True):
    """``path``, or the folder of the same data set under its old name.

    When ``path`` does not exist and its last component has an old name in
    :data:`LEGACY_DIR_NAMES` (``emore`` -> ``faces_emore``) that exists beside
    it, that folder is returned and a ``UserWarning`` says to rename it.
    Otherwise ``path`` is returned unchanged (absolute, ``~`` expanded).

    Parameters
    ----------
    path : str
    warn : bool
        Warn when the old name is used.

    Returns
    -------
    str
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path):
        return path
    parent, name = os.path.split(path)
    for old in LEGACY_DIR_NAMES.get(name, ()):
        candidate = os.path.join(parent, old)
        if os.path.isdir(candidate):
            if warn:
                warnings.warn(
                    f"{path} does not exist; using {candidate}, the data set's "
                    f"old folder name. Rename it: mv {candidate} {path}",
                    UserWarning, stacklevel=2)
            return candidate
    return path


def get_dataset_dir(name=EMORE_DIR, root=None, warn=True):
    """The folder of data set ``name`` under the data root.

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

    ``get_dataset_dir('emore')`` is ``<data root>/emore``; when only
    ``<data root>/faces_emore`` exists, that one (with a warning, see
    :func:`resolve_data_dir`).

    Parameters
    ----------
    name : str
    root : str or None
        Passed to :func:`get_data_root`.
    warn : bool

    Returns
    -------
    str
    """
    return resolve_data_dir(os.path.join(get_data_root(root), name), warn=warn)

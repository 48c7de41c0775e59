"""Contact sheets and count histograms: looking at face data instead of reading it.

The data chapter shows many small faces at once (rows of identities, pairs,
augmented copies) and the distribution of images per identity. These helpers
keep those cells short:

- :func:`image_grid` tiles equally sized images into one uint8 array (for
  saving as PNG or drawing with ``imshow``);
- :func:`show_grid` draws such a grid with matplotlib, with optional labels
  at the start of each row and under each tile;
- :func:`plot_count_histogram` draws a histogram of positive counts (images
  per identity) in power-of-two bins on a logarithmic axis, where long-tailed
  data sets stay readable.
"""
import numpy as np

__all__ = ["image_grid", "show_grid", "count_bins", "plot_count_histogram"]


def _as_uint8_images(images):
    """A list of (H, W, 3) uint8 arrays from NDArrays, arrays or a batch."""
    if hasattr(images, "asnumpy"):
        images = images.asnumpy()
    if isinstance(images, np.ndarray):
        # one image: (H, W) or (H, W, 1/3); a batch: (N, H, W) grey or 4-d
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3)):
            images = [images]
    out = []
    for i, img in enumerate(images):
        if hasattr(img, "asnumpy"):
            img = img.asnumpy()
        img = np.asarray(img)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"image {i}: expected (H, W), (H, W, 1) or (H, W, 3), "
                             f"got shape {img.shape}")
        if img.dtype != np.uint8:
            if img.size and img.min() >= 0 and img.max() <= 1:
                img = img * 255.0  # floats in [0, 1], as scikit-image gives them
            img = np.clip(np.round(img), 0, 255).astype(np.uint8)
        out.append(img)
    if not out:
        raise ValueError("no images to draw")
    shape = out[0].shape
    for i, img in enumerate(out):
        if img.shape != shape:
            raise ValueError(f"image {i} is {img.shape[0]}x{img.shape[1]}, image 0 "
                             f"is {shape[0]}x{shape[1]}: resize them to one size")
    return out


def image_grid(images, ncols=None, gap=2, fill=255, row_gap=None):
    """Tile equally sized images into one RGB array, row by row.

    Parameters
    ----------
    images : sequence or array
        Images of one size: uint8 or float ``(H, W, 3)``, ``(H, W)`` grey
        (repeated into three channels), a batch ``(N, H, W, 3)``, or NDArrays.
        Floats in [0, 1] are scaled by 255; other floats are rounded and
        clipped to [0, 255].
    ncols : int or None
        Tiles per row; default: all in one row.
    gap : int
        Pixels between tiles and around the grid.
    fill : int
        Grey level of the gaps and of empty cells in the last row.
    row_gap : int or None
        Pixels below each row (room for labels); default ``gap``.

    Returns
    -------
    numpy.ndarray
        ``(gap + rows * (H + row_gap), gap + ncols * (W + gap), 3)`` uint8;
        tile ``i`` has its top-left corner at ``(gap + r * (H + row_gap), gap +
        c * (W + gap))`` with ``r, c = divmod(i, ncols)``.
    """
    tiles = _as_uint8_images(images)
    n = len(tiles)
    ncols = n if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    row_gap = gap if row_gap is None else int(row_gap)
    if gap < 0 or row_gap < 0:
        raise ValueError(f"gap and row_gap must be >= 0, got {gap}, {row_gap}")
    rows = -(-n // ncols)
    h, w, _ = tiles[0].shape
    grid = np.full((gap + rows * (h + row_gap), gap + ncols * (w + gap), 3),
                   fill, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = gap + r * (h + row_gap), gap + c * (w + gap)
        grid[y:y + h, x:x + w] = tile
    return grid


def show_grid(images, ncols=None, row_labels=None, tile_labels=None, ax=None,
              title=None, gap=2, tile_inches=0.9, fontsize=8):
    """Draw a contact sheet with matplotlib.

    Book: introduced in ``chapter_data/recordio`` (RecordIO 格式：逐字节打开训练集).

    Parameters
    ----------
    images : sequence or array
        As for :func:`image_grid`.
    ncols : int or None
        Tiles per row; default: all in one row.
    row_labels : sequence of str or None
        One label per row, written left of the row.
    tile_labels : sequence of str or None
        One label per image, written under its tile.
    ax : matplotlib.axes.Axes or None
        Where to draw; default: a new figure sized ``tile_inches`` per tile.
    title : str or None
        Axes title.
    gap : int
        Pixels between tiles.
    tile_inches : float
        Size of one tile in a new figure.
    fontsize : float
        Size of the labels.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib import pyplot as plt
    tiles = _as_uint8_images(images)
    n = len(tiles)
    ncols = n if ncols is None else int(ncols)
    h, w, _ = tiles[0].shape
    # room for one line of text under every row when tiles are labelled
    row_gap = gap + int(round(0.2 * h)) if tile_labels is not None else gap
    grid = image_grid(tiles, ncols, gap=gap, row_gap=row_gap)
    rows = -(-n // ncols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    if tile_labels is not None and len(tile_labels) != n:
        raise ValueError(f"{len(tile_labels)} tile labels for {n} images")
    if ax is None:
        _, ax = plt.subplots(figsize=(ncols * tile_inches + 0.6,
                                      rows * tile_inches * (h + row_gap) / h
                                      + 0.3))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if row_labels is not None:
        ax.set_yticks([gap + r * (h + row_gap) + h / 2 for r in range(rows)])
        ax.set_yticklabels([str(t) for t in row_labels], fontsize=fontsize)
        ax.tick_params(axis="y", length=0)
    if tile_labels is not None:
        for i, text in enumerate(tile_labels):
            r, c = divmod(i, ncols)
            ax.text(gap + c * (w + gap) + w / 2, gap + r * (h + row_gap) + h + 1,
                    str(text), ha="center", va="top", fontsize=fontsize)
    if title is not None:
        ax.set_title(title)
    return ax


def count_bins(counts):
    """Power-of-two bins of positive integer counts.

    Parameters
    ----------
    counts : array-like of int
        Positive counts (e.g. images per identity); zeros are ignored.

    Returns
    -------
    edges : numpy.ndarray of int64
        ``1, 2, 4, ...``; bin ``i`` holds the counts in ``[edges[i],
        edges[i + 1])``, and the last edge exceeds the largest count.
    hist : numpy.ndarray of int64
        How many counts fall in each bin (``len(edges) - 1`` values).
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if (counts < 0).any():
        raise ValueError("counts must be >= 0")
    counts = counts[counts > 0]
    edges = [1]
    top = int(counts.max()) if counts.size else 1
    while edges[-1] <= top:
        edges.append(edges[-1] * 2)
    edges = np.asarray(edges, dtype=np.int64)
    hist = np.asarray([((counts >= lo) & (counts < hi)).sum()
                       for lo, hi in zip(edges[:-1], edges[1:])], dtype=np.int64)
    return edges, hist


def plot_count_histogram(counts, ax=None, label=None, xlabel=None, ylabel=None,
                         log_y=False, **bar_kwargs):
    """Histogram of positive counts in power-of-two bins, on a log2 x axis.

    Book: introduced in ``chapter_data/sampling`` (P×K 采样与数据分片).

    Parameters
    ----------
    counts : array-like of int
        E.g. images per identity (``numpy.bincount(dataset.labels)``).
    ax : matplotlib.axes.Axes or None
        Where to draw; default: a new figure.
    label : str or None
        Legend label of the bars.
    xlabel, ylabel : str or None
        Axis labels.
    log_y : bool
        Logarithmic y axis (for bins that differ by orders of magnitude).
    **bar_kwargs
        Passed to ``ax.bar`` (``alpha``, ``color`` ...).

    Returns
    -------
    edges, hist : numpy.ndarray
        As :func:`count_bins` returns them.
    """
    from matplotlib import pyplot as plt
    edges, hist = count_bins(counts)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    lo, hi = edges[:-1], edges[1:]
    ax.bar(lo, hist, width=hi - lo, align="edge", edgecolor="white",
           label=label, **bar_kwargs)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(edges))
    ax.set_xticklabels([str(int(e)) for e in edges])
    if log_y:
        ax.set_yscale("log")
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    return edges, hist

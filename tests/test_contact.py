"""fr_lib.utils.contact: contact sheets and count histograms."""
import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx

from fr_lib.utils.contact import (count_bins, image_grid, plot_count_histogram,
                                  show_grid)


def tiles(n, h=4, w=5, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, h, w, 3)).astype(np.uint8)


def test_image_grid_places_every_tile():
    imgs = tiles(5)
    grid = image_grid(imgs, ncols=2, gap=1, fill=7)
    assert grid.shape == (3 * 5 + 1, 2 * 6 + 1, 3) and grid.dtype == np.uint8
    for i in range(5):
        r, c = divmod(i, 2)
        y, x = 1 + r * 5, 1 + c * 6
        np.testing.assert_array_equal(grid[y:y + 4, x:x + 5], imgs[i])
    # the empty sixth cell and the gaps keep the fill value
    assert (grid[11:15, 7:12] == 7).all()
    assert (grid[0] == 7).all() and (grid[:, 0] == 7).all()


def test_image_grid_inputs():
    grey = np.random.RandomState(1).uniform(0, 1, (3, 4, 4))  # skimage style
    grid = image_grid(grey, gap=0)
    assert grid.shape == (4, 12, 3)
    np.testing.assert_array_equal(grid[:, :4, 0], np.round(grey[0] * 255))
    np.testing.assert_array_equal(grid[..., 0], grid[..., 2])
    nd_batch = mx.nd.array(tiles(2), dtype="uint8")
    np.testing.assert_array_equal(image_grid(nd_batch, gap=0),
                                  np.concatenate(list(tiles(2)), axis=1))
    one = tiles(1)[0]
    np.testing.assert_array_equal(image_grid(one, gap=0), one)


def test_image_grid_errors():
    with pytest.raises(ValueError, match="one size"):
        image_grid([tiles(1)[0], tiles(1, h=3)[0]])
    with pytest.raises(ValueError, match="ncols"):
        image_grid(tiles(2), ncols=0)
    with pytest.raises(ValueError, match="no images"):
        image_grid([])


def test_count_bins_by_hand():
    edges, hist = count_bins([1, 2, 3, 4, 7, 8, 0, 100])
    np.testing.assert_array_equal(edges, [1, 2, 4, 8, 16, 32, 64, 128])
    # [1,2): 1; [2,4): 2, 3; [4,8): 4, 7; [8,16): 8; [64,128): 100; 0 ignored
    np.testing.assert_array_equal(hist, [1, 2, 2, 1, 0, 0, 1])
    with pytest.raises(ValueError):
        count_bins([-1, 2])


def test_plots_draw():
    plt = pytest.importorskip("matplotlib.pyplot")
    ax = show_grid(tiles(6), ncols=3, row_labels=["a", "b"],
                   tile_labels=list("uvwxyz"), title="t")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert len(ax.texts) == 6
    with pytest.raises(ValueError, match="row labels"):
        show_grid(tiles(6), ncols=3, row_labels=["a"])
    counts = np.array([1, 5, 5, 6, 40])
    edges, hist = plot_count_histogram(counts, xlabel="x", ylabel="y")
    assert hist.sum() == counts.size
    bars = plt.gca().patches
    assert [int(b.get_height()) for b in bars] == hist.tolist()
    plt.close("all")


def test_image_grid_row_gap():
    imgs = tiles(3)
    grid = image_grid(imgs, ncols=2, gap=1, row_gap=3, fill=0)
    assert grid.shape == (1 + 2 * (4 + 3), 1 + 2 * (5 + 1), 3)
    np.testing.assert_array_equal(grid[8:12, 1:6], imgs[2])
    assert (grid[5:8] == 0).all()

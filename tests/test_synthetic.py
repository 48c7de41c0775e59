"""fr_lib.data.synthetic: procedurally drawn identities in the InsightFace layout."""
import os

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
from fr_lib.data.binfile import read_bin
from fr_lib.data.recordio import FaceRecordDataset, read_property
from fr_lib.data.synthetic import SyntheticFaces, _val_pairs, write_dataset

cv2 = pytest.importorskip("cv2")

N, K, PAIRS = 4, 3, 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "faces")
    info = write_dataset(out, N, K, PAIRS, seed=3, difficulty=0.4, workers=1)
    return out, info


def _files(d):
    return {n: open(os.path.join(d, n), "rb").read()
            for n in ("train.rec", "train.idx", "property", "synth_val.bin")}


def test_render_shape_and_determinism():
    g = SyntheticFaces(5, seed=1, difficulty=0.5)
    a = g.render(2, 7)
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    # a fresh generator with the same seed draws the same pixels
    np.testing.assert_array_equal(SyntheticFaces(5, seed=1, difficulty=0.5)
                                  .render(2, 7), a)
    assert not np.array_equal(g.render(2, 8), a)          # another image
    assert not np.array_equal(SyntheticFaces(5, seed=2, difficulty=0.5)
                              .render(2, 7), a)           # another seed


def test_identity_parameters_are_fixed():
    g = SyntheticFaces(10, seed=4, difficulty=0.3)
    p = g.identity(3)
    g.render(3, 0), g.render(3, 1)
    assert g.identity(3) == p
    # the parameters depend on (seed, difficulty, index), not on the population size
    assert SyntheticFaces(50, seed=4, difficulty=0.3).identity(3) == p
    assert SyntheticFaces(10, seed=5, difficulty=0.3).identity(3) != p
    assert set(p) >= {"face_ax", "face_ay", "skin", "eye_dx", "iris", "brow_th",
                      "nose_w", "mouth_w", "hair_style", "hair", "glasses", "beard"}


def test_difficulty_pulls_identities_together():
    # continuous parameters are mean + spread * u * half_range with the same u,
    # spread = 1 - 0.6 * difficulty: the deviation from the mean scales exactly
    easy = SyntheticFaces(1, seed=0, difficulty=0.0).identity(0)
    hard = SyntheticFaces(1, seed=0, difficulty=1.0).identity(0)
    for key, mean in (("face_ax", 33.0), ("eye_dx", 17.6), ("mouth_w", 14.5)):
        np.testing.assert_allclose(hard[key] - mean, 0.4 * (easy[key] - mean),
                                   atol=1e-9)


def _face_crops(difficulty, n_id=8, n_img=4):
    g = SyntheticFaces(n_id, seed=0, difficulty=difficulty)
    x = np.stack([g.render(i, j)[24:100, 28:84] for i in range(n_id)
                  for j in range(n_img)]).reshape(n_id * n_img, -1)
    y = np.repeat(np.arange(n_id), n_img)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    same = (y[:, None] == y[None]) & ~np.eye(len(y), dtype=bool)
    return d[same].mean(), d[y[:, None] != y[None]].mean()


def test_same_identity_closer_in_pixel_space_at_low_difficulty():
    intra, inter = _face_crops(0.1)
    assert intra < 0.85 * inter, (intra, inter)
    intra_hard, inter_hard = _face_crops(0.9)
    assert intra_hard / inter_hard > intra / inter  # harder: closer ratio


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"difficulty must be in \[0, 1\], got 1.5"):
        SyntheticFaces(3, difficulty=1.5)
    with pytest.raises(ValueError, match="num_identities must be >= 1"):
        SyntheticFaces(0)
    with pytest.raises(ValueError, match="num_val_pairs must be even"):
        write_dataset(str(tmp_path / "x"), 2, 2, 3)
    assert not os.path.exists(tmp_path / "x")


def test_write_dataset_layout(dataset):
    out, info = dataset
    ds = FaceRecordDataset(out, check="full")
    assert ds.layout == "insightface"
    assert len(ds) == info["num_images"] == N * K
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(N), K))
    assert read_property(os.path.join(out, "property")) == (N, 112, 112)
    # the records hold the rendered images (JPEG quality 95: small error)
    g = SyntheticFaces(N, seed=3, difficulty=0.4)
    img, label = ds[K + 1]
    assert label == 1
    err = np.abs(img.asnumpy().astype(int) - g.render(1, 1).astype(int)).mean()
    other = np.abs(img.asnumpy().astype(int) - g.render(1, 2).astype(int)).mean()
    assert err < 5.0 and err < other / 4, (err, other)  # JPEG error only


def test_val_pairs_come_from_held_out_identities(dataset):
    out, info = dataset
    vset = read_bin(info["bin"], keep_raw=True)
    assert len(vset) == PAIRS == info["num_val_pairs"]
    np.testing.assert_array_equal(vset.issame, np.arange(PAIRS) % 2 == 0)
    nval = max(2, N // 4)
    assert info["val_identities"] == range(N, N + nval)
    sides, issame = _val_pairs(N, nval, PAIRS, 3)
    assert all(i >= N for i, _ in sides)                  # never a training identity
    assert len(set(sides)) == len(sides)                  # no image used twice
    for k, same in enumerate(issame):
        assert (sides[2 * k][0] == sides[2 * k + 1][0]) == same
    g = SyntheticFaces(N, seed=3, difficulty=0.4)
    for k in (0, 5):
        i, j = sides[k]
        err = np.abs(vset.raw[k].astype(int) - g.render(i, j).astype(int)).mean()
        other = np.abs(vset.raw[k].astype(int)
                       - g.render(i, j + 100).astype(int)).mean()
        assert err < 5.0 and err < other / 4, (err, other)  # JPEG error only


def test_same_seed_same_bytes_any_workers(dataset, tmp_path):
    out, _ = dataset
    again = str(tmp_path / "again")
    write_dataset(again, N, K, PAIRS, seed=3, difficulty=0.4, workers=2)
    assert _files(again) == _files(out)
    other = str(tmp_path / "other")
    write_dataset(other, N, K, PAIRS, seed=4, difficulty=0.4, workers=1)
    a, b = _files(other), _files(out)
    assert a["train.rec"] != b["train.rec"]
    assert a["synth_val.bin"] != b["synth_val.bin"]
    assert a["property"] == b["property"]

"""Alignment (similarity transform) and similarity metrics, checked by hand."""
import mxnet as mx
import numpy as np
import pytest

from fr_lib.data import (ARCFACE_TEMPLATE, align_face, apply_transform,
                         estimate_similarity, get_data_root)
from fr_lib.metrics import cosine_similarity, l2_normalize, squared_l2_distance


def similarity_matrix(scale, angle, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_recovers_a_known_transform():
    rng = np.random.RandomState(0)
    truth = similarity_matrix(1.7, 0.3, 12.0, -5.0)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = src @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(estimate_similarity(src, dst), truth, atol=1e-9)


def test_two_points_by_hand():
    # Eyes at (10, 0) and (20, 0) -> (0, 0) and (0, 20): scale 2, rotate +90 deg.
    m = estimate_similarity([[10, 0], [20, 0]], [[0, 0], [0, 20]])
    np.testing.assert_allclose(m, [[0, -2, 0], [2, 0, -20]], atol=1e-12)


def test_least_squares_with_noise_beats_perturbations():
    rng = np.random.RandomState(1)
    src = ARCFACE_TEMPLATE + rng.normal(0, 2, size=(5, 2))
    m = estimate_similarity(src, ARCFACE_TEMPLATE)
    err = ((apply_transform(m, src) - ARCFACE_TEMPLATE) ** 2).sum()
    for _ in range(50):  # no nearby similarity transform fits better
        p = m + rng.normal(0, 1e-3, size=(2, 3))
        p[1, 1], p[1, 0] = p[0, 0], -p[0, 1]
        assert ((apply_transform(p, src) - ARCFACE_TEMPLATE) ** 2).sum() >= err - 1e-9


def test_no_reflection():
    m = estimate_similarity([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, -1]])
    assert np.linalg.det(m[:, :2]) > 0


def test_bad_points():
    with pytest.raises(ValueError, match="K >= 2"):
        estimate_similarity([[1, 2]], [[3, 4]])
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity([[1, 2], [1, 2]], [[3, 4], [5, 6]])


def test_align_face_puts_landmarks_on_template():
    # Draw a white dot at each landmark of a face scaled/rotated into 300x300.
    truth = similarity_matrix(2.2, -0.2, 40, 60)
    landmarks = apply_transform(truth, ARCFACE_TEMPLATE)
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        image[y - 3:y + 4, x - 3:x + 4] = 255
    aligned, m = align_face(image, landmarks)
    assert aligned.shape == (112, 112, 3)
    np.testing.assert_allclose(apply_transform(m, landmarks), ARCFACE_TEMPLATE, atol=1e-6)
    for x, y in np.round(ARCFACE_TEMPLATE).astype(int):
        assert aligned[y, x].min() > 100  # the dot landed on the template point


def test_cosine_and_distance_by_hand():
    a = mx.nd.array([[1, 0], [1, 1]])
    b = mx.nd.array([[0, 2], [3, 0], [-1, -1]])
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(cosine_similarity(a, b).asnumpy(),
                               [[0, 1, -r], [r, r, -1]], atol=1e-6)
    np.testing.assert_allclose(squared_l2_distance(a, b).asnumpy(),
                               [[2, 0, 2 + 2 * r], [2 - 2 * r, 2 - 2 * r, 4]], atol=1e-5)


def test_normalize_against_numpy():
    x = np.random.RandomState(2).normal(size=(7, 5))
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(l2_normalize(mx.nd.array(x)).asnumpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        cosine_similarity(mx.nd.ones((2, 3)), mx.nd.ones((2, 4)))


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("FR_DATA_ROOT", raising=False)
    assert get_data_root().endswith("/.mxnet/datasets/face")
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path / "faces"))
    assert get_data_root(create=True) == str(tmp_path / "faces")
    assert (tmp_path / "faces").is_dir()
    assert get_data_root(str(tmp_path)) == str(tmp_path)

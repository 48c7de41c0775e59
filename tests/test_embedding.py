"""fr_lib.metrics.embed: a network over images and their mirror images.

The network is one Dense layer with known weights, so the embeddings of an
image and of its horizontal flip are computed by hand in NumPy (float64).
"""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from numpy.testing import assert_allclose

from fr_lib.metrics import embed, pair_distances
from fr_lib.deploy import MXNetEmbedder

RNG = np.random.RandomState(3)
W = RNG.normal(size=(4, 2 * 3 * 5))     # D=4 from (C=2, H=3, W=5) images
B = RNG.normal(size=4)


def dense_net(dropout=False):
    net = gluon.nn.HybridSequential()
    if dropout:                          # active only in training mode
        net.add(gluon.nn.Dropout(0.9))
    net.add(gluon.nn.Dense(4, in_units=W.shape[1]))
    net.initialize()
    net[-1].weight.set_data(mx.nd.array(W))
    net[-1].bias.set_data(mx.nd.array(B))
    return net


def by_hand(images):
    x = images.astype(np.float64)
    emb = x.reshape(len(x), -1) @ W.T + B
    mirrored = x[:, :, :, ::-1]          # NCHW: the width axis reversed
    return emb, mirrored.reshape(len(x), -1) @ W.T + B


def test_embed_and_flip_match_a_hand_computation():
    images = RNG.uniform(-1, 1, (7, 2, 3, 5)).astype(np.float32)
    ref, ref_flipped = by_hand(images)
    assert np.abs(ref - ref_flipped).max() > 0.1   # the flip does change the output
    for x in (images, mx.nd.array(images)):
        emb, flipped = embed(dense_net(), x, batch_size=3)   # batches 3, 3, 1
        assert emb.shape == flipped.shape == (7, 4)
        assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
        assert_allclose(flipped, ref_flipped, rtol=1e-5, atol=1e-5)
    emb, flipped = embed(dense_net(), images, flip=False)
    assert flipped is None
    assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)


def test_embed_gives_what_pair_distances_needs():
    # the protocol: normalise(emb + flipped), squared L2 between pair members
    images = RNG.uniform(-1, 1, (6, 2, 3, 5)).astype(np.float32)
    emb, flipped = embed(dense_net(), images)
    ref, ref_flipped = by_hand(images)
    s = ref + ref_flipped
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    expected = ((s[0::2] - s[1::2]) ** 2).sum(axis=1)
    got = pair_distances(emb[0::2], emb[1::2], flipped[0::2], flipped[1::2])
    assert_allclose(got, expected, atol=1e-5)


def test_embed_runs_in_inference_mode_inside_record():
    images = RNG.uniform(-1, 1, (4, 2, 3, 5)).astype(np.float32)
    net = dense_net(dropout=True)
    with autograd.record():              # training scope: Dropout would be on
        emb, flipped = embed(net, images, batch_size=2)
    ref, ref_flipped = by_hand(images)
    assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    assert_allclose(flipped, ref_flipped, rtol=1e-5, atol=1e-5)


def test_embed_takes_sliceable_views_callables_and_tuple_outputs():
    images = RNG.uniform(-1, 1, (5, 2, 3, 5)).astype(np.float32)
    ref, ref_flipped = by_hand(images)

    class Halves:                        # converts one slice at a time
        def __len__(self):
            return len(images)

        def __getitem__(self, index):
            return images[index] * 0.5

    net = dense_net()
    emb, flipped = embed(lambda x: (net(x * 2).asnumpy(), None), Halves(),
                         batch_size=2)
    assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    assert_allclose(flipped, ref_flipped, rtol=1e-5, atol=1e-5)
    emb, flipped = embed(net, images[:0])
    assert emb.shape == flipped.shape == (0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        embed(net, images, batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        embed(net, images[:, 0])


def test_mxnet_embedder_is_the_normalised_flip_sum_by_hand():
    # uint8 (N, H, W, C) faces -> (x - 127.5) / 128 in NCHW -> Dense; flip-sum
    faces = RNG.randint(0, 256, (3, 112, 112, 3)).astype(np.uint8)
    w = RNG.normal(size=(4, 3 * 112 * 112))
    net = gluon.nn.Dense(4, in_units=w.shape[1], use_bias=False)
    net.initialize()
    net.weight.set_data(mx.nd.array(w))
    x = (faces.astype(np.float64).transpose(0, 3, 1, 2) - 127.5) / 128
    s = x.reshape(3, -1) @ w.T + x[..., ::-1].reshape(3, -1) @ w.T
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    assert_allclose(MXNetEmbedder(net, batch_size=2)(faces), s, atol=1e-5)

"""Samplers (fr_lib.data.sampler): batch structure, membership, determinism,
sharding and errors, checked against the labels themselves."""
import collections

import numpy as np
import pytest
from mxnet import gluon

import fr_lib  # noqa: F401  (compatibility shims before mxnet is used)
from fr_lib.data import ClassBalancedSampler, PKSampler, ShardSampler

# 12 identities with 1 to 12 samples each, shuffled over 78 positions
SIZES = np.arange(1, 13)
LABELS = np.random.RandomState(0).permutation(np.repeat(np.arange(100, 112), SIZES))


def _check_pk(batch, labels, p, k):
    assert len(batch) == p * k
    groups = [batch[i * k:(i + 1) * k] for i in range(p)]
    ids = [labels[g[0]] for g in groups]
    assert len(set(ids)) == p, "identities repeat inside a batch"
    for group, identity in zip(groups, ids):
        assert all(labels[i] == identity for i in group)
    return ids, groups


# ---- PKSampler ---------------------------------------------------------------------

@pytest.mark.parametrize("p, k", [(2, 2), (4, 3), (5, 4)])
def test_pk_batches_have_p_identities_times_k(p, k):
    sampler = PKSampler(LABELS, p, k, replace_small=False, seed=3)
    assert len(sampler) == len(LABELS) // (p * k) and sampler.batch_size == p * k
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        ids, groups = _check_pk(batch, LABELS, p, k)
        assert all(SIZES[i - 100] >= k for i in ids)   # small identities skipped
        for group in groups:
            assert len(set(group)) == k                  # no repeats
    assert sorted(sampler.identities) == [i for i in range(100, 112) if SIZES[i - 100] >= k]


def test_pk_small_identities_are_filled_with_replacement():
    p, k = 6, 8
    sampler = PKSampler(LABELS, p, k, num_batches=30, replace_small=True, seed=1)
    assert len(sampler.identities) == 12
    seen = set()
    for batch in sampler:
        ids, groups = _check_pk(batch, LABELS, p, k)
        for identity, group in zip(ids, groups):
            seen.add(identity)
            members = set(np.flatnonzero(LABELS == identity))
            if len(members) < k:
                assert set(group) == members   # every sample of it, then repeats
            else:
                assert len(set(group)) == k
    assert seen == set(range(100, 112))


def test_pk_epoch_visits_every_identity_once():
    labels = np.repeat(np.arange(10), 4)
    sampler = PKSampler(labels, p=5, k=2, num_batches=2, seed=8)
    for _ in range(3):
        ids = [i for batch in sampler for i in _check_pk(batch, labels, 5, 2)[0]]
        assert sorted(ids) == list(range(10))


def test_pk_is_deterministic_by_seed_and_epoch():
    first = list(PKSampler(LABELS, 3, 2, seed=5))
    assert first == list(PKSampler(LABELS, 3, 2, seed=5))
    assert first != list(PKSampler(LABELS, 3, 2, seed=6))
    sampler = PKSampler(LABELS, 3, 2, seed=5)
    epochs = [list(sampler) for _ in range(3)]
    assert epochs[0] == first and epochs[1] != epochs[0] and sampler.epoch == 3
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]


def test_pk_epoch_is_taken_when_iter_is_called():
    sampler = PKSampler(LABELS, 2, 2, seed=0)
    a, b = iter(sampler), iter(sampler)
    assert list(b) != list(a)   # two epochs, though b was consumed first


def test_pk_identity_index_input():
    index = {"ann": range(0, 5), "bob": (5, 9), "cy": [9, 11, 20, 21], "dee": (12, 12),
             "eve": np.array([13, 14, 15, 16, 17, 18])}
    owner = {i: name for name, v in index.items()
             for i in (range(*v) if isinstance(v, tuple) else v)}
    sampler = PKSampler(index, p=3, k=4, replace_small=False, num_batches=6, seed=2)
    assert sorted(sampler.identities) == ["ann", "bob", "cy", "eve"]
    assert len(PKSampler(index, p=2, k=2)) == (5 + 4 + 4 + 0 + 6) // 4
    for batch in sampler:
        _check_pk(batch, owner, 3, 4)


def test_pk_works_as_a_dataloader_batch_sampler():
    dataset = gluon.data.ArrayDataset(np.arange(len(LABELS)), LABELS)
    loader = gluon.data.DataLoader(dataset, batch_sampler=PKSampler(LABELS, 4, 2, seed=0))
    batches = list(loader)
    assert len(batches) == len(loader) == len(LABELS) // 8
    for index, label in batches:
        np.testing.assert_array_equal(label.asnumpy(), LABELS[index.asnumpy()])
        _check_pk(index.asnumpy().tolist(), LABELS, 4, 2)


def test_pk_shards_have_disjoint_identities():
    labels = np.repeat(np.arange(30), 3)
    parts = [PKSampler(labels, p=4, k=3, num_parts=3, part_index=i, seed=4)
             for i in range(3)]
    assert [len(s) for s in parts] == [len(labels) // (4 * 3 * 3)] * 3
    deals = []
    for _ in range(2):   # each full pass is one epoch
        shares = []
        for sampler in parts:
            batches = list(sampler)
            for batch in batches:
                _check_pk(batch, labels, 4, 3)
            shares.append({labels[i] for batch in batches for i in batch})
        assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])
        deals.append(shares)
    assert deals[0] != deals[1]   # the identities are dealt anew each epoch


def test_pk_errors():
    with pytest.raises(ValueError, match=r"p must be an integer >= 1, got 0"):
        PKSampler(LABELS, 0, 2)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got 2.5"):
        PKSampler(LABELS, 2, 2.5)
    with pytest.raises(ValueError, match=r"num_batches must be an integer >= 1, got 0"):
        PKSampler(LABELS, 2, 2, num_batches=0)
    with pytest.raises(ValueError, match=r"part_index must be an integer in \[0, 2\)"):
        PKSampler(LABELS, 2, 2, num_parts=2, part_index=2)
    with pytest.raises(ValueError, match=r"num_parts must be an integer >= 1, got 0"):
        PKSampler(LABELS, 2, 2, num_parts=0)
    # identities with >= 10 samples: 3 of 12; 9 more have 1..9 samples
    with pytest.raises(ValueError, match=r"need at least p=4 = 4 usable identities, but only "
                                         r"3 of 12 have at least 10 samples; 9 more .*"
                                         r"replace_small=True"):
        PKSampler(LABELS, 4, 10, replace_small=False)
    with pytest.raises(ValueError, match=r"p=7 x num_parts=2 = 14 usable identities, "
                                         r"but only 12 of 12"):
        PKSampler(LABELS, 7, 2, num_parts=2, part_index=0)
    with pytest.raises(ValueError, match=r"labels must be 1-D"):
        PKSampler(np.zeros((4, 2)), 1, 1)
    with pytest.raises(ValueError, match=r"identity 'x': \(start, end\) must be integers"):
        PKSampler({"x": (5, 2)}, 1, 1)
    with pytest.raises(ValueError, match=r"a sample index belongs to two identities"):
        PKSampler({"x": [1, 2], "y": (2, 4)}, 1, 1)


# ---- ClassBalancedSampler ------------------------------------------------------------

def test_class_balanced_probabilities_by_hand():
    labels = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2, 2])   # 1, 3 and 6 samples
    indices, prob = ClassBalancedSampler(labels).probabilities
    expected = {0: 1 / 3, 1: 1 / 9, 2: 1 / 18}
    np.testing.assert_allclose(prob, [expected[labels[i]] for i in indices], rtol=1e-12)
    assert sorted(indices.tolist()) == list(range(10))


def test_class_balanced_draws_classes_equally():
    labels = np.repeat([0, 1, 2], [2, 20, 178])
    sampler = ClassBalancedSampler(labels, num_samples=30000, seed=3)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 30000
    counts = collections.Counter(labels[drawn])
    # binomial sd of a class count: sqrt(30000·1/3·2/3) = 82; allow 5 sd
    for c in range(3):
        assert abs(counts[c] - 10000) < 410
    # within a class, uniform: both samples of class 0 about equally often
    zero = collections.Counter(i for i in drawn if labels[i] == 0)
    assert abs(zero[0] - zero[1]) < 5 * np.sqrt(counts[0])   # sd of the difference


def test_class_balanced_defaults_determinism_and_index_input():
    labels = np.repeat([5, 7], [3, 9])
    sampler = ClassBalancedSampler(labels, seed=1)
    first = list(sampler)
    assert len(first) == len(sampler) == 12
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first == list(ClassBalancedSampler(labels, seed=1))
    index = ClassBalancedSampler({"a": (10, 12), "b": [3], "c": range(0, 0)}, num_samples=50)
    assert set(index) <= {10, 11, 3} and len(index) == 50
    assert dict(zip(*index.probabilities)) == pytest.approx({10: .25, 11: .25, 3: .5})


def test_class_balanced_errors():
    with pytest.raises(ValueError, match=r"num_samples must be an integer >= 1, got 0"):
        ClassBalancedSampler([0, 1], num_samples=0)
    with pytest.raises(ValueError, match=r"labels hold no samples"):
        ClassBalancedSampler([])
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        ClassBalancedSampler([0, 1], seed=-1)


# ---- ShardSampler ----------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("length, num_parts", [(0, 3), (1, 1), (2, 5), (10, 3), (11, 4),
                                               (12, 4)])
def test_shards_are_disjoint_and_complete(length, num_parts, shuffle):
    parts = [ShardSampler(length, num_parts, i, shuffle=shuffle, seed=9)
             for i in range(num_parts)]
    for _ in range(2):   # two epochs
        shares = [list(s) for s in parts]
        assert [len(s) for s in shares] == [len(s) for s in parts]
        assert sorted(i for share in shares for i in share) == list(range(length))
        sizes = [len(share) for share in shares]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        if not shuffle:  # contiguous blocks in order
            assert [i for share in shares for i in share] == list(range(length))


def test_shard_shuffle_changes_with_epoch_and_is_reproducible():
    parts = [ShardSampler(20, 2, i, shuffle=True, seed=4) for i in range(2)]
    epoch0 = [list(s) for s in parts]
    epoch1 = [list(s) for s in parts]
    assert epoch0 != epoch1 and sorted(epoch0[0] + epoch0[1]) == list(range(20))
    assert epoch0[0] != list(range(10))
    for s in parts:
        s.set_epoch(1)
    assert [list(s) for s in parts] == epoch1
    assert list(ShardSampler(20, 2, 0, shuffle=True, seed=5)) != epoch0[0]


@pytest.mark.parametrize("length, num_parts", [(10, 4), (2, 5), (9, 3)])
def test_shard_pad_gives_equal_lengths(length, num_parts):
    parts = [ShardSampler(length, num_parts, i, shuffle=True, pad=True, seed=2)
             for i in range(num_parts)]
    shares = [list(s) for s in parts]
    size = -(-length // num_parts)
    assert all(len(share) == len(s) == size for share, s in zip(shares, parts))
    assert set(i for share in shares for i in share) == set(range(length))
    counts = collections.Counter(i for share in shares for i in share)
    if length >= num_parts:   # each padded index once more, all different
        assert max(counts.values()) <= 2


def test_shard_errors():
    with pytest.raises(ValueError, match=r"part_index must be an integer in \[0, 3\) "
                                         r"for num_parts=3, got 3"):
        ShardSampler(10, 3, 3)
    with pytest.raises(ValueError, match=r"part_index .* got -1"):
        ShardSampler(10, 3, -1)
    with pytest.raises(ValueError, match=r"num_parts must be an integer >= 1, got 0"):
        ShardSampler(10, 0, 0)
    with pytest.raises(ValueError, match=r"length must be an integer >= 0, got -2"):
        ShardSampler(-2, 1, 0)
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0, got -1"):
        ShardSampler(4, 1, 0).set_epoch(-1)

"""fr_lib.data.source: the sharding rule, the prefetcher, and the BatchSource
protocol of ArrayBatches, RecordBatches, FaceRecordIter and DaliFaceIter.

Shards are checked against lists written out by hand; sources against the
same source without prefetching, or against an uninterrupted stream (the
position only decides which batches come next, so a resumed stream must give
exactly the batches that followed)."""
import os
import threading

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx

from fr_lib.data.source import (ArrayBatches, BatchSource, Prefetcher,
                                global_batches, shard, shard_range)
from fr_lib.data.recordio import FaceRecordDataset, FaceRecordIter, RecordBatches
from fr_lib.data.synthetic import write_dataset
from fr_lib.train.trainer import ArrayBatches as TrainerArrayBatches
from fr_lib.train.trainer import RecordBatches as TrainerRecordBatches


# -- the sharding rule -------------------------------------------------------------

def test_shard_by_hand():
    # 10 positions, 4 parts: blocks of 10 // 4 = 2, the first 10 % 4 = 2 one longer
    assert [shard(10, 4, i).tolist() for i in range(4)] == \
        [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert [shard(10, 4, i, "drop").tolist() for i in range(4)] == \
        [[0, 1], [3, 4], [6, 7], [8, 9]]
    # short parts 2 and 3 append positions 0 and 1
    assert [shard(10, 4, i, "pad").tolist() for i in range(4)] == \
        [[0, 1, 2], [3, 4, 5], [6, 7, 0], [8, 9, 1]]
    # fewer positions than parts: empty parts, or padding that wraps around
    assert [shard(2, 5, i).tolist() for i in range(5)] == [[0], [1], [], [], []]
    assert [shard(2, 5, i, "pad").tolist() for i in range(5)] == \
        [[0], [1], [0], [1], [0]]
    assert shard(7, 1, 0).tolist() == list(range(7))


@pytest.mark.parametrize("n", [0, 1, 5, 12, 13, 31])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_shard_parts_are_disjoint_complete_and_balanced(n, k):
    keep = [shard(n, k, i) for i in range(k)]
    flat = np.concatenate(keep)
    assert sorted(flat.tolist()) == list(range(n))            # disjoint, complete
    assert flat.tolist() == list(range(n))                    # contiguous, in order
    assert max(map(len, keep)) - min(map(len, keep)) <= 1
    drop = [shard(n, k, i, "drop") for i in range(k)]
    assert all(len(p) == n // k and set(p) <= set(q) for p, q in zip(drop, keep))
    pad = [shard(n, k, i, "pad") for i in range(k)]
    assert all(len(p) == -(-n // k) for p in pad)
    assert set(np.concatenate(pad).tolist()) == set(range(n))


@pytest.mark.parametrize("n, k", [(10, 4), (2, 5), (7, 1), (1000, 3)])
def test_shard_range_is_the_block_of_shard_and_partial_fc_uses_it(n, k):
    from fr_lib.train.partial_fc.sampling import _shard_ranges
    ranges = [shard_range(n, k, i) for i in range(k)]
    assert [list(range(a, b)) for a, b in ranges] == [shard(n, k, i).tolist()
                                                     for i in range(k)]
    assert _shard_ranges(n, k) == ranges     # Partial FC's class shards
    assert shard_range(10, 4, 2) == (6, 8)   # by hand: blocks 3, 3, 2, 2


def test_shard_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"part_index must be an integer in \[0, 3\)"):
        shard(10, 3, 3)
    with pytest.raises(ValueError, match="num_parts must be an integer >= 1"):
        shard(10, 0, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        shard(-1, 2, 0)
    with pytest.raises(ValueError, match="remainder must be"):
        shard(10, 2, 0, "wrap")


def test_global_batches_match_one_worker_with_the_whole_batch():
    order = np.array([9, 3, 7, 1, 0, 8, 2, 6, 5, 4, 11, 10, 12])
    parts = [global_batches(order, 2, 3, i) for i in range(3)]
    # global batches of 3 x 2 = 6: [9 3 7 1 0 8] [2 6 5 4 11 10]; 12 is left over
    assert parts == [[[9, 3], [2, 6]], [[7, 1], [5, 4]], [[0, 8], [11, 10]]]
    single = global_batches(order, 6, 1, 0)
    for b in range(2):
        assert sum((p[b] for p in parts), []) == single[b]
    # keep_last splits the last incomplete global batch too: [12] -> part 0
    assert [global_batches(order, 2, 3, i, keep_last=True)[2:] for i in range(3)] == \
        [[[12]], [], []]


def test_samplers_use_the_same_rule():
    from fr_lib.data import PKSampler, ShardSampler
    for pad in (False, True):
        for i in range(4):
            assert list(ShardSampler(10, 4, i, pad=pad)) == \
                shard(10, 4, i, "pad" if pad else "keep").tolist()
    # PKSampler: part i takes block i of the epoch's shuffle of the identities
    labels = np.repeat(np.arange(10), 2)
    order = np.random.default_rng([4, 0]).permutation(10)
    for i in range(3):
        mine = set(order[shard(10, 3, i)].tolist())
        got = {int(labels[j]) for batch in PKSampler(labels, 2, 2, seed=4, num_parts=3,
                                                    part_index=i) for j in batch}
        assert got <= mine


# -- the prefetcher ------------------------------------------------------------------

class CountingSource(BatchSource):
    """Batch t is (t, t); batch ``fail_at`` raises; events record what was made."""

    def __init__(self, n=100, fail_at=None):
        self.position, self.made, self.fail_at = 0, 0, fail_at
        self.events = [threading.Event() for _ in range(n)]

    def __len__(self):
        return 5

    def next_batch(self):
        t = self.position
        if t == self.fail_at:
            raise ValueError(f"record {t} of /data/train.rec holds no image")
        self.position += 1
        self.made += 1
        self.events[t].set()
        return mx.nd.array([t]), mx.nd.array([t])

    def state_dict(self):
        return {"epoch": self.position // 5, "batch": self.position % 5,
                "position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_prefetcher_overlaps_and_stays_bounded():
    source = CountingSource()
    p = Prefetcher(source, depth=2)
    x, _ = p.next_batch()
    assert x.asscalar() == 0
    # while the consumer holds batch 0, the thread makes batch 1 (and more)
    assert source.events[1].wait(30) and source.events[3].wait(30)
    # queue of 2 + the one it holds while waiting to put: never more than 4 made
    assert source.made == 4 and p.state_dict()["position"] == 1
    assert [p.next_batch()[0].asscalar() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert p.state_dict() == {"epoch": 1, "batch": 1, "position": 6}
    p.close()
    assert not p.running and source.position == 6  # set back to the consumer's
    assert p.next_batch()[0].asscalar() == 6      # and it restarts from there
    p.close()


def test_prefetcher_gives_the_same_stream_and_exact_state():
    plain, fetched = CountingSource(), Prefetcher(CountingSource(), depth=3)
    for _ in range(7):
        a, b = plain.next_batch(), fetched.next_batch()
        assert a[0].asscalar() == b[0].asscalar()
        assert fetched.state_dict() == plain.state_dict()
    saved = fetched.state_dict()
    resumed = Prefetcher(CountingSource(), depth=1)
    resumed.load_state_dict(saved)
    assert [resumed.next_batch()[0].asscalar() for _ in range(3)] == [7, 8, 9]
    fetched.close()
    resumed.close()


def test_prefetcher_raises_the_producer_error_in_the_consumer():
    p = Prefetcher(CountingSource(fail_at=3), depth=2)
    assert [p.next_batch()[0].asscalar() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"record 3 of /data/train.rec") as info:
        p.next_batch()
    if hasattr(info.value, "__notes__"):
        assert "data position {'epoch': 0, 'batch': 3" in info.value.__notes__[0]
    assert not p.running and p.state_dict()["position"] == 3


def test_a_forgotten_prefetching_source_stops_its_thread():
    import gc
    before = set(threading.enumerate())
    source = ArrayBatches(np.arange(40.0).reshape(20, 2), np.arange(20) % 4, 4,
                          prefetch=2)
    source.next_batch()
    threads = [t for t in set(threading.enumerate()) - before if t.name == "fr_prefetch"]
    assert len(threads) == 1 and threads[0].is_alive()
    del source
    gc.collect()
    threads[0].join(30)
    assert not threads[0].is_alive()


# -- the sources -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_set(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("source") / "faces")
    write_dataset(d, num_identities=5, images_per_identity=4, num_val_pairs=0,
                  seed=0)
    return d


def arrays(batch):
    return batch[0].asnumpy(), batch[1].asnumpy()


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_moved_classes_are_still_importable_from_the_trainer():
    assert TrainerArrayBatches is ArrayBatches and TrainerRecordBatches is RecordBatches


def test_record_batches_prefetch_changes_nothing_and_resumes(face_set):
    def make(prefetch):
        return RecordBatches(face_set, batch_size=3, seed=5, decode_threads=2,
                             prefetch=prefetch)   # 20 images: 6 batches per epoch
    plain, fetched = make(0), make(2)
    want = [arrays(plain.next_batch()) for _ in range(14)]   # crosses two epochs
    got = []
    for t in range(14):
        got.append(arrays(fetched.next_batch()))
        if t == 4:   # the thread is ahead; the state is the consumer's
            saved = fetched.state_dict()
            assert (saved["epoch"], saved["batch"]) == (0, 5)
            # label checks name the dataset index of a sample of the last batch
            assert fetched.positions(0, 4)[0] in range(20)
    assert_same_batches(got, want)
    for prefetch in (0, 2):
        resumed = make(prefetch)
        resumed.load_state_dict(saved)
        assert_same_batches([arrays(resumed.next_batch()) for _ in range(9)], want[5:])
        resumed.close()
    # a pickled copy (e.g. sent to a worker process) is at the consumer's position
    import pickle
    copy = pickle.loads(pickle.dumps(fetched))
    assert copy.state_dict() == fetched.state_dict()
    assert_same_batches([arrays(copy.next_batch())], [arrays(fetched.next_batch())])
    copy.close()
    fetched.close()
    assert not any(t.name == "fr_prefetch" and t.is_alive()
                   for t in threading.enumerate() if t is not threading.current_thread())


def test_record_batches_bad_record_is_named_in_the_consumer(tmp_path, face_set):
    import shutil
    d = str(tmp_path / "bad")
    shutil.copytree(face_set, d)
    ds = FaceRecordDataset(d)
    key, offset = int(ds.keys[7]), int(ds._offsets[7])
    raw = ds.read_raw(7)
    with open(os.path.join(d, "train.rec"), "r+b") as f:   # keep the JPEG start,
        data = f.read()                                   # spoil the rest
        start = data.index(raw.data, offset)
        f.seek(start + 4)
        f.write(b"\0" * (len(raw.data) - 8))
    source = RecordBatches(d, batch_size=4, shuffle=False, check=False, prefetch=2)
    assert source.next_batch()[1].shape == (4,)   # batch 0 holds positions 0..3
    with pytest.raises(Exception, match=rf"train\.rec: record {key} "):
        source.next_batch()                        # batch 1 holds position 7
    source.close()


def test_face_record_iter_resumes_exactly(face_set):
    def make():
        return FaceRecordIter(face_set, batch_size=3, shuffle=True, rand_mirror=True,
                              num_workers=2, seed=11)   # 7 batches, the last of 2
    it = make()
    assert isinstance(it, BatchSource) and len(it) == 7
    want = [arrays(it.next_batch()) for _ in range(16)]
    assert [len(y) for _, y in want[:8]] == [3] * 6 + [2, 3]
    ds = it.dataset   # positions() names the dataset items of a batch
    np.testing.assert_array_equal(want[9][1], ds.labels[it.positions(1, 2)])
    ref = make()
    for _ in range(9):
        ref.next_batch()
    saved = ref.state_dict()
    assert (saved["epoch"], saved["batch"]) == (1, 2) == (ref.epoch, ref.batch)
    resumed = make()
    resumed.load_state_dict(saved)
    assert_same_batches([arrays(resumed.next_batch()) for _ in range(7)], want[9:])
    # a for loop after a load runs the rest of the saved epoch, then whole epochs
    again = make()
    again.load_state_dict(saved)
    assert_same_batches([arrays(b) for b in again], want[9:14])
    assert_same_batches([arrays(b) for b in again][:2], want[14:16])
    with pytest.raises(ValueError, match="batch_size"):
        FaceRecordIter(face_set, batch_size=4, seed=11).load_state_dict(saved)
    for x in (it, ref, resumed, again):
        x.close()


def test_face_record_iter_shards_like_one_worker_with_the_whole_batch(face_set):
    whole = [arrays(b) for b in FaceRecordIter(face_set, batch_size=6, shuffle=True,
                                               seed=2)]
    parts = [[arrays(b) for b in FaceRecordIter(face_set, batch_size=2, shuffle=True,
                                                seed=2, num_parts=3, part_index=i)]
             for i in range(3)]
    # 20 images in global batches of 6: 3 full ones and [18, 19] -> parts 0, 1
    assert [len(p) for p in parts] == [4, 4, 3]
    for b, (x, y) in enumerate(whole):
        joined = [p[b] for p in parts if b < len(p)]
        np.testing.assert_array_equal(np.concatenate([j[0] for j in joined]), x)
        np.testing.assert_array_equal(np.concatenate([j[1] for j in joined]), y)


def test_dali_face_iter_resumes_exactly(face_set):
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.dali.plugin.mxnet")
    from fr_lib.data.dali import DaliFaceIter

    def make(**kw):
        return DaliFaceIter(face_set, batch_size=6, shuffle=True, rand_mirror=True,
                            seed=3, device="cpu", num_threads=1, shuffle_buffer=8,
                            **kw)   # 20 images: 4 batches, the last of 2
    it = make()
    assert isinstance(it, BatchSource) and len(it) == 4
    want = [arrays(it.next_batch()) for _ in range(10)]
    assert [len(y) for _, y in want[:5]] == [6, 6, 6, 2, 6]
    saved = it.state_dict()
    assert (saved["epoch"], saved["batch"]) == (2, 2) == (it.epoch, it.batch)
    resumed = make()
    resumed.load_state_dict({**saved, "epoch": 1, "batch": 1})
    assert_same_batches([arrays(resumed.next_batch()) for _ in range(5)], want[5:10])
    with pytest.raises(ValueError, match="seed=None"):
        DaliFaceIter(face_set, batch_size=6, device="cpu").load_state_dict(saved)
    # a shard reads block i of the images in file order (fr_lib.data.shard)
    ds = FaceRecordDataset(face_set)
    part = DaliFaceIter(face_set, batch_size=8, shard_id=1, num_shards=3, device="cpu")
    labels = np.concatenate([y.asnumpy() for _, y in part])
    np.testing.assert_array_equal(labels, ds.labels[shard(20, 3, 1)])


@pytest.mark.parametrize("kind", ["FaceRecordIter", "DaliFaceIter"])
def test_trainer_resumes_through_each_source(tmp_path, face_set, kind):
    """FaceTrainer trains from the source and a resumed run ends with the
    weights of an uninterrupted one (the data position is in the checkpoint)."""
    from mxnet import gluon
    from fr_lib.train import FaceTrainer, TrainConfig
    if kind == "DaliFaceIter":
        pytest.importorskip("nvidia.dali.plugin.mxnet")
        from fr_lib.data.dali import DaliFaceIter

        def data():
            return DaliFaceIter(face_set, batch_size=6, shuffle=True, rand_mirror=True,
                                seed=3, device="cpu", num_threads=1, shuffle_buffer=8)
    else:
        def data():
            return FaceRecordIter(face_set, batch_size=6, shuffle=True,
                                  rand_mirror=True, seed=3)

    def run(out, max_iters):
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Conv2D(4, 8, strides=8), gluon.nn.GlobalAvgPool2D(),
                gluon.nn.Dense(8))
        # a constant lr: cosine's schedule would depend on max_iters
        cfg = TrainConfig(loss="cosface", batch_size=6, max_iters=max_iters, lr=0.1,
                          lr_mode="constant", out_dir=str(out), checkpoint_every=3, resume=True,
                          progress=False, seed=1, log_every=1)
        trainer = FaceTrainer(cfg, data(), backbone=net)
        trainer.fit()
        assert trainer.num_classes == 5
        return {k: v.data().asnumpy() for k, v in net.collect_params().items()}

    whole = run(tmp_path / "whole", 6)        # 4 batches per epoch: crosses one
    run(tmp_path / "cut", 3)
    resumed = run(tmp_path / "cut", 6)
    for (ka, a), (kb, b) in zip(sorted(whole.items()), sorted(resumed.items())):
        np.testing.assert_array_equal(a, b, err_msg=ka)


def test_train_reads_data_through_the_configured_source(tmp_path, face_set):
    """TrainConfig.data_source picks the source train() builds: 'dali' gives
    the trainer a DaliFaceIter over config.data; bad settings are refused."""
    from mxnet import gluon
    from fr_lib.train import TrainConfig, train
    seen = []

    def spy(trainer, record):
        seen.append((type(trainer.data).__name__, record["loss"]))

    def config(**kw):
        return TrainConfig(loss="cosface", batch_size=6, max_iters=2, lr=0.1,
                           lr_mode="constant", out_dir=str(tmp_path / "run"),
                           progress=False, seed=1, data=face_set, **kw)

    def net():
        block = gluon.nn.HybridSequential()
        block.add(gluon.nn.Conv2D(4, 8, strides=8), gluon.nn.GlobalAvgPool2D(),
                  gluon.nn.Dense(8))
        return block

    with pytest.raises(ValueError, match="data_source must be 'record' or 'dali'"):
        train(config(data_source="lmdb"), backbone=net())
    with pytest.raises(ValueError, match="pk_k=2: P x K batches"):
        train(config(data_source="dali", pk_k=2), backbone=net())
    pytest.importorskip("nvidia.dali.plugin.mxnet")
    result = train(config(data_source="dali"), backbone=net(), callbacks=[spy])
    assert [name for name, _ in seen] == ["DaliFaceIter"] * 2
    assert all(np.isfinite(loss) for _, loss in seen)
    assert result.iterations == 2

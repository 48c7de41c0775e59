"""fr_lib.data.recordio: InsightFace-layout and plain RecordIO sets.

Fixtures are written the way InsightFace's face2rec2.py and MXNet's im2rec.py
write them: ``mx.recordio.MXIndexedRecordIO`` with ``mx.recordio.pack`` /
``pack_img`` and ``IRHeader``. Images are tiny (16x16) and mostly PNG, so pixels
can be compared exactly.
"""
import os
import pickle
import re
import struct

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx
from mxnet import gluon

from fr_lib.data.recordio import (BadImageError, FaceBatchify, FaceRecordDataset,
                                  FaceRecordIter, MissingIndexError,
                                  RecordFormatError, read_index, read_property,
                                  rebuild_index, write_face_rec)
from fr_lib.data.recordio.writer import _RecWriter
from fr_lib.data.transforms import normalize_batch

cv2 = pytest.importorskip("cv2")

S = 16  # image side
MAGIC = struct.pack("<I", 0xCED7230A)


def make_images(labels, seed=0):
    """(label, RGB uint8 image) pairs with distinct random pixels."""
    rng = np.random.RandomState(seed)
    return [(lab, rng.randint(0, 256, (S, S, 3)).astype(np.uint8))
            for lab in labels]


def write_insightface(d, per_class=(3, 2, 4), fmt=".png", prop=True,
                      mutate=None):
    """Write train.rec/.idx/property like face2rec2.py: images get ids 1..n,
    then the header record (id 0, label [first, end]), then identity records
    (label [start, stop)). ``pack_img`` encodes BGR arrays with OpenCV, so we
    hand it rgb[..., ::-1]. ``mutate(key, payload)`` may alter a payload."""
    os.makedirs(d, exist_ok=True)
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    items = make_images(labels)
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"),
                                        os.path.join(d, "train.rec"), "w")
    identities, key = [], 1
    for c, n in enumerate(per_class):
        identities.append((key, key + n))
        key += n
    for i, (lab, rgb) in enumerate(items):
        key = i + 1
        s = mx.recordio.pack_img(mx.recordio.IRHeader(0, float(lab), key, 0),
                                 rgb[:, :, ::-1], img_fmt=fmt)
        rec.write_idx(key, mutate(key, s) if mutate else s)
    first = len(items) + 1
    end = first + len(identities)
    rec.write_idx(0, mx.recordio.pack(
        mx.recordio.IRHeader(2, [float(first), float(end)], 0, 0), b""))
    for j, (lo, hi) in enumerate(identities):
        k = first + j
        s = mx.recordio.pack(mx.recordio.IRHeader(2, [float(lo), float(hi)], k, 0),
                             b"")
        rec.write_idx(k, mutate(k, s) if mutate else s)
    rec.close()
    if prop:
        with open(os.path.join(d, "property"), "w") as f:
            f.write(f"{len(per_class)},{S},{S}")
    return items


def write_plain(d, labels, array_labels=False, seed=1, fmt=".png", payloads=None):
    """Write a plain rec like im2rec.py from a shuffled .lst: idx key = id =
    list index, records in shuffled order, scalar or array labels."""
    os.makedirs(d, exist_ok=True)
    items = make_images(labels, seed=seed)
    order = np.random.RandomState(seed).permutation(len(items))
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"),
                                        os.path.join(d, "train.rec"), "w")
    for j in order.tolist():
        lab, rgb = items[j]
        label = [float(lab), 0.5, 7.0] if array_labels else float(lab)
        header = mx.recordio.IRHeader(0, label, j, 0)
        if payloads and j in payloads:
            s = mx.recordio.pack(header, payloads[j])
        else:
            s = mx.recordio.pack_img(header, rgb[:, :, ::-1], img_fmt=fmt)
        rec.write_idx(j, s)
    rec.close()
    return items, order


# -- reading -------------------------------------------------------------------

def test_insightface_layout_read(tmp_path):
    items = write_insightface(str(tmp_path))
    ds = FaceRecordDataset(str(tmp_path))
    # 9 images; record 0 and the 3 identity records are not images
    assert len(ds) == 9 and ds.layout == "insightface"
    assert ds.num_classes == 3 and ds.property == (3, S, S)
    assert ds.image_size == (S, S)
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(ds.keys, np.arange(1, 10))
    assert ds.identity_index == {0: range(0, 3), 1: range(3, 5), 2: range(5, 9)}
    for i, (lab, rgb) in enumerate(items):
        img, label = ds[i]
        assert isinstance(img, mx.nd.NDArray) and img.dtype == np.uint8
        assert label == lab
        np.testing.assert_array_equal(img.asnumpy(), rgb)  # PNG: exact, RGB
    with pytest.raises(IndexError):
        ds[9]
    # check=False takes labels from the identity records: same answer
    fast = FaceRecordDataset(str(tmp_path), check=False)
    np.testing.assert_array_equal(fast.labels, ds.labels)
    assert "9 images, 3 classes, 16x16" in ds.summary()


@pytest.mark.parametrize("array_labels", [False, True])
def test_plain_rec_read(tmp_path, array_labels):
    labels = [0, 1, 2, 1, 0, 2, 2]
    items, order = write_plain(str(tmp_path), labels, array_labels)
    ds = FaceRecordDataset(os.path.join(str(tmp_path), "train.rec"))
    assert ds.layout == "plain" and len(ds) == 7
    assert ds.property is None and ds.num_classes == 3
    # dataset order = .idx order = the shuffled file order
    np.testing.assert_array_equal(ds.keys, order)
    np.testing.assert_array_equal(ds.labels, [labels[j] for j in order])
    for i, j in enumerate(order.tolist()):
        img, label = ds[i]
        assert label == labels[j]
        np.testing.assert_array_equal(img.asnumpy(), items[j][1])
    index = ds.identity_index
    assert sorted(index) == [0, 1, 2]
    for c, pos in index.items():
        assert sorted(ds.labels[np.asarray(pos)].tolist()) == [c] * labels.count(c)


def _shape_and_tenfold(img, label):
    return img.shape, label * 10


def test_transform_and_pickle(tmp_path):
    write_insightface(str(tmp_path))
    ds = FaceRecordDataset(str(tmp_path), transform=_shape_and_tenfold)
    assert ds[3] == ((S, S, 3), 10)
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers do this
    assert clone[8] == ((S, S, 3), 20)


# -- bad input ---------------------------------------------------------------

def test_missing_idx_and_rebuild(tmp_path):
    d = str(tmp_path)
    write_insightface(d)
    idx = os.path.join(d, "train.idx")
    with open(idx) as f:
        original = f.read()
    os.remove(idx)
    with pytest.raises(MissingIndexError,
                       match=re.escape(idx) + r".*missing.*rebuild_index"):
        FaceRecordDataset(d)
    assert rebuild_index(os.path.join(d, "train.rec")) == idx
    # keys are the IRHeader ids: the index face2rec wrote, line for line
    with open(idx) as f:
        assert f.read() == original
    assert len(FaceRecordDataset(d)) == 9
    rebuild_index(os.path.join(d, "train.rec"), keys="position")
    keys, _ = read_index(idx)
    np.testing.assert_array_equal(keys, np.arange(13))
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]


def test_rebuild_index_plain_shuffled(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1, 1, 0, 2])
    idx = os.path.join(d, "train.idx")
    with open(idx) as f:
        original = f.read()
    rebuild_index(os.path.join(d, "train.rec"), idx_path=idx + ".new")
    with open(idx + ".new") as f:
        assert f.read() == original
    with pytest.raises(ValueError, match="keys must be"):
        rebuild_index(os.path.join(d, "train.rec"), keys="name")


def _offsets(d):
    keys, offs = read_index(os.path.join(d, "train.idx"))
    return dict(zip(keys.tolist(), offs.tolist()))


def test_truncated_rec(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1, 2, 0])
    rec = os.path.join(d, "train.rec")
    offs = _offsets(d)
    last_key = max(offs, key=offs.get)
    size = os.path.getsize(rec)
    with open(rec, "r+b") as f:  # cut the last record in half
        f.truncate(offs[last_key] + (size - offs[last_key]) // 2)
    with pytest.raises(RecordFormatError,
                       match=re.escape(rec) + rf": record {last_key}: .*byte "
                       rf"offset {offs[last_key]}.*should end at byte offset "
                       rf"{size}.*truncated"):
        FaceRecordDataset(d)
    with pytest.raises(RecordFormatError, match=r"record #3 \(sequential scan\)"
                       rf".*{offs[last_key]}"):
        rebuild_index(rec)
    with open(rec, "r+b") as f:  # now the index points past the end
        f.truncate(offs[last_key] - 4)
    with pytest.raises(RecordFormatError,
                       match=rf"line \d: record {last_key} is expected at byte "
                       rf"offset {offs[last_key]}, but the .rec file has only "
                       rf"{offs[last_key] - 4} bytes"):
        FaceRecordDataset(d)


def test_bad_magic(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1, 2])
    rec = os.path.join(d, "train.rec")
    offs = _offsets(d)
    with open(rec, "r+b") as f:
        f.seek(offs[1])
        f.write(b"JUNK")
    with pytest.raises(RecordFormatError,
                       match=re.escape(rec) + rf": record 1: bad magic number "
                       rf"0x4b4e554a at byte offset {offs[1]} "
                       r"\(expected 0xced7230a\)"):
        FaceRecordDataset(d)


def test_bad_index_lines(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1])
    idx = os.path.join(d, "train.idx")
    with open(idx, "a") as f:
        f.write("oops\n")
    with pytest.raises(RecordFormatError, match=r"line 3 is 'oops'"):
        FaceRecordDataset(d)
    with open(idx, "w") as f:
        f.write("0\t0\n0\t0\n")
    with pytest.raises(RecordFormatError, match="key 0 appears more than once"):
        FaceRecordDataset(d)


def test_property_disagrees(tmp_path):
    d = str(tmp_path)
    write_insightface(d)
    prop = os.path.join(d, "property")
    with open(prop, "w") as f:
        f.write("5,16,16\n")
    with pytest.raises(ValueError, match=re.escape(prop) + r" says 5 classes, but "
                       r".*has 3 identity records \(keys 10\.\.12\)"):
        FaceRecordDataset(d)
    with open(prop, "w") as f:
        f.write("3,112,112\n")
    with pytest.raises(ValueError, match=r"says images are 112x112 .* but record 1"
                       r" .* is 16x16"):
        FaceRecordDataset(d)
    with open(prop, "w") as f:
        f.write("3;16;16")
    with pytest.raises(ValueError, match=re.escape(prop) +
                       r": expected 'num_classes,height,width'"):
        FaceRecordDataset(d)


def test_label_out_of_range(tmp_path):
    d = str(tmp_path)
    items, order = write_plain(d, [0, 1, 5, 1])
    with open(os.path.join(d, "property"), "w") as f:
        f.write("3,16,16")
    with pytest.raises(ValueError, match=r"record 2 has label 5, out of range for "
                       r"3 classes \(from .*property\)"):
        FaceRecordDataset(d)


def test_non_integer_label(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1.5])
    with pytest.raises(ValueError, match=r"record 1: label 1\.5 is not a class id"):
        FaceRecordDataset(d)


def test_identity_records_disagree(tmp_path):
    d = str(tmp_path)

    def mutate(key, s):  # identity 1 claims keys [3, 6) instead of [4, 6)
        if key == 11:
            return mx.recordio.pack(mx.recordio.IRHeader(2, [3.0, 6.0], 11, 0), b"")
        return s
    write_insightface(d, mutate=mutate)
    with pytest.raises(ValueError, match=r"identity record 11 \(identity 1\) covers"
                       r" image keys \[3, 6\), but record 3 has label 0"):
        FaceRecordDataset(d)


def test_bad_image_records_and_skip_bad(tmp_path):
    d = str(tmp_path)
    rec = os.path.join(d, "train.rec")
    write_plain(d, [0, 1, 2, 0, 1], payloads={1: b"not an image at all",
                                             3: b""})
    with pytest.raises(BadImageError, match=re.escape(rec) + r": record \d is not "
                       r"a valid image record: .*skip_bad=True"):
        FaceRecordDataset(d)
    ds = FaceRecordDataset(d, skip_bad=True)
    assert len(ds) == 3 and 1 not in ds.keys and 3 not in ds.keys
    reasons = dict(ds.bad_records)
    assert set(reasons) == {1, 3}
    assert "does not start like an image" in reasons[1]
    assert "empty" in reasons[3]
    summary = ds.summary()
    assert "2 bad records left out" in summary and "record 3: " in summary


def test_corrupt_image_body(tmp_path):
    """A JPEG whose header is fine but whose body is garbage: the header scan
    cannot see it; check='full' and the batch path can."""
    d = str(tmp_path)
    rec = os.path.join(d, "train.rec")
    bad = b"\xff\xd8\xff\xe0" + b"\x00" * 40
    key = int(np.random.RandomState(1).permutation(5)[2])  # third in the file
    write_plain(d, [0, 1, 2, 0, 1], payloads={key: bad}, fmt=".jpg")
    ds = FaceRecordDataset(d)  # header check passes
    pos = int(np.flatnonzero(ds.keys == key)[0])
    assert pos == 2
    with pytest.raises(BadImageError, match=re.escape(rec) + rf": record {key} "
                       r"holds 44 bytes that are not a decodable image"):
        ds[pos]
    with pytest.raises(BadImageError, match=rf"record {key} holds 44 bytes"):
        FaceRecordDataset(d, check="full")
    full = FaceRecordDataset(d, check="full", skip_bad=True)
    assert len(full) == 4 and [k for k, _ in full.bad_records] == [key]
    # the batch path: raise, or drop and count
    with pytest.raises(BadImageError, match=re.escape(rec) + rf": record {key} "
                       "holds"):
        list(FaceRecordIter(ds, batch_size=5))
    lenient = FaceRecordDataset(d, skip_bad=True)
    batches = list(FaceRecordIter(lenient, batch_size=5, decode_threads=2))
    assert batches[0][0].shape == (4, 3, S, S)
    assert [k for k, _ in lenient.bad_records] == [key]
    np.testing.assert_array_equal(batches[0][1].asnumpy(),
                                  np.delete(lenient.labels, pos))


def test_missing_record_key(tmp_path):
    d = str(tmp_path)
    write_insightface(d)
    idx = os.path.join(d, "train.idx")
    with open(idx) as f:
        lines = [ln for ln in f if not ln.startswith("4\t")]
    with open(idx, "w") as f:
        f.writelines(lines)
    with pytest.raises(RecordFormatError, match=r"record 0 says the image records "
                       r"are keys 1\.\.9, but .*train\.idx has no key 4"):
        FaceRecordDataset(d)


def test_not_an_image_record_file(tmp_path):
    d = str(tmp_path)
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"),
                                        os.path.join(d, "train.rec"), "w")
    rec.write_idx(0, b"tiny")
    rec.close()
    with pytest.raises(RecordFormatError, match=r"record 0: the record has 4 bytes,"
                       r" fewer than the 24-byte image record header"):
        FaceRecordDataset(d)
    with pytest.raises(FileNotFoundError, match="no such .rec file"):
        FaceRecordDataset(os.path.join(d, "nothing.rec"))


# -- the RecordIO chunk format ---------------------------------------------------

def test_multi_chunk_records_match_mxnet(tmp_path):
    """Payloads containing the magic number at aligned offsets are split into
    chunks by dmlc-core; our writer must produce the same bytes and our reader
    must put the magic back."""
    payloads = [b"abcd" + MAGIC + b"xy" + MAGIC, MAGIC + b"12345", b"",
                MAGIC + MAGIC + b"z", b"ab" + MAGIC + b"cd", b"q" * 7]
    ref = str(tmp_path / "mx.rec")
    w = mx.recordio.MXRecordIO(ref, "w")
    for p in payloads:
        w.write(p)
    w.close()
    ours = str(tmp_path / "ours.rec")
    with open(ours, "wb") as f:
        writer = _RecWriter(f)
        for p in payloads:
            writer.write(p)
    with open(ref, "rb") as a, open(ours, "rb") as b:
        assert a.read() == b.read()
    from fr_lib.data.recordio import iter_records
    assert [p for _, p in iter_records(ref)] == payloads


# -- writing -----------------------------------------------------------------------

def test_write_insightface_layout(tmp_path):
    d = str(tmp_path / "out")
    items = make_images([0, 0, 1, 2, 2, 2])
    # mix arrays (JPEG-encoded by the writer) and ready-made PNG bytes
    mixed = [(lab, rgb if i % 2 else cv2.imencode(".png", rgb[:, :, ::-1])[1]
              .tobytes()) for i, (lab, rgb) in enumerate(items)]
    info = write_face_rec(d, iter(mixed))
    assert info["num_images"] == 6 and info["num_classes"] == 3
    assert info["image_size"] == (S, S)
    assert read_property(info["property"]) == (3, S, S)
    # read back with MXNet's own reader: face2rec's conventions
    r = mx.recordio.MXIndexedRecordIO(info["idx"], info["rec"], "r")
    h0, body0 = mx.recordio.unpack(r.read_idx(0))
    assert h0.flag == 2 and body0 == b"" and h0.id == 0
    np.testing.assert_array_equal(h0.label, [7, 10])
    ranges = []
    for k in range(7, 10):
        h, body = mx.recordio.unpack(r.read_idx(k))
        assert body == b"" and h.id == k
        ranges.append(tuple(h.label.astype(int)))
    assert ranges == [(1, 3), (3, 4), (4, 7)]
    for k in range(1, 7):
        h, _ = mx.recordio.unpack(r.read_idx(k))
        assert h.flag == 0 and h.label == items[k - 1][0] and h.id == k
    r.close()
    ds = FaceRecordDataset(d)
    assert ds.layout == "insightface" and len(ds) == 6
    for i, (lab, rgb) in enumerate(items):
        img, label = ds[i]
        assert label == lab
        if i % 2 == 0:  # PNG bytes: exact
            np.testing.assert_array_equal(img.asnumpy(), rgb)
        else:  # the writer stored a quality-95 JPEG of the array
            ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1],
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            expect = cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1]
            np.testing.assert_array_equal(img.asnumpy(), expect)
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".")]


@pytest.mark.parametrize("array_labels", [False, True])
def test_write_plain_shuffled(tmp_path, array_labels):
    d = str(tmp_path)
    items = make_images([0, 1, 2, 3, 1, 0, 2, 3])
    pngs = [([lab, 2.5] if array_labels else lab,
             cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
            for lab, rgb in items]
    info = write_face_rec(d, pngs, layout="plain", shuffle_seed=3)
    ds = FaceRecordDataset(d)
    assert ds.layout == "plain" and ds.num_classes == 4
    order = ds.keys.tolist()
    assert sorted(order) == list(range(8)) and order != list(range(8))
    for i, k in enumerate(order):  # key = item number, pixels follow
        img, label = ds[i]
        assert label == items[k][0]
        np.testing.assert_array_equal(img.asnumpy(), items[k][1])
    # MXNet's C++ iterator reads it too (plain layout is what it expects)
    it = mx.io.ImageRecordIter(path_imgrec=info["rec"], data_shape=(3, S, S),
                               batch_size=8, label_width=2 if array_labels else 1,
                               preprocess_threads=1)
    got = it.next().label[0].asnumpy()
    got = got[:, 0] if array_labels else got
    np.testing.assert_array_equal(got, [items[k][0] for k in order])


def test_write_errors(tmp_path):
    items = make_images([0, 1, 0])
    with pytest.raises(ValueError, match=r"item 2 has label 0 after label 1: "
                       r"layout='insightface' needs the items grouped"):
        write_face_rec(str(tmp_path / "a"), items)
    with pytest.raises(BadImageError, match=r"item 1 \(label 0\): its 3 bytes are "
                       r"not a decodable image"):
        write_face_rec(str(tmp_path / "b"), [items[0], (0, b"bad")])
    with pytest.raises(ValueError, match=r"item 1: image is 8x8, expected 16x16"):
        write_face_rec(str(tmp_path / "c"),
                       [items[0], (0, np.zeros((8, 8, 3), np.uint8))])
    with pytest.raises(ValueError, match="shuffle_seed needs layout='plain'"):
        write_face_rec(str(tmp_path / "d"), items, shuffle_seed=1)
    with pytest.raises(ValueError, match="item 0: layout='insightface' needs an "
                       "integer class id"):
        write_face_rec(str(tmp_path / "e"), [(0.5, items[0][1])])
    assert not os.listdir(str(tmp_path))  # nothing left behind


def test_write_is_atomic(tmp_path):
    d = str(tmp_path / "set")
    write_face_rec(d, make_images([0, 0, 1]))
    before = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    assert set(before) == {"train.rec", "train.idx", "property"}

    def crashing():
        for i, item in enumerate(make_images([0, 1, 1, 2, 2], seed=9)):
            if i == 3:
                raise RuntimeError("disk on fire")
            yield item
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_face_rec(d, crashing())
    after = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    assert after == before  # old files intact, no temporary files left
    # a new directory: nothing at all appears
    fresh = str(tmp_path / "fresh")
    with pytest.raises(RuntimeError):
        write_face_rec(fresh, crashing())
    assert not os.path.exists(fresh)
    assert sorted(os.listdir(str(tmp_path))) == ["set"]


# -- the fast batch path ---------------------------------------------------------

def _per_sample(ds, positions, flips=None):
    imgs = [ds[i][0] for i in positions]
    if flips is not None:
        imgs = [mx.nd.flip(im, axis=1) if f else im for im, f in zip(imgs, flips)]
    return normalize_batch(mx.nd.stack(*imgs)).asnumpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_fast_path_equals_per_sample(tmp_path, workers):
    d = str(tmp_path)
    write_insightface(d, per_class=(4, 3, 5, 2), fmt=".jpg")
    ds = FaceRecordDataset(d)
    it = FaceRecordIter(ds, batch_size=4, decode_threads=workers)
    assert len(it) == 4
    got = list(it)
    data = np.concatenate([x.asnumpy() for x, _ in got])
    labels = np.concatenate([y.asnumpy() for _, y in got])
    np.testing.assert_array_equal(labels, ds.labels)
    assert got[-1][0].shape == (2, 3, S, S) and got[0][0].dtype == np.float32
    np.testing.assert_array_equal(data, _per_sample(ds, range(len(ds))))
    # MXNet's own decoder gives the same pixels (within JPEG tolerance)
    raw = ds.read_raw(5)
    mx_img = mx.image.imdecode(raw.data).asnumpy().astype(int)
    assert np.abs(mx_img - ds[5][0].asnumpy()).max() <= 2
    it.close()


def test_fast_path_mirror_shuffle_and_sampler(tmp_path):
    d = str(tmp_path)
    write_insightface(d, per_class=(4, 3, 5, 2), fmt=".jpg")
    ds = FaceRecordDataset(d)
    runs = []
    for workers in (0, 2):
        it = FaceRecordIter(ds, batch_size=5, shuffle=True, rand_mirror=True,
                            decode_threads=workers, seed=7, last_batch="discard")
        runs.append([(x.asnumpy(), y.asnumpy()) for x, y in it])
        it.close()
    assert len(runs[0]) == 2  # 14 images, batches of 5, last one dropped
    for (xa, ya), (xb, yb) in zip(*runs):  # threads change nothing
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    flipped = 0
    seen = []
    for x, y in runs[0]:
        for img, lab in zip(x, y):
            # find the source by label and pixels: plain or mirrored
            cands = np.flatnonzero(ds.labels == lab)
            plain = _per_sample(ds, cands)
            mirror = _per_sample(ds, cands, flips=[True] * len(cands))
            hit = [i for i in range(len(cands))
                   if np.array_equal(plain[i], img) or np.array_equal(mirror[i], img)]
            assert len(hit) == 1
            flipped += not np.array_equal(plain[hit[0]], img)
            seen.append(int(cands[hit[0]]))
    assert len(set(seen)) == 10 and 0 < flipped < 10
    # a batch sampler (e.g. P x K) decides the batches
    sampler = [[0, 5, 9], [13, 1]]
    it = FaceRecordIter(ds, batch_sampler=sampler, normalize=False)
    out = list(it)
    assert len(it) == 2 and out[0][0].dtype == np.uint8
    np.testing.assert_array_equal(out[1][0].asnumpy(),
                                  np.stack([ds[13][0].asnumpy(), ds[1][0].asnumpy()]))
    np.testing.assert_array_equal(out[0][1].asnumpy(), ds.labels[[0, 5, 9]])


def test_batchify_with_gluon_dataloader(tmp_path):
    d = str(tmp_path)
    write_plain(d, [0, 1, 2, 3, 2, 1, 0])
    ds = FaceRecordDataset(d)
    loader = gluon.data.DataLoader(ds.raw(), batch_size=3,
                                   batchify_fn=FaceBatchify(ds.image_size))
    data = np.concatenate([x.asnumpy() for x, _ in loader])
    labels = np.concatenate([y.asnumpy() for _, y in loader])
    np.testing.assert_array_equal(labels, ds.labels)
    np.testing.assert_array_equal(data, _per_sample(ds, range(len(ds))))
    raw = ds.raw()[0]
    assert raw.key == ds.keys[0] and raw.source == ds.rec_path


def test_fast_path_size_mismatch(tmp_path):
    d = str(tmp_path)
    items, order = write_plain(d, [0, 1])
    rgb = np.zeros((8, 8, 3), np.uint8)
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"),
                                        os.path.join(d, "train.rec"), "w")
    for k, img in enumerate([items[0][1], rgb]):
        rec.write_idx(k, mx.recordio.pack_img(mx.recordio.IRHeader(0, 0.0, k, 0),
                                              img, img_fmt=".png"))
    rec.close()
    ds = FaceRecordDataset(d)
    with pytest.raises(ValueError, match=r"record 1 is 8x8, but the batch needs "
                       r"16x16"):
        list(FaceRecordIter(ds, batch_size=2))


def test_corrupt_first_image(tmp_path):
    """The size check decodes the first image: a corrupt one is an error that
    names it, or (skip_bad) is left out and the next image is used."""
    d = str(tmp_path)
    key = int(np.random.RandomState(1).permutation(3)[0])
    write_plain(d, [0, 1, 2], payloads={key: b"\xff\xd8\xff" + b"\x01" * 9})
    with pytest.raises(BadImageError, match=rf"record {key} holds 12 bytes"):
        FaceRecordDataset(d)
    ds = FaceRecordDataset(d, skip_bad=True)
    assert len(ds) == 2 and ds.image_size == (S, S)
    assert [k for k, _ in ds.bad_records] == [key]


def test_threaded_dataloader_reads_correctly(tmp_path):
    """DESIGN.md: DataLoader(thread_pool=True) corrupted reads through MXNet's
    RecordIO handle (one shared file position). Our reader uses pread, so
    threads cannot disturb each other."""
    d = str(tmp_path)
    write_insightface(d, per_class=(6, 5, 7))
    ds = FaceRecordDataset(d)
    loader = gluon.data.DataLoader(ds, batch_size=4, num_workers=2,
                                   thread_pool=True)
    got = np.concatenate([x.asnumpy() for x, _ in loader])
    labels = np.concatenate([y.asnumpy() for _, y in loader])
    np.testing.assert_array_equal(got, np.stack([ds[i][0].asnumpy()
                                                 for i in range(len(ds))]))
    np.testing.assert_array_equal(labels, ds.labels)
    it = FaceRecordIter(d, batch_size=18)  # a path works too
    assert next(iter(it))[0].shape == (18, 3, S, S)


def test_face_record_iter_num_workers_is_the_old_name_of_decode_threads(tmp_path):
    d = str(tmp_path)
    write_insightface(d, per_class=(3, 2), fmt=".jpg")
    ds = FaceRecordDataset(d)
    with pytest.warns(DeprecationWarning, match="decode_threads"):
        old = FaceRecordIter(ds, batch_size=5, num_workers=2)
    new = FaceRecordIter(ds, batch_size=5, decode_threads=2)
    for (xa, ya), (xb, yb) in zip(old, new):
        np.testing.assert_array_equal(xa.asnumpy(), xb.asnumpy())
        np.testing.assert_array_equal(ya.asnumpy(), yb.asnumpy())
    old.close()
    new.close()

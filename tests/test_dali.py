"""fr_lib.data.dali: NVIDIA DALI's MXNet reader against the Gluon path.

The CPU pipeline runs without a GPU. References are computed independently of
fr_lib: records read with ``mx.recordio.MXIndexedRecordIO``, decoded with
``cv2.imdecode`` and normalised with NumPy. Pixel differences are allowed up to
the tolerance between two JPEG decoders (DALI's and OpenCV's libjpeg-turbo).
"""
import os
import sys

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx

from fr_lib.data import dali as frdali
from fr_lib.data.recordio import FaceRecordDataset, FaceRecordIter, write_face_rec
from fr_lib.data.synthetic import write_dataset

cv2 = pytest.importorskip("cv2")

# JPEG decoder tolerance, in pixel levels (normalised values times 128).
TOL_MAX = 4
TOL_MEAN = 0.5
N_ID, PER_ID = 6, 5


def need_dali():
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.dali.plugin.mxnet")


@pytest.fixture(scope="module")
def face_set(tmp_path_factory):
    """A synthetic InsightFace-layout set: 6 identities x 5 images, 112x112."""
    d = str(tmp_path_factory.mktemp("dali") / "faces")
    write_dataset(d, num_identities=N_ID, images_per_identity=PER_ID,
                  num_val_pairs=0)
    return d


def reference(rec_dir):
    """Every record read with MXNet's own reader: {key: (label, image)} for the
    image records, decoded by OpenCV and normalised with NumPy, and the keys of
    the records with an empty image."""
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(rec_dir, "train.idx"),
                                        os.path.join(rec_dir, "train.rec"), "r")
    images, empty = {}, []
    for key in rec.keys:
        header, img = mx.recordio.unpack(rec.read_idx(key))
        if not img:
            empty.append(key)
            continue
        bgr = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
        x = (bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - 127.5) / 128
        label = header.label if np.isscalar(header.label) else header.label[0]
        images[key] = (float(label), x)
    rec.close()
    return images, empty


def identify(batch, ref_images):
    """Index into ``ref_images`` of the nearest reference for each image."""
    flat = ref_images.reshape(len(ref_images), -1)
    return [int(np.argmin(np.abs(flat - x.reshape(1, -1)).max(1))) for x in batch]


def assert_close_pixels(a, b):
    diff = np.abs(a - b) * 128
    assert diff.max() <= TOL_MAX, f"max pixel difference {diff.max()}"
    assert diff.mean() <= TOL_MEAN, f"mean pixel difference {diff.mean()}"


def epoch(it):
    xs, ys = [], []
    for data, label in it:
        xs.append(data.asnumpy())
        ys.append(label.asnumpy())
    return np.concatenate(xs), np.concatenate(ys)


# -- without DALI ---------------------------------------------------------------

def test_missing_dali_gives_pip_command(face_set, monkeypatch):
    for name in ("nvidia.dali", "nvidia.dali.plugin.mxnet"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    assert frdali.dali_available() is False
    with pytest.raises(ImportError, match=r"nvidia-dali-cuda120==1\.35\.0"):
        frdali.DaliFaceIter(face_set)


def test_fr_lib_import_does_not_import_dali():
    code = ("import sys, fr_lib; assert 'nvidia.dali' not in sys.modules; "
            "assert callable(fr_lib.data.DaliFaceIter)")
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dali_index_lists_image_records_only(face_set, tmp_path):
    images, empty = reference(face_set)
    assert len(images) == N_ID * PER_ID and len(empty) == 1 + N_ID
    path = frdali.write_dali_index(face_set, str(tmp_path / "img.idx"))
    lines = [ln.split("\t") for ln in open(path).read().splitlines()]
    keys = [int(k) for k, _ in lines]
    assert sorted(keys) == sorted(images)
    assert not set(keys) & set(empty)
    # The offsets are the ones MXNet's index holds for these keys.
    full = dict(ln.split("\t") for ln in
                open(os.path.join(face_set, "train.idx")).read().splitlines())
    assert all(full[k] == off for k, off in lines)
    mtime = os.stat(path).st_mtime_ns
    assert frdali.write_dali_index(face_set, path) == path
    assert os.stat(path).st_mtime_ns == mtime  # unchanged content: not rewritten


def test_dali_index_default_path(face_set):
    path = frdali.write_dali_index(face_set)
    assert path == os.path.join(face_set, "train.dali.idx")


# -- the DALI CPU pipeline ------------------------------------------------------

def test_cpu_pipeline_matches_gluon_path(face_set):
    need_dali()
    images, _ = reference(face_set)
    keys = sorted(images)  # file order = key order in this rec
    ref_x = np.stack([images[k][1] for k in keys])
    ref_y = np.asarray([images[k][0] for k in keys], np.float32)
    it = frdali.DaliFaceIter(face_set, batch_size=8, device="cpu", num_threads=2)
    assert it.device == "cpu" and len(it) == 4
    x, y = epoch(it)
    assert x.dtype == np.float32 and x.shape == (N_ID * PER_ID, 3, 112, 112)
    np.testing.assert_array_equal(y, ref_y)
    assert_close_pixels(x, ref_x)
    gx, gy = epoch(FaceRecordIter(FaceRecordDataset(face_set), batch_size=8))
    np.testing.assert_array_equal(y, gy)
    assert_close_pixels(x, gx)
    # A second epoch gives the same images again.
    x2, y2 = epoch(it)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(x2, x)


def test_header_and_identity_records_are_never_decoded(face_set, tmp_path):
    need_dali()
    it = frdali.DaliFaceIter(face_set, batch_size=64, device="cpu")
    x, y = epoch(it)
    assert len(x) == N_ID * PER_ID  # not 30 + 1 header + 6 identity records
    assert set(y.tolist()) == set(range(N_ID))
    # The pitfall itself: InsightFace's own index makes DALI decode the empty
    # header record and fail.
    with pytest.raises(RuntimeError, match="write_dali_index"):
        frdali.DaliFaceIter(face_set, batch_size=64, device="cpu",
                            index_path=os.path.join(face_set, "train.idx"))


@pytest.mark.parametrize("num_shards", [2, 4])
def test_shards_are_disjoint_and_complete(face_set, num_shards):
    need_dali()
    images, _ = reference(face_set)
    keys = sorted(images)
    ref_x = np.stack([images[k][1] for k in keys])
    seen = []
    for shard in range(num_shards):
        it = frdali.DaliFaceIter(face_set, batch_size=3, shard_id=shard,
                                 num_shards=num_shards, device="cpu")
        x, y = epoch(it)
        assert len(x) == it.shard_size
        ids = identify(x, ref_x)
        assert_close_pixels(x, ref_x[ids])
        np.testing.assert_array_equal(y, [images[keys[i]][0] for i in ids])
        seen.append(ids)
    flat = [i for part in seen for i in part]
    assert sorted(flat) == list(range(len(keys)))  # disjoint and complete


def test_rand_mirror_flips_some_images(face_set):
    need_dali()
    images, _ = reference(face_set)
    ref_x = np.stack([images[k][1] for k in sorted(images)])
    it = frdali.DaliFaceIter(face_set, batch_size=64, rand_mirror=True, seed=1,
                             device="cpu")
    x, _ = epoch(it)
    flipped = [np.abs(a - r[:, :, ::-1]).max() < np.abs(a - r).max()
               for a, r in zip(x, ref_x)]
    assert 0 < sum(flipped) < len(x)
    for a, r, f in zip(x, ref_x, flipped):
        assert_close_pixels(a, r[:, :, ::-1] if f else r)


def test_shuffle_gives_each_image_once_per_epoch(face_set):
    need_dali()
    images, _ = reference(face_set)
    ref_x = np.stack([images[k][1] for k in sorted(images)])
    it = frdali.DaliFaceIter(face_set, batch_size=8, shuffle=True, seed=3,
                             device="cpu", shuffle_buffer=16)
    orders = []
    for _ in range(2):
        x, _ = epoch(it)
        ids = identify(x, ref_x)
        assert sorted(ids) == list(range(len(ref_x)))
        orders.append(ids)
    assert orders[0] != list(range(len(ref_x))) and orders[0] != orders[1]


def test_discard_last_batch(face_set):
    need_dali()
    it = frdali.DaliFaceIter(face_set, batch_size=8, last_batch="discard",
                             device="cpu")
    assert len(it) == 3
    sizes = [x.shape[0] for x, _ in it]
    assert sizes == [8, 8, 8]


def test_plain_rec_with_array_labels(face_set, tmp_path):
    need_dali()
    images, _ = reference(face_set)
    keys = sorted(images)
    ds = FaceRecordDataset(face_set)
    items = [(np.asarray([lab, 7.0 + i], np.float32), ds.read_raw(i).data)
             for i, lab in enumerate(ds.labels.tolist())]
    info = write_face_rec(str(tmp_path / "plain"), items, layout="plain")
    it = frdali.DaliFaceIter(info["rec"], batch_size=16, device="cpu")
    assert it.index_path.endswith("train.dali.idx")
    x, y = epoch(it)
    np.testing.assert_array_equal(y, [images[k][0] for k in keys])
    assert_close_pixels(x, np.stack([images[k][1] for k in keys]))


def test_bad_arguments(face_set):
    need_dali()
    with pytest.raises(ValueError, match="shard_id"):
        frdali.DaliFaceIter(face_set, shard_id=2, num_shards=2)
    with pytest.raises(ValueError, match="device"):
        frdali.DaliFaceIter(face_set, device="tpu")
    if not fr_lib.utils.list_gpus():
        with pytest.raises(ValueError, match="device='cpu'"):
            frdali.DaliFaceIter(face_set, device="gpu")
        assert frdali.DaliFaceIter(face_set, device="auto").device == "cpu"

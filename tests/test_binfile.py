"""fr_lib.data.binfile (verification .bin files) and fr_lib.data.transforms
(the pixel convention the readers produce).

.bin fixtures are written as the tools write them: ``pickle.dump((bins,
issame_list), f, protocol=...)`` in Python 3, and, for Python 2 files, the
protocol-2 opcodes cPickle emits for ``str`` (SHORT_BINSTRING / BINSTRING),
crafted by hand.
"""
import os
import pickle
import re
import struct

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx

from fr_lib.data.binfile import VerificationSet, read_bin, write_bin
from fr_lib.data.recordio import BadImageError
from fr_lib.data.transforms import (PIXEL_MEAN, PIXEL_SCALE, adjust_color,
                                    color_jitter, decode_image, denormalize,
                                    flip_batch, normalize_batch, random_flip)

cv2 = pytest.importorskip("cv2")

S = 12


def images(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, S, S, 3)).astype(np.uint8)


def png(rgb):
    return cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()


def expected(raw):
    """The pixel convention computed independently, in float64."""
    return ((raw.astype(np.float64) - 127.5) / 128).transpose(0, 3, 1, 2)


def python2_pickle(bins, issame):
    """What Python 2's cPickle.dump((bins, issame), f, protocol=2) writes when
    ``bins`` are ``str``: PROTO 2, lists built with MARK ... APPENDS, strings as
    SHORT_BINSTRING (< 256 bytes) or BINSTRING, booleans as NEWTRUE/NEWFALSE,
    BINPUT after every container and string, TUPLE2, STOP."""
    out = bytearray(b"\x80\x02")
    memo = [0]

    def put():
        out.extend(b"q" + bytes([memo[0]]))
        memo[0] += 1
    out += b"]"
    put()
    out += b"("
    for b in bins:
        if len(b) < 256:
            out += b"U" + bytes([len(b)]) + b
        else:
            out += b"T" + struct.pack("<i", len(b)) + b
        put()
    out += b"e]"
    put()
    out += b"("
    for s in issame:
        out += b"\x88" if s else b"\x89"
    out += b"e\x86"
    put()
    out += b"."
    return bytes(out)


# -- reading .bin -----------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickles(tmp_path, protocol):
    raw = images(6)
    issame = [True, False, True]
    path = str(tmp_path / "lfw.bin")
    with open(path, "wb") as f:
        pickle.dump(([png(im) for im in raw], issame), f, protocol=protocol)
    vs = read_bin(path, image_size=(S, S), keep_raw=True)
    assert isinstance(vs, VerificationSet) and vs.name == "lfw" and len(vs) == 3
    np.testing.assert_array_equal(vs.issame, issame)
    assert vs.issame.dtype == bool
    np.testing.assert_array_equal(vs.raw, raw)
    assert vs.images.shape == (6, 3, S, S) and vs.images.dtype == np.float32
    np.testing.assert_array_equal(vs.images.asnumpy(), expected(raw))


def test_python2_pickle(tmp_path):
    raw = images(4)
    raw[1] = 200  # a flat image: its PNG is < 256 bytes (SHORT_BINSTRING)
    bins = [png(im) for im in raw]
    assert len(bins[1]) < 256 <= len(bins[0])
    data = python2_pickle(bins, [False, True])
    with pytest.raises(UnicodeDecodeError):  # what broke gluon-face
        pickle.loads(data)
    assert pickle.loads(data, encoding="bytes")[0] == bins  # a faithful fixture
    path = str(tmp_path / "agedb_30.bin")
    with open(path, "wb") as f:
        f.write(data)
    vs = read_bin(path, image_size=(S, S), keep_raw=True)
    np.testing.assert_array_equal(vs.raw, raw)
    np.testing.assert_array_equal(vs.issame, [False, True])
    assert vs.name == "agedb_30"


def test_numpy_array_entries(tmp_path):
    raw = images(4)
    issame = np.array([True, False])
    variants = {
        "hwc_list": [im for im in raw],                     # decoded arrays
        "one_array": raw,                                   # (2N, H, W, 3)
        "jpeg_arrays": [np.frombuffer(png(im), np.uint8) for im in raw],
    }
    for name, bins in variants.items():
        path = str(tmp_path / f"{name}.bin")
        with open(path, "wb") as f:
            pickle.dump((bins, issame), f, protocol=4)
        vs = read_bin(path, image_size=(S, S), keep_raw=True)
        np.testing.assert_array_equal(vs.raw, raw, err_msg=name)
        np.testing.assert_array_equal(vs.issame, issame)


def test_count_mismatch(tmp_path):
    path = str(tmp_path / "cfp_fp.bin")
    with open(path, "wb") as f:
        pickle.dump(([png(im) for im in images(5)], [True, False]), f)
    with pytest.raises(ValueError, match=re.escape(path) + r": 5 images but 2 "
                       r"pairs in issame_list; .* \(4\)"):
        read_bin(path, image_size=(S, S))


def test_decode_failure_names_entry(tmp_path):
    bins = [png(im) for im in images(4)]
    bins[3] = b"\xff\xd8garbage"
    path = str(tmp_path / "calfw.bin")
    with open(path, "wb") as f:
        pickle.dump((bins, [True, True]), f)
    with pytest.raises(BadImageError, match=re.escape(path) + r": entry 3 \(9 "
                       r"bytes\) is not a decodable image"):
        read_bin(path, image_size=(S, S))


def test_wrong_size_and_resize(tmp_path):
    path = str(tmp_path / "x.bin")
    write_bin(path, images(2), [True], encode=False)
    with pytest.raises(ValueError, match=r"entry 0 is 12x12, expected 24x20 "
                       r"\(pass resize=True"):
        read_bin(path, image_size=(24, 20))
    vs = read_bin(path, image_size=(24, 20), resize=True)
    assert vs.images.shape == (2, 3, 24, 20)


def test_bad_structure_and_unsafe_pickle(tmp_path):
    path = str(tmp_path / "bad.bin")
    with open(path, "wb") as f:
        pickle.dump({"bins": []}, f)
    with pytest.raises(ValueError, match=r"expected a pickled pair \(bins, "
                       r"issame_list\), found dict"):
        read_bin(path)
    with open(path, "wb") as f:
        pickle.dump(([b"", b""], ["yes"]), f)
    with pytest.raises(ValueError, match="issame_list must be a flat list of "
                       "booleans"):
        read_bin(path)
    with open(path, "wb") as f:  # a pickle that would call os.system
        f.write(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85R.")
    with pytest.raises(ValueError, match=r"refers to os\.system, which a \.bin "
                       r"verification file never needs"):
        read_bin(path)
    with open(path, "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueError, match=re.escape(path) + ": not a readable"):
        read_bin(path)


def test_pairs_and_batches(tmp_path):
    raw = images(6)
    path = write_bin(str(tmp_path / "p.bin"), raw, [True, False, False],
                     encode=False)
    vs = read_bin(path, image_size=(S, S))
    pairs = list(vs)
    assert len(pairs) == 3 and [p[2] for p in pairs] == [True, False, False]
    np.testing.assert_array_equal(pairs[1][0].asnumpy(), expected(raw[2:3])[0])
    np.testing.assert_array_equal(pairs[1][1].asnumpy(), expected(raw[3:4])[0])
    batches = list(vs.batches(batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    for k, (x, xf) in enumerate(batches):
        ref = expected(raw[4 * k:4 * k + 4])
        np.testing.assert_array_equal(x.asnumpy(), ref)
        np.testing.assert_array_equal(xf.asnumpy(), ref[:, :, :, ::-1])
    only = list(vs.batches(batch_size=6, flip=False))
    assert len(only) == 1 and isinstance(only[0], mx.nd.NDArray)
    assert "pairs=3" in repr(vs)


# -- writing .bin -------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
def test_write_bin_roundtrip(tmp_path, protocol):
    raw = images(4)
    path = str(tmp_path / "w.bin")
    write_bin(path, raw, [True, False], protocol=protocol)  # JPEG-encoded
    with open(path, "rb") as f:
        bins, issame = pickle.load(f)
    assert issame == [True, False] and all(isinstance(b, bytes) for b in bins)
    assert bins[0][:3] == b"\xff\xd8\xff"
    vs = read_bin(path, image_size=(S, S), keep_raw=True)
    for b, got in zip(bins, vs.raw):  # exactly what the stored JPEGs decode to
        np.testing.assert_array_equal(got, decode_image(b))
    # bytes in, the same bytes stored
    write_bin(path, bins, issame)
    with open(path, "rb") as f:
        assert pickle.load(f)[0] == bins


def test_write_bin_errors_are_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.bin")
    write_bin(path, images(2), [True])
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match=r"3 images but 1 pairs in issame; need "
                       r"exactly 2 images"):
        write_bin(path, images(3), [True])
    with pytest.raises(TypeError, match="image 1: expected bytes or a uint8"):
        write_bin(path, [png(images(1)[0]), "text"], [True])

    import fr_lib.data.binfile as binfile
    import fr_lib.utils.fileio as fileio

    def fail_to_pickle(obj, protocol=None):
        raise RuntimeError("cannot pickle")
    with monkeypatch.context() as m:
        m.setattr(binfile.pickle, "dumps", fail_to_pickle)
        with pytest.raises(RuntimeError, match="cannot pickle"):
            write_bin(path, [b"x", b"y"], [False])
    assert open(path, "rb").read() == before

    def power_cut(fd):  # the new bytes are in the temporary file, then a crash
        raise RuntimeError("power cut")
    monkeypatch.setattr(fileio.os, "fsync", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        write_bin(path, [b"x", b"y"], [False])
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(str(tmp_path)) == ["keep.bin"]
    # permissions follow the umask like an ordinary open(), not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# -- the pixel convention (transforms) --------------------------------------------

def test_normalize_by_hand():
    x = np.zeros((1, 2, 2, 3), np.uint8)
    x[0, 0, 0] = [0, 128, 255]      # R G B of the top-left pixel
    x[0, 1, 1] = [64, 191, 127]
    got = normalize_batch(x)
    assert got.shape == (1, 3, 2, 2) and got.dtype == np.float32
    # (0 - 127.5)/128 = -0.99609375, (128 - 127.5)/128 = 0.00390625, ...
    np.testing.assert_array_equal(got[0, :, 0, 0], [-0.99609375, 0.00390625,
                                                    0.99609375])
    np.testing.assert_array_equal(got[0, :, 1, 1], [-0.49609375, 0.49609375,
                                                    -0.00390625])
    np.testing.assert_array_equal(got[0, :, 0, 1], [-0.99609375] * 3)
    nd = normalize_batch(mx.nd.array(x, dtype=np.uint8))
    assert isinstance(nd, mx.nd.NDArray)
    np.testing.assert_array_equal(nd.asnumpy(), got)
    one = normalize_batch(x[0])  # a single HWC image -> CHW
    np.testing.assert_array_equal(one, got[0])
    assert PIXEL_MEAN == 127.5 and PIXEL_SCALE == 0.0078125
    np.testing.assert_array_equal(denormalize(got), x)
    np.testing.assert_array_equal(denormalize(nd).asnumpy(), x)
    with pytest.raises(ValueError, match=r"expects \(H, W, C\) or \(N, H, W, C\)"):
        normalize_batch(np.zeros((2, 2), np.uint8))


def test_flip_by_hand():
    hwc = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    flipped = flip_batch(hwc)  # uint8: NHWC, W is axis 2
    np.testing.assert_array_equal(flipped[0, 0, 0], hwc[0, 0, 2])
    np.testing.assert_array_equal(flipped[0, 1, 2], hwc[0, 1, 0])
    chw = normalize_batch(hwc)  # float: NCHW, W is axis 3
    np.testing.assert_array_equal(flip_batch(chw), normalize_batch(flipped))
    nd = flip_batch(mx.nd.array(chw))
    np.testing.assert_array_equal(nd.asnumpy(), normalize_batch(flipped))
    np.testing.assert_array_equal(flip_batch(hwc[0]), flipped[0])  # one HWC image
    np.testing.assert_array_equal(flip_batch(chw[0]), normalize_batch(flipped[0]))
    with pytest.raises(ValueError, match="layout NCHW needs a 4-d array"):
        flip_batch(chw[0], layout="NCHW")


def test_random_flip():
    x = np.arange(8 * 1 * 2 * 3, dtype=np.uint8).reshape(8, 1, 2, 3)
    np.testing.assert_array_equal(random_flip(x, p=0.0, rng=0), x)
    np.testing.assert_array_equal(random_flip(x, p=1.0, rng=0), flip_batch(x))
    got = random_flip(x, rng=3)
    coins = np.random.RandomState(3).uniform(size=8) < 0.5  # the same draws
    assert 0 < coins.sum() < 8
    for i in range(8):
        np.testing.assert_array_equal(got[i], x[i, :, ::-1] if coins[i] else x[i])
    nd = random_flip(mx.nd.array(x, dtype=np.uint8), rng=3)
    np.testing.assert_array_equal(nd.asnumpy(), got)
    np.testing.assert_array_equal(random_flip(x[0], p=1.0), x[0, :, ::-1])


def test_adjust_color_by_hand():
    # one image, two pixels: (100, 50, 200) and (0, 0, 0)
    x = np.array([[[100, 50, 200], [0, 0, 0]]], np.float32)
    # brightness 1.1: every value x 1.1
    np.testing.assert_allclose(adjust_color(x, brightness=1.1),
                               [[[110, 55, 220], [0, 0, 0]]], rtol=1e-6)
    # contrast 0.5 around the mean luma: luma of pixel 1 = 0.299*100 +
    # 0.587*50 + 0.114*200 = 29.9 + 29.35 + 22.8 = 82.05, pixel 2 = 0
    # -> mean 41.025; x -> 0.5 x + 0.5 * 41.025 = 0.5 x + 20.5125
    np.testing.assert_allclose(
        adjust_color(x, contrast=0.5),
        [[[70.5125, 45.5125, 120.5125], [20.5125, 20.5125, 20.5125]]], rtol=1e-5)
    # saturation 0: every pixel becomes its luma
    np.testing.assert_allclose(adjust_color(x, saturation=0.0),
                               [[[82.05] * 3, [0] * 3]], rtol=1e-5)
    # uint8 input: rounded and clipped (200 x 1.5 = 300 -> 255)
    u = x.astype(np.uint8)
    np.testing.assert_array_equal(adjust_color(u, brightness=1.5),
                                  [[[150, 75, 255], [0, 0, 0]]])
    # per-image factors on a batch, NDArray in and out
    b = mx.nd.array(np.stack([u, u]), dtype=np.uint8)
    out = adjust_color(b, brightness=[1.0, 0.5])
    assert isinstance(out, mx.nd.NDArray) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.asnumpy()[1], [[[50, 25, 100], [0, 0, 0]]])
    np.testing.assert_array_equal(out.asnumpy()[0], u)


def test_color_jitter():
    x = images(3)
    np.testing.assert_array_equal(color_jitter(x, 0, 0, 0, rng=0), x)
    # brightness only: each image scaled by one factor within [0.9, 1.1]
    f = np.random.RandomState(5).uniform(0.9, 1.1, size=3)
    got = color_jitter(x, brightness=0.1, contrast=0, saturation=0, rng=5)
    np.testing.assert_array_equal(
        got, np.clip(np.round(x.astype(np.float32) * f.astype(np.float32)
                              [:, None, None, None]), 0, 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"contrast range must be in \[0, 1\)"):
        color_jitter(x, contrast=1.5)

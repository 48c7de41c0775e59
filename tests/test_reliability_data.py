"""The data tools under the conditions issue reports found them failing:
``property`` files written by InsightFace's tools, EXIF-rotated JPEGs on the
Gluon and DALI paths, ``folder2rec`` killed midway, folders and the umask,
``fr-data`` errors, and the two names of emore's folder."""
import io
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
import mxnet as mx

from fr_lib.data import cli
from fr_lib.data.recordio import (FaceRecordDataset, FaceRecordIter,
                                  read_property, remove_stale_work_dirs,
                                  write_face_rec)
from fr_lib.data.root import get_dataset_dir, resolve_data_dir
from fr_lib.data.tools import jpeg_orientation

cv2 = pytest.importorskip("cv2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_CLI = [sys.executable, "-m", "fr_lib.data.cli"]


def smooth_image(h, w, seed=0):
    """A smooth, asymmetric RGB picture: four coloured quadrants blurred, so
    JPEG keeps it within a few levels and every rotation is distinguishable."""
    rng = np.random.RandomState(seed)
    img = cv2.resize(rng.randint(0, 256, (2, 3, 3)).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def jpeg(img, quality=95):
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def exif_segment(orientation, big_endian=False):
    """An APP1 Exif segment holding only the orientation tag, built by hand
    from the TIFF/EXIF layout (independently of any EXIF library)."""
    o = ">" if big_endian else "<"
    import struct
    tiff = (b"MM" if big_endian else b"II") + struct.pack(o + "HI", 42, 8)
    tiff += struct.pack(o + "H", 1)  # one entry in IFD0
    tiff += struct.pack(o + "HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(o + "I", 0)  # no next IFD
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_exif(jpeg_bytes, orientation, big_endian=False):
    """The JPEG with an Exif segment inserted after SOI."""
    return jpeg_bytes[:2] + exif_segment(orientation, big_endian) + jpeg_bytes[2:]


# Orientation tag -> how the stored pixels become the upright picture
# (EXIF 2.3, table "Orientation"): 3 turns 180 degrees, 6 a quarter turn
# clockwise, 8 a quarter turn counter-clockwise.
UPRIGHT = {1: lambda a: a, 3: lambda a: a[::-1, ::-1],
           6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}


def assert_close(a, b, max_diff=20, mean_diff=2.0):
    """``a`` is ``b`` up to JPEG error, and clearly not ``b`` upside down."""
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, \
        (diff.max(), diff.mean())
    turned = np.abs(a.astype(np.int32) - b[::-1, ::-1].astype(np.int32))
    assert turned.mean() > 10 * max(diff.mean(), 1), turned.mean()


# -- 1. property files written by other tools -----------------------------------

@pytest.fixture
def small_rec(tmp_path):
    d = str(tmp_path / "rec")
    items = [(c, smooth_image(16, 16, 10 * c + k)) for c in range(3) for k in range(2)]
    write_face_rec(d, items)
    return d


@pytest.mark.parametrize("text", [
    # InsightFace python-package/insightface/data/rec_builder.py: C,H,W then
    # the number of records written
    "3,16,16\n7\n",
    # recognition/arcface_mxnet/common/rec2shufrec.py: C,112,112 (here 16),
    # the image count, 'shuffled' and the date
    "3,16,16\n6\nshuffled\n2021-06-01 12:00:00.123456\n",
])
def test_property_with_more_lines_is_read(small_rec, text):
    prop = os.path.join(small_rec, "property")
    with open(prop, "w") as f:
        f.write(text)
    assert read_property(prop) == (3, 16, 16)
    ds = FaceRecordDataset(small_rec, check="full")
    assert ds.property == (3, 16, 16) and len(ds) == 6


def test_property_first_line_is_still_checked(small_rec):
    prop = os.path.join(small_rec, "property")
    with open(prop, "w") as f:
        f.write("7\n3,16,16\n")
    with pytest.raises(ValueError, match=re.escape(prop) + r": expected "
                       r"'num_classes,height,width' .* first line, found '7'"):
        read_property(prop)


# -- 2. EXIF-rotated JPEGs --------------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("big_endian", [False, True])
def test_jpeg_orientation_reads_the_tag(orientation, big_endian):
    data = with_exif(jpeg(smooth_image(8, 16)), orientation, big_endian)
    assert jpeg_orientation(data) == orientation
    assert jpeg_orientation(jpeg(smooth_image(8, 16))) == 1
    assert jpeg_orientation(b"\x89PNG\r\n\x1a\n") == 1
    assert jpeg_orientation(data[:30]) in (1, orientation)  # truncated: no crash


def test_jpeg_orientation_of_a_pil_file():
    Image = pytest.importorskip("PIL.Image")
    pil = Image.fromarray(smooth_image(16, 32))
    exif = pil.getexif()
    exif[0x010F] = "Camera"  # another tag before the orientation
    exif[0x0112] = 8
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    assert jpeg_orientation(buf.getvalue()) == 8


@pytest.fixture
def rotated_photos(tmp_path):
    """Two identities; each photo stored on its side with an EXIF tag (6, 8)
    or upright (1). Returns (folder, {path: upright reference}) ."""
    root = tmp_path / "photos"
    refs = {}
    for name, tags in (("ann", (6, 8)), ("bob", (1, 6))):
        (root / name).mkdir(parents=True)
        for k, tag in enumerate(tags):
            upright = smooth_image(48, 32, seed=len(refs))  # portrait, 48x32
            stored = {1: upright, 6: np.rot90(upright, 1),
                      8: np.rot90(upright, -1)}[tag]
            assert np.array_equal(UPRIGHT[tag](stored), upright)
            path = str(root / name / f"{k}.jpg")
            data = jpeg(np.ascontiguousarray(stored))
            with open(path, "wb") as f:
                f.write(with_exif(data, tag) if tag != 1 else data)
            refs[path] = upright
    return str(root), refs


def test_folder2rec_stores_exif_rotated_photos_upright(rotated_photos, tmp_path,
                                                       capsys):
    root, refs = rotated_photos
    out = str(tmp_path / "rec")
    assert cli.main(["folder2rec", root, out, "--workers", "1"]) == 0
    capsys.readouterr()
    ds = FaceRecordDataset(out, check="full")
    assert ds.property == (2, 48, 32)
    for i, path in enumerate(sorted(refs)):
        raw = ds.read_raw(i).data
        assert jpeg_orientation(raw) == 1
        # MXNet's own decoder ignores EXIF: it must see the upright face too.
        # (Re-encoded once more than the reference: a wider JPEG tolerance.)
        assert_close(mx.image.imdecode(raw).asnumpy(), refs[path], 28, 3.0)
        assert_close(ds[i][0].asnumpy(), refs[path], 28, 3.0)
    # the upright photo kept its bytes (no second lossy step)
    with open(sorted(refs)[2], "rb") as f:
        assert ds.read_raw(2).data == f.read()


@pytest.fixture
def rotated_rec(tmp_path):
    """A plain rec written by "another tool": it holds EXIF-rotated JPEG
    bytes as they are. Returns (folder, upright references in record order)."""
    refs, items = [], []
    for k, tag in enumerate((6, 8, 3, 1, 6, 8)):
        upright = smooth_image(48, 32, seed=k)
        stored = np.ascontiguousarray({1: upright, 3: upright[::-1, ::-1],
                                       6: np.rot90(upright, 1),
                                       8: np.rot90(upright, -1)}[tag])
        assert np.array_equal(UPRIGHT[tag](stored), upright)
        data = jpeg(stored)
        items.append((k % 2, with_exif(data, tag) if tag != 1 else data))
        refs.append(upright)
    d = str(tmp_path / "rotated")
    write_face_rec(d, items, layout="plain")
    return d, np.stack(refs)


def test_gluon_path_applies_exif(rotated_rec):
    d, refs = rotated_rec
    ds = FaceRecordDataset(d, check="full")
    assert ds.image_size == (48, 32)
    for i in range(len(ds)):
        assert_close(ds[i][0].asnumpy(), refs[i])


def test_dali_cpu_decoders_do_not_apply_exif(rotated_rec):
    """The fact behind the design: DALI 1.35's decoders, on the CPU, do not
    give the upright picture of a rotated JPEG (if a later DALI does, this
    test says so and DaliFaceIter may stop refusing such recs)."""
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, types
    d, refs = rotated_rec
    ds = FaceRecordDataset(d)
    data = ds.read_raw(0).data  # orientation 6
    assert jpeg_orientation(data) == 6
    for decode in (lambda x: fn.decoders.image(x, device="cpu",
                                               output_type=types.RGB),
                   lambda x: fn.experimental.decoders.image(
                       x, device="cpu", output_type=types.RGB,
                       adjust_orientation=True)):
        pipe = dali.Pipeline(batch_size=1, num_threads=1, device_id=None)
        with pipe:
            enc = fn.external_source(
                source=lambda: [np.frombuffer(data, np.uint8)], batch=True,
                dtype=types.UINT8)
            pipe.set_outputs(decode(enc))
        pipe.build()
        out = np.array(pipe.run()[0].as_array()[0])
        upright = out.shape == refs[0].shape and \
            np.abs(out.astype(int) - refs[0]).mean() < 5
        assert not upright


def test_dali_and_gluon_agree_on_exif_rotated_jpegs(rotated_rec, tmp_path):
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.dali.plugin.mxnet")
    from fr_lib.data.dali import DaliFaceIter
    from fr_lib.data.recordio import find_rotated_jpegs, write_upright_rec
    d, refs = rotated_rec
    assert find_rotated_jpegs(FaceRecordDataset(d)) == \
        [(0, 6), (1, 8), (2, 3), (4, 6), (5, 8)]
    # DALI would decode them sideways: refused, with the record and the fix
    with pytest.raises(ValueError, match=r"5 image record\(s\) hold a JPEG stored "
                       r"rotated .* record 0 \(orientation 6\).*write_upright_rec"):
        DaliFaceIter(d, batch_size=3, device="cpu", num_threads=1)
    up = str(tmp_path / "upright")
    info = write_upright_rec(d, up)
    assert info["rotated"] == 5 and info["layout"] == "plain"
    ds = FaceRecordDataset(up, check="full")
    assert find_rotated_jpegs(ds) == [] and ds.labels.tolist() == [0, 1] * 3
    with open(os.path.join(d, "train.rec"), "rb") as f:
        assert ds.read_raw(3).data in f.read()  # the upright one kept its bytes
    it = DaliFaceIter(up, batch_size=3, device="cpu", num_threads=1)
    dali_x = np.concatenate([x.asnumpy() for x, _ in it])
    gluon_x = np.concatenate([x.asnumpy() for x, _ in
                              FaceRecordIter(FaceRecordDataset(d), batch_size=3)])
    assert dali_x.shape == gluon_x.shape == (6, 3, 48, 32)
    ref = (refs.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128
    for x in (dali_x, gluon_x):  # both upright (one more JPEG step for DALI's)
        diff = np.abs(x - ref) * 128
        assert diff.max() <= 28 and diff.mean() <= 3, (diff.max(), diff.mean())
        turned = np.abs(x - ref[:, :, ::-1, ::-1]) * 128
        assert turned.mean() > 30, turned.mean()


# -- 3. folder2rec killed midway; the umask ----------------------------------------

def _fifo_folder(tmp_path, n=5):
    """Identity a/ with n images, then b/x.jpg: a FIFO, whose read blocks, so
    a folder2rec subprocess is reliably caught with a half-written rec."""
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for k in range(n):
        with open(root / "a" / f"{k}.jpg", "wb") as f:
            f.write(jpeg(smooth_image(32, 32, k)))
    os.mkfifo(root / "b" / "x.jpg")
    with open(root / "b" / "y.jpg", "wb") as f:
        f.write(jpeg(smooth_image(32, 32, 99)))
    return root


def _temp_dirs(*folders):
    return sorted(os.path.join(f, n) for f in folders if os.path.isdir(f)
                  for n in os.listdir(f) if n.endswith(".tmp"))


def _start_and_wait_for_work_dir(args, where, timeout=120):
    proc = subprocess.Popen(DATA_CLI + ["folder2rec"] + args, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while time.time() - t0 < timeout:
        tmp = _temp_dirs(*where)
        if tmp and os.path.isfile(os.path.join(tmp[0], "train.rec")) and \
                os.path.getsize(os.path.join(tmp[0], "train.rec")) > 1000:
            return proc, tmp
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("folder2rec never reached the blocking image: "
                         + proc.communicate()[1][-2000:])


@pytest.mark.parametrize("existing", [False, True])
def test_folder2rec_killed_midway_is_cleaned_by_the_next_run(tmp_path, existing):
    root = _fifo_folder(tmp_path)
    out = tmp_path / "out"
    if existing:  # a previous complete output: the work dir is inside it
        (tmp_path / "first").mkdir()
        (tmp_path / "first" / "a").symlink_to(root / "a")
        assert cli.main(["folder2rec", str(tmp_path / "first"), str(out),
                         "--workers", "1"]) == 0
        before = (out / "train.rec").read_bytes()
    proc, tmp = _start_and_wait_for_work_dir(
        [str(root), str(out), "--workers", "1"], [str(tmp_path), str(out)])
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate()
    assert _temp_dirs(str(tmp_path), str(out)) == tmp  # the reported leftover
    assert (out / "train.rec").read_bytes() == before if existing \
        else not out.exists()
    # the next run (the FIFO replaced by nothing) removes it and succeeds
    os.remove(root / "b" / "x.jpg")
    done = subprocess.run(DATA_CLI + ["folder2rec", str(root), str(out),
                                      "--workers", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"removed {tmp[0]}, left by an earlier run that was killed" in done.stdout
    assert _temp_dirs(str(tmp_path), str(out)) == []
    ds = FaceRecordDataset(str(out), check="full")
    np.testing.assert_array_equal(ds.labels, [0] * 5 + [1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_folder2rec_sigterm_removes_its_temporary_output(tmp_path, signum):
    root = _fifo_folder(tmp_path)
    out = tmp_path / "out"
    proc, tmp = _start_and_wait_for_work_dir(
        [str(root), str(out), "--workers", "2", "--chunksize", "1"],
        [str(tmp_path)])
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == \
        "fr-data folder2rec: terminated (temporary outputs removed)"
    assert "Traceback" not in err
    assert _temp_dirs(str(tmp_path)) == [] and not out.exists()


def test_stale_work_dirs_of_live_or_foreign_writers_are_kept(tmp_path):
    out = str(tmp_path / "set")
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".set.{host}-{dead.pid}.abc123.tmp",
                 "live": f".set.{host}-{live.pid}.abc123.tmp",
                 "other_host": f".set.otherhost-{dead.pid}.abc123.tmp",
                 "other_set": f".sets.{host}-{dead.pid}.abc123.tmp",
                 "unknown": ".set.abc123.tmp",
                 # the form of older versions: no writer named, judged by age
                 "legacy_old": ".set.k2j4_9xa.tmp",
                 "legacy_recent": ".set.q8w7e6r5.tmp"}
        for n in names.values():
            os.makedirs(os.path.join(str(tmp_path), n, "x"))
            with open(os.path.join(str(tmp_path), n, "train.rec"), "wb") as f:
                f.write(b"\0" * 100)
        two_hours_ago = time.time() - 7200
        old = os.path.join(str(tmp_path), names["legacy_old"])
        for p in (old, os.path.join(old, "x"), os.path.join(old, "train.rec")):
            os.utime(p, (two_hours_ago, two_hours_ago))
        removed = remove_stale_work_dirs(out)
    finally:
        live.kill()
        live.wait()
    gone = {names["dead"], names["legacy_old"]}
    assert sorted(removed) == sorted(os.path.join(str(tmp_path), n) for n in gone)
    left = set(os.listdir(str(tmp_path)))
    assert left == set(names.values()) - gone


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_data_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        info = write_face_rec(str(tmp_path / "new" / "rec"),
                              [(0, smooth_image(16, 16))])
        cli.main(["synthetic", str(tmp_path / "synth"), "--identities", "2",
                  "--images", "2", "--val-pairs", "2", "--workers", "1"])
    finally:
        os.umask(old)
    for d in (os.path.dirname(info["rec"]), str(tmp_path / "new"),
              str(tmp_path / "synth")):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o777 & ~umask, d
    for f in ("train.rec", "train.idx", "property"):
        mode = stat.S_IMODE(os.stat(os.path.join(str(tmp_path / "synth"), f))
                            .st_mode)
        assert mode == 0o666 & ~umask, f


# -- 4. fr-data: console script, one-line errors ----------------------------------

def test_fr_data_is_a_console_script_of_the_package():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "fr_lib", "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    module, _, func = scripts["fr-data"].partition(":")
    import importlib
    assert getattr(importlib.import_module(module), func) is cli.main
    assert set(cli.COMMANDS) >= {"folder2rec", "pairs2bin", "align", "synthetic",
                                 "inspect", "verify-emore"}


def test_data_scripts_are_thin_wrappers():
    for name in os.listdir(os.path.join(ROOT, "data_scripts")):
        if name.endswith(".py"):
            text = open(os.path.join(ROOT, "data_scripts", name)).read()
            assert "sys.path" not in text, name
            assert "fr_lib.data import cli" in text, name
            assert len(text.splitlines()) < 40, name


def test_expected_failures_are_one_line_with_rc_2(tmp_path):
    missing = str(tmp_path / "nope")
    run = subprocess.run(DATA_CLI + ["folder2rec", missing, str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=str(tmp_path),
                         timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"fr-data folder2rec: error: {missing}: no such "
                                  "input folder")
    debug = subprocess.run(DATA_CLI + ["folder2rec", missing, str(tmp_path / "o"),
                                       "--debug"],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "FileNotFoundError" in debug.stderr
    # the wrapper in data_scripts/ behaves the same
    wrap = subprocess.run([sys.executable, os.path.join(ROOT, "data_scripts",
                                                        "folder2rec.py"),
                           missing, str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert wrap.returncode == 2 and len(wrap.stderr.strip().splitlines()) == 1
    assert "no such input folder" in wrap.stderr


@pytest.mark.parametrize("argv, message", [
    (["pairs2bin", "{t}/none.txt", "-o", "{t}/x.bin"], "none.txt: no such pairs file"),
    (["inspect", "{t}/none.bin"], "none.bin: no such file or folder"),
    (["synthetic", "{t}/s", "--val-pairs", "3"], "--val-pairs must be even"),
    (["align", "{t}", "{t}"], "the output folder must differ from the input"),
    (["--debug", "inspect", "{t}/garbage.bin"], None),
    (["inspect", "{t}/garbage.bin"], "garbage.bin"),
])
def test_each_command_reports_errors_in_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "garbage.bin").write_bytes(b"not a pickle")
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    if message is None:
        with pytest.raises(Exception):
            cli.main(argv)
        return
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fr-data {argv[0]}: error: ")
    assert message in err[0]


@pytest.mark.parametrize("name", ["build-dataset", "bin-pairs"])
def test_data_notebooks_need_no_clone(name):
    """They once searched upward for data_scripts/ (bin-pairs without a stop
    at /, so from a pip install it never ended); now they run fr-data."""
    import json
    with open(os.path.join(ROOT, "book", "chapter_data", name + ".ipynb"),
              encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    code = "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "code")
    assert "data_scripts" not in code and "os.path.dirname(ROOT)" not in code
    assert "'-m', 'fr_lib.data.cli'" in code


# -- 5. one name for emore ----------------------------------------------------------

def test_emore_folder_is_found_under_its_old_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path))
    emore, old = str(tmp_path / "emore"), str(tmp_path / "faces_emore")
    assert get_dataset_dir() == emore  # neither exists: the new name
    os.makedirs(old)
    with pytest.warns(UserWarning, match=r"using .*faces_emore, the data set's "
                      r"old folder name\. Rename it: mv .*faces_emore .*emore"):
        assert get_dataset_dir() == old
    with pytest.warns(UserWarning):
        assert resolve_data_dir(emore) == old
    os.makedirs(emore)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_dataset_dir() == emore  # both: the new name, no warning
        assert resolve_data_dir(str(tmp_path / "other")) == \
            str(tmp_path / "other")


def test_verify_emore_default_accepts_the_old_name(tmp_path, monkeypatch, capsys):
    from fr_lib.data.synthetic import write_dataset
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path))
    assert cli.main(["verify-emore"]) == 1
    assert f"checking {tmp_path / 'emore'}" in capsys.readouterr().out
    write_dataset(str(tmp_path / "faces_emore"), 2, 2, 2)
    with pytest.warns(UserWarning, match="old folder name"):
        assert cli.main(["verify-emore", "--expect-identities", "2",
                         "--expect-images", "4", "--bins", "synth_val=2"]) == 0
    assert f"checking {tmp_path / 'faces_emore'}" in capsys.readouterr().out


def test_recipes_and_datasets_accept_the_old_name(tmp_path, monkeypatch):
    from fr_lib.data.synthetic import write_dataset
    from fr_lib.recipes import load_recipe, prepare_data
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path))
    old = str(tmp_path / "faces_emore")
    write_dataset(old, 2, 2, 0)
    recipe = load_recipe("emore-mobilefacenet-arcface", quick=False)
    assert recipe["train"]["data"] == "{data_root}/emore"
    with pytest.warns(UserWarning, match="old folder name"):
        assert prepare_data(recipe, progress=False) == old
    with pytest.warns(UserWarning, match="old folder name"):
        ds = FaceRecordDataset(str(tmp_path / "emore"))
    assert ds.rec_path == os.path.join(old, "train.rec") and len(ds) == 4


def test_no_other_name_for_emore_in_the_sources():
    hits = []
    try:  # the sources, not build outputs
        listed = subprocess.run(
            ["git", "ls-files", "book", "data_scripts", "fr_lib", "README.md"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for f in (os.path.join(ROOT, p) for p in listed
              if p.endswith((".py", ".md", ".ipynb", ".yaml"))):
        if os.path.isfile(f):
            text = open(f, encoding="utf-8").read()
            # the zip's name and the legacy-name table are allowed
            for m in re.finditer(r"faces_emore(?!\.zip)", text):
                line = text[:m.start()].count("\n") + 1
                hits.append(f"{os.path.relpath(f, ROOT)}:{line}")
    allowed = {"fr_lib/src/fr_lib/data/root.py"}
    assert [h for h in hits if h.split(":")[0] not in allowed] == []

"""data_scripts/*.py, run in-process through their ``main(argv)`` on tiny inputs."""
import importlib.util
import os
import re

import numpy as np
import pytest

import fr_lib  # noqa: F401  (before mxnet)
from fr_lib.data.align import ARCFACE_TEMPLATE, apply_transform
from fr_lib.data.binfile import read_bin
from fr_lib.data.recordio import FaceRecordDataset, read_property
from fr_lib.data.synthetic import SyntheticFaces
from fr_lib.data.transforms import decode_image

cv2 = pytest.importorskip("cv2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("folder2rec", "pairs2bin", "align_faces", "make_synthetic",
           "inspect_data", "verify_emore")


def script(name):
    spec = importlib.util.spec_from_file_location(
        f"data_scripts_{name}", os.path.join(ROOT, "data_scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jpeg(path, seed, size=24):
    """A smooth random picture (JPEG) at ``path``; returns its bytes."""
    rng = np.random.RandomState(seed)
    img = cv2.resize(rng.randint(0, 256, (4, 4, 3)).astype(np.uint8), (size, size))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img)
    with open(path, "wb") as f:
        f.write(buf.tobytes())
    return buf.tobytes()


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as info:
        script(name).main(["--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_an_fr_data_command(name, capsys):
    from fr_lib.data import cli
    module = script(name)
    assert module.COMMAND in cli.COMMANDS
    with pytest.raises(SystemExit) as info:
        cli.main([module.COMMAND, "--help"])
    assert info.value.code == 0
    assert f"usage: fr-data {module.COMMAND}" in capsys.readouterr().out


# -- folder2rec ----------------------------------------------------------------

@pytest.fixture
def face_folder(tmp_path):
    """bob: 3 images, alice: 2, carl: 1 + a broken file, dora: only a broken file."""
    root = tmp_path / "faces"
    files = {}
    seed = 0
    for name, n in (("bob", 3), ("alice", 2), ("carl", 1)):
        for k in range(n):
            p = str(root / name / f"{name}_{k}.jpg")
            files[p] = (name, write_jpeg(p, seed))
            seed += 1
    (root / "carl" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "dora").mkdir()
    (root / "dora" / "x.png").write_bytes(b"")
    return str(root), files


def test_folder2rec_round_trip(face_folder, tmp_path, capsys):
    root, files = face_folder
    out = str(tmp_path / "rec")
    assert script("folder2rec").main([root, out, "--workers", "1"]) == 0
    text = capsys.readouterr().out
    ds = FaceRecordDataset(out, check="full")
    assert ds.layout == "insightface"
    # ids follow the sorted folder names; dora has no readable image, no id
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 1, 2])
    assert read_property(os.path.join(out, "property")) == (3, 24, 24)
    ordered = sorted(files)  # alice_0, alice_1, bob_0.., carl_0
    for i, path in enumerate(ordered):
        assert ds.read_raw(i).data == files[path][1]  # JPEG bytes kept as they are
    with open(os.path.join(out, "identities.txt")) as f:
        assert f.read() == "0\talice\t2\n1\tbob\t3\n2\tcarl\t1\n"
    with open(os.path.join(out, "skipped.txt")) as f:
        skipped = f.read().splitlines()
    assert [s.split("\t")[0] for s in skipped] == [
        os.path.join(root, "carl", "broken.jpg"), os.path.join(root, "dora", "x.png")]
    assert "not a decodable image (10 bytes)" in skipped[0]
    assert "6 images of 3 identities, 24x24" in text
    assert "skipped 2 unreadable image(s)" in text and "broken.jpg" in text
    assert "1 folder(s) without a readable image got no id: dora" in text


def test_fr_data_folder2rec_writes_what_the_script_writes(face_folder, tmp_path,
                                                        capsys):
    from fr_lib.data import cli
    root, _ = face_folder
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert script("folder2rec").main([root, a, "--workers", "1"]) == 0
    assert cli.main(["folder2rec", root, b, "--workers", "1"]) == 0
    for name in ("train.rec", "train.idx", "property", "identities.txt"):
        with open(os.path.join(a, name), "rb") as x, \
                open(os.path.join(b, name), "rb") as y:
            assert x.read() == y.read(), name
    capsys.readouterr()


def test_folder2rec_workers_resize_and_plain(face_folder, tmp_path, capsys):
    root, _ = face_folder
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    main = script("folder2rec").main
    main([root, one, "--workers", "1", "--resize", "112"])
    main([root, two, "--workers", "2", "--resize", "112", "--chunksize", "1"])
    for name in ("train.rec", "train.idx", "property", "identities.txt"):
        with open(os.path.join(one, name), "rb") as a, \
                open(os.path.join(two, name), "rb") as b:
            assert a.read() == b.read(), name  # order kept across processes
    ds = FaceRecordDataset(one, check="full")
    assert ds.property == (3, 112, 112) and ds[0][0].shape == (112, 112, 3)
    plain = str(tmp_path / "plain")
    main([root, plain, "--workers", "1", "--plain-shuffled", "--seed", "1"])
    pl = FaceRecordDataset(plain, check="full")
    assert pl.layout == "plain" and len(pl) == 6
    assert sorted(pl.labels.tolist()) == [0, 0, 1, 1, 1, 2]
    capsys.readouterr()


def test_folder2rec_errors(tmp_path):
    main = script("folder2rec").main
    with pytest.raises(SystemExit, match=r"nope: no such input folder"):
        main([str(tmp_path / "nope"), str(tmp_path / "out")])
    write_jpeg(str(tmp_path / "loose" / "a.jpg"), 0)
    with pytest.raises(SystemExit, match=r"no sub-folder with images.*1 loose"):
        main([str(tmp_path / "loose"), str(tmp_path / "out")])
    write_jpeg(str(tmp_path / "mixed" / "a" / "1.jpg"), 0, size=24)
    write_jpeg(str(tmp_path / "mixed" / "b" / "1.jpg"), 1, size=32)
    with pytest.raises(SystemExit, match=r"b/1.jpg is 32x32 but earlier images are "
                                         r"24x24; pass --resize N"):
        main([str(tmp_path / "mixed"), str(tmp_path / "out"), "--workers", "1"])
    assert not os.path.exists(tmp_path / "out" / "train.rec")


# -- pairs2bin -------------------------------------------------------------------

@pytest.fixture
def lfw_folder(tmp_path):
    root = tmp_path / "lfw"
    data = {}
    for s, (name, n) in enumerate((("Ann_Lee", 2), ("Bo_Chen", 3), ("Cy_Dow", 1))):
        for k in range(1, n + 1):
            p = str(root / name / f"{name}_{k:04d}.jpg")
            data[(name, k)] = write_jpeg(p, 10 * s + k)
    return str(root), data


def test_pairs2bin_lfw_round_trip(lfw_folder, tmp_path, capsys):
    root, data = lfw_folder
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Chen\t3\n"
                     "Bo_Chen\t2\t3\nBo_Chen\t1\tCy_Dow\t1\n")
    out = str(tmp_path / "mini_lfw.bin")
    assert script("pairs2bin").main([str(pairs), "--images", root,
                                     "-o", out]) == 0
    assert "4 pairs (2 same, 2 different)" in capsys.readouterr().out
    vset = read_bin(out, image_size=(24, 24), keep_raw=True)
    np.testing.assert_array_equal(vset.issame, [True, False, True, False])
    expect = [("Ann_Lee", 1), ("Ann_Lee", 2), ("Ann_Lee", 1), ("Bo_Chen", 3),
              ("Bo_Chen", 2), ("Bo_Chen", 3), ("Bo_Chen", 1), ("Cy_Dow", 1)]
    for i, key in enumerate(expect):
        np.testing.assert_array_equal(vset.raw[i], decode_image(data[key]))


def test_pairs2bin_csv_and_missing(lfw_folder, tmp_path, capsys):
    root, data = lfw_folder
    csv = os.path.join(root, "pairs.csv")
    with open(csv, "w") as f:
        f.write("path1,path2,label\n"
                "Ann_Lee/Ann_Lee_0001.jpg,Ann_Lee/Ann_Lee_0002.jpg,1\n"
                "Bo_Chen/Bo_Chen_0009.jpg,Cy_Dow/Cy_Dow_0001.jpg,0\n"
                "Bo_Chen/Bo_Chen_0001.jpg,Cy_Dow/Cy_Dow_0001.jpg,different\n")
    main = script("pairs2bin").main
    out = str(tmp_path / "p.bin")
    with pytest.raises(SystemExit, match=r"pairs.csv: line 3: .*Bo_Chen_0009.jpg: "
                                         r"no such image \(pass --skip-missing"):
        main([csv, "-o", out])
    assert not os.path.exists(out)
    assert main([csv, "-o", out, "--skip-missing"]) == 0
    text = capsys.readouterr().out
    assert "2 pairs (1 same, 1 different)" in text
    assert re.search(r"skipped 1 pair.*\n\s+line 3: .*Bo_Chen_0009.jpg: missing",
                     text)
    vset = read_bin(out, image_size=(24, 24), keep_raw=True)
    np.testing.assert_array_equal(vset.issame, [True, False])
    np.testing.assert_array_equal(vset.raw[2],
                                  decode_image(data[("Bo_Chen", 1)]))


def test_pairs2bin_bad_lists(lfw_folder, tmp_path):
    root, _ = lfw_folder
    main = script("pairs2bin").main
    bad = tmp_path / "pairs.txt"
    bad.write_text("10\t300\nAnn_Lee\t1\t2\n")
    with pytest.raises(SystemExit, match=r"announces 6000 pairs but the file has 1"):
        main([str(bad), "--images", root, "-o", str(tmp_path / "x.bin")])
    bad.write_text("1\nAnn_Lee\t1\nAnn_Lee\t1\tBo_Chen\t1\n")
    with pytest.raises(SystemExit, match=r"line 2 has 2 fields"):
        main([str(bad), "--images", root, "-o", str(tmp_path / "x.bin")])


# -- align_faces -----------------------------------------------------------------

def test_align_astronaut_and_no_face(tmp_path, capsys):
    from skimage import data
    src = tmp_path / "in"
    (src / "people").mkdir(parents=True)
    cv2.imwrite(str(src / "people" / "astronaut.jpg"), data.astronaut()[:, :, ::-1])
    cv2.imwrite(str(src / "grey.png"), np.full((200, 200), 128, np.uint8))
    out = tmp_path / "out"
    assert script("align_faces").main([str(src), str(out), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "aligned 1 of 2 images to 112x112" in text
    assert "face and both eyes found: 1" in text
    assert "grey.png: no face" in text
    img = cv2.imread(str(out / "people" / "astronaut.jpg"))
    assert img.shape == (112, 112, 3)
    assert not (out / "grey.png").exists()
    assert (out / "not_aligned.txt").read_text().startswith("grey.png\tno face")


def test_align_with_landmarks_undoes_a_known_warp(tmp_path, capsys):
    face = SyntheticFaces(1, seed=0, difficulty=0.0).render(0, 0)
    # place the face in a larger picture with a known similarity transform
    angle, scale = np.deg2rad(12.0), 1.7
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 40.0],
                  [scale * np.sin(angle), scale * np.cos(angle), 25.0]])
    big = cv2.warpAffine(face, m, (260, 240), flags=cv2.INTER_CUBIC)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), big[:, :, ::-1])
    cv2.imwrite(str(src / "b.png"), big[:, :, ::-1])  # not in the landmarks file
    pts = apply_transform(m, ARCFACE_TEMPLATE)  # where the template points went
    (tmp_path / "marks.txt").write_text(
        "# image x1 y1 ... x5 y5\na.png " + " ".join(f"{v:.4f}" for v in pts.ravel())
        + "\n")
    out = tmp_path / "out"
    assert script("align_faces").main([str(src), str(out), "--landmarks",
                                       str(tmp_path / "marks.txt"),
                                       "--workers", "1"]) == 0
    assert "from landmarks: 1" in capsys.readouterr().out
    back = cv2.imread(str(out / "a.png"))[:, :, ::-1].astype(int)
    inner = (slice(8, 104), slice(8, 104))
    err = np.abs(back[inner] - face[inner].astype(int)).mean()
    shifted = np.abs(back[inner] - np.roll(face, 2, axis=1)[inner].astype(int)).mean()
    assert err < 2.5 and err < shifted / 2, (err, shifted)
    assert not (out / "b.png").exists()
    (tmp_path / "bad.txt").write_text("a.png 1 2 3\n")
    with pytest.raises(SystemExit, match=r"bad.txt: line 1 has 4 fields"):
        script("align_faces").main([str(src), str(out), "--landmarks",
                                    str(tmp_path / "bad.txt")])


# -- make_synthetic, inspect_data, verify_emore -----------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("s") / "faces_synth")
    assert script("make_synthetic").main(
        [out, "--identities", "3", "--images", "4", "--val-pairs", "8",
         "--workers", "1", "--seed", "5"]) == 0
    return out


def test_make_synthetic_summary(synth, capsys):
    ds = FaceRecordDataset(synth)
    np.testing.assert_array_equal(ds.labels, np.repeat([0, 1, 2], 4))
    assert len(read_bin(os.path.join(synth, "synth_val.bin"))) == 8
    with pytest.raises(SystemExit, match=r"--val-pairs must be even"):
        script("make_synthetic").main([synth + "_x", "--val-pairs", "5"])


def test_inspect_rec_and_bin(synth, tmp_path, capsys):
    main = script("inspect_data").main
    png = str(tmp_path / "sheet.png")
    assert main([synth, "--contact-sheet", png, "--identities", "2",
                 "--per-identity", "3"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"images\s+12\n", text) and re.search(r"classes\s+3 ", text)
    assert re.search(r"layout\s+insightface", text)
    assert re.search(r"4-7 \| #+ 3", text)  # 3 identities with 4 images
    assert "synth_val.bin  8 (4 same, 4 different), 16 of 112x112" in text
    assert cv2.imread(png).shape == (2 * 114 + 2, 3 * 114 + 2, 3)
    png2 = str(tmp_path / "pairs.png")
    assert main([os.path.join(synth, "synth_val.bin"), "--contact-sheet", png2,
                 "--pairs", "3"]) == 0
    assert "pairs      8 (4 same, 4 different)" in capsys.readouterr().out
    assert cv2.imread(png2).shape == (2 * 114 + 2, 2 * (226 + 6) + 2, 3)
    with pytest.raises(SystemExit, match=r"nothing.bin: no such file"):
        main([str(tmp_path / "nothing.bin")])


def test_verify_emore_on_a_tiny_folder(synth, tmp_path, capsys):
    main = script("verify_emore").main
    assert main([synth, "--expect-identities", "3", "--expect-images", "12",
                 "--bins", "synth_val=8"]) == 0
    assert re.search(r"all \d+ checks passed", capsys.readouterr().out)
    assert main([synth]) == 1  # emore's counts
    text = capsys.readouterr().out
    assert re.search(r"FAIL\s+identities\s+3 identities, expected 85,742", text)
    assert re.search(r"FAIL\s+images\s+12 images, expected 5,822,653", text)
    assert re.search(r"FAIL\s+lfw.bin\s+.*lfw.bin: missing", text)
    assert main([synth, "--expect-identities", "3", "--expect-images", "12",
                 "--bins", "synth_val=600"]) == 1
    assert re.search(r"FAIL\s+synth_val.bin\s+8 pairs \(4 same\), expected 600",
                     capsys.readouterr().out)
    # a property file that does not belong to the records
    import shutil
    broken = str(tmp_path / "broken")
    shutil.copytree(synth, broken)
    with open(os.path.join(broken, "property"), "w") as f:
        f.write("5,112,112\n")
    assert main([broken, "--expect-identities", "5", "--expect-images", "12",
                 "--bins", "synth_val=8"]) == 1
    assert re.search(r"FAIL\s+records\s+.*says 5 classes, but .* has 3 identity "
                     r"records", capsys.readouterr().out)
    assert main([str(tmp_path / "none")]) == 1
    assert "none: no such folder" in capsys.readouterr().out


def test_workers_after_opencv_threads_do_not_deadlock(tmp_path):
    """Forked workers once called cv2.setNumThreads, which hangs in a child
    forked after the parent ran a Haar cascade; run it in a subprocess with a
    timeout so a regression fails instead of hanging the suite."""
    import subprocess
    import sys
    code = ("import fr_lib, numpy as np\n"
            "from skimage import data\n"
            "from fr_lib.data.tools import FaceEyeDetector\n"
            "from fr_lib.data.synthetic import write_dataset\n"
            "assert FaceEyeDetector()(data.astronaut())[1] is not None\n"
            f"write_dataset({str(tmp_path / 'w')!r}, 3, 4, 4, workers=2)\n")
    done = subprocess.run([sys.executable, "-c", code], timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

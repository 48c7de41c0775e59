"""The logic behind ``data_scripts/``: image folders, pair lists, face detection,
summaries, contact sheets and data set checks.

The command-line tools are thin ``argparse`` wrappers around these functions,
so a notebook can call the same code. Worker functions live here (a module
that child processes can import) rather than in the scripts.
"""
import os

import numpy as np

from ..utils.fileio import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from .transforms import decode_image, encode_jpeg

__all__ = ["IMAGE_EXTENSIONS", "default_workers", "atomic_write_text",
           "atomic_write_bytes", "list_identity_folders", "list_images",
           "imap_ordered", "jpeg_orientation", "load_image", "read_lfw_pairs", "read_pair_csv",
           "read_pairs", "read_landmarks", "FaceEyeDetector", "eyes_from_box",
           "align_image",
           "text_histogram", "describe_rec", "describe_bin", "contact_sheet",
           "pair_sheet", "check_dataset", "EMORE_IDENTITIES", "EMORE_IMAGES",
           "EMORE_BINS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm")

#: MS1M-ArcFace (``emore``, a.k.a. MS1MV2) as InsightFace distributes it.
EMORE_IDENTITIES = 85742
EMORE_IMAGES = 5822653
#: Pair counts of the verification sets shipped with it (and with the other
#: InsightFace training sets).
EMORE_BINS = {"lfw": 6000, "cfp_fp": 7000, "agedb_30": 6000, "calfw": 6000,
              "cplfw": 6000, "cfp_ff": 7000, "vgg2_fp": 5000}


# -- small helpers --------------------------------------------------------------

def default_workers():
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _is_image_name(name, extensions=IMAGE_EXTENSIONS):
    return not name.startswith(".") and name.lower().endswith(tuple(extensions))


def list_images(root, extensions=IMAGE_EXTENSIONS):
    """Image files under ``root`` (recursive), as sorted relative paths."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for name in sorted(files):
            if _is_image_name(name, extensions):
                out.append(os.path.relpath(os.path.join(d, name), root))
    return out


def list_identity_folders(root, extensions=IMAGE_EXTENSIONS):
    """``[(folder_name, [image paths]), ...]`` for the sub-folders of ``root``,
    sorted by name; images sorted by relative path (sub-folders included).

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        If ``root`` is missing or is not a directory.
    ValueError
        If ``root`` has no sub-folder with images (loose files are named).
    """
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root}: no such input folder")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root}: the input must be a folder with one "
                                 "sub-folder per identity")
    folders = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        images = [os.path.join(path, rel) for rel in list_images(path, extensions)]
        folders.append((name, images))
    if not any(images for _, images in folders):
        loose = [n for n in sorted(os.listdir(root)) if _is_image_name(n)]
        hint = (f"; it holds {len(loose)} loose images (e.g. {loose[0]}): put each "
                "identity's images in its own sub-folder") if loose else ""
        raise ValueError(f"{root}: no sub-folder with images "
                         f"({', '.join(extensions)}){hint}")
    return folders


def child_init(initializer=None):
    """Start of a worker process: the default SIGTERM action (a forked child
    inherits the command line's handler, and ``Pool.terminate`` stops workers
    with SIGTERM), then ``initializer()``."""
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if initializer is not None:
        initializer()


def imap_ordered(func, tasks, workers=1, chunksize=16, initializer=None):
    """``map(func, tasks)`` in order, over ``workers`` processes (1: here).

    Processes are forked where the platform allows it (no re-import of MXNet);
    the workers only run NumPy/OpenCV code.
    """
    if workers <= 1:
        if initializer is not None:
            initializer()
        yield from map(func, tasks)
        return
    import multiprocessing as mp
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
    # Never call cv2.setNumThreads() in a forked child: it deadlocks when the
    # parent has already used OpenCV's thread pool (a Haar cascade does).
    pool = ctx.Pool(workers, initializer=child_init, initargs=(initializer,))
    try:
        yield from pool.imap(func, tasks, chunksize=max(1, chunksize))
    finally:
        pool.terminate()
        pool.join()


def jpeg_orientation(data):
    """The EXIF orientation tag (1-8) of JPEG bytes; 1 when there is none.

    Reads the APP1 ``Exif`` segment's first image file directory (tag
    ``0x0112``), the tag cameras and phones use to mark a photo taken on its
    side. 1 means upright; 3 rotated 180 degrees; 6 and 8 a quarter turn;
    2, 4, 5, 7 mirrored variants.
    """
    if data[:2] != b"\xff\xd8":
        return 1
    pos, n = 2, len(data)
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        seg = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and seg[:6] == b"Exif\x00\x00":
            tiff = seg[6:]
            order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
            if order is None or len(tiff) < 8:
                return 1
            ifd = int.from_bytes(tiff[4:8], order)
            if ifd + 2 > len(tiff):
                return 1
            for k in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
                e = ifd + 2 + 12 * k
                if e + 12 > len(tiff):
                    break
                if int.from_bytes(tiff[e:e + 2], order) == 0x0112:
                    value = int.from_bytes(tiff[e + 8:e + 10], order)
                    return value if 1 <= value <= 8 else 1
            return 1
        pos += 2 + length
    return 1


def load_image(task):
    """Worker: read, check and (re-)encode one image file.

    ``task`` is ``(path, resize, quality, keep_jpeg)``. Returns ``(path,
    encoded, (h, w), error)``: ``encoded`` is None and ``error`` a reason when
    the file cannot be read or decoded. A JPEG that needs no resizing keeps its
    original bytes when ``keep_jpeg`` (no second lossy step), unless its EXIF
    tag says it is stored rotated: then the upright image (OpenCV applies the
    tag when it decodes) is re-encoded, so that every reader of the record --
    MXNet's ``imdecode`` and DALI's decoder ignore EXIF -- sees it upright.
    """
    path, resize, quality, keep_jpeg = task
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return path, None, None, f"cannot read: {err.strerror or err}"
    img = decode_image(data)
    if img is None:
        return path, None, None, (f"not a decodable image ({len(data)} bytes)"
                                  if data else "empty file")
    if resize and img.shape[:2] != (resize, resize):
        import cv2
        interp = cv2.INTER_AREA if min(img.shape[:2]) > resize else cv2.INTER_LINEAR
        img = cv2.resize(img, (resize, resize), interpolation=interp)
        return path, encode_jpeg(img, quality), img.shape[:2], None
    if keep_jpeg and data[:3] == b"\xff\xd8\xff" and jpeg_orientation(data) == 1:
        return path, data, img.shape[:2], None
    return path, encode_jpeg(np.ascontiguousarray(img), quality), img.shape[:2], None


# -- pair lists -------------------------------------------------------------------

def read_lfw_pairs(path, images_root, ext="jpg"):
    """Parse an LFW ``pairs.txt``.

    The first line is ``folds pairs_per_fold`` (``10 300``: each fold has 300
    same-person then 300 different-person lines) or a single count ``N`` (``N``
    same then ``N`` different, as in ``pairsDevTrain.txt``). Then
    ``name idx1 idx2`` (same person) or ``name1 idx1 name2 idx2`` (different
    people); image ``idx`` of ``name`` is ``images_root/name/name_000idx.jpg``.

    Returns
    -------
    list of (lineno, path1, path2, issame)

    Raises
    ------
    ValueError
        On a malformed header or line (the line number is named) or when the
        number of lines disagrees with the header.
    """
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    try:
        header = [int(x) for x in lines[0].split()]
    except ValueError:
        header = []
    if len(header) not in (1, 2) or min(header) < 1:
        raise ValueError(f"{path}: line 1 is {lines[0]!r}; an LFW pairs file "
                         "starts with 'folds pairs_per_fold' (e.g. '10 300') or "
                         "a single pair count")
    expected = 2 * header[0] * (header[1] if len(header) == 2 else 1)

    def image(name, idx, lineno):
        try:
            n = int(idx)
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: image number {idx!r} is not "
                             "an integer") from None
        return os.path.join(images_root, name, f"{name}_{n:04d}.{ext}")

    pairs = []
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 3:
            pairs.append((lineno, image(fields[0], fields[1], lineno),
                          image(fields[0], fields[2], lineno), True))
        elif len(fields) == 4:
            pairs.append((lineno, image(fields[0], fields[1], lineno),
                          image(fields[2], fields[3], lineno), False))
        else:
            raise ValueError(f"{path}: line {lineno} has {len(fields)} fields "
                             f"({line!r}); expected 'name idx1 idx2' or "
                             "'name1 idx1 name2 idx2'")
    if len(pairs) != expected:
        raise ValueError(f"{path}: the header {lines[0]!r} announces {expected} "
                         f"pairs but the file has {len(pairs)}")
    return pairs


_TRUE = {"1", "true", "same", "yes", "genuine"}
_FALSE = {"0", "false", "different", "diff", "no", "impostor"}


def read_pair_csv(path, images_root=None):
    """Parse a CSV of ``path1,path2,label`` (label 1/0, true/false, same/different).

    A first line whose label is not one of these is taken as a header.
    Relative paths are relative to ``images_root`` (default: the CSV's folder).

    Returns
    -------
    list of (lineno, path1, path2, issame)
    """
    import csv
    root = images_root or os.path.dirname(os.path.abspath(path))
    pairs = []
    with open(path, "r", encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise ValueError(f"{path}: line {lineno} has {len(row)} fields "
                                 f"({','.join(row)!r}); expected path1,path2,label")
            a, b, label = (x.strip() for x in row)
            label = label.lower()
            if label in _TRUE or label in _FALSE:
                pairs.append((lineno, os.path.join(root, a), os.path.join(root, b),
                              label in _TRUE))
            elif lineno == 1 and not pairs:
                continue  # header
            else:
                raise ValueError(f"{path}: line {lineno}: label {row[2]!r} is not "
                                 "1/0, true/false or same/different")
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def read_pairs(path, images_root=None, fmt="auto", ext="jpg"):
    """LFW ``pairs.txt`` or CSV, by ``fmt`` or (``'auto'``) by the file name
    (``.csv``) and content (commas)."""
    if fmt == "auto":
        if path.lower().endswith(".csv"):
            fmt = "csv"
        else:
            with open(path, "r", encoding="utf-8") as f:
                first = f.readline()
            fmt = "csv" if "," in first else "lfw"
    if fmt == "csv":
        return read_pair_csv(path, images_root)
    if fmt == "lfw":
        return read_lfw_pairs(path, images_root or os.path.dirname(
            os.path.abspath(path)), ext)
    raise ValueError(f"format must be 'auto', 'lfw' or 'csv', got {fmt!r}")


# -- detection and landmarks -----------------------------------------------------

def read_landmarks(path):
    """Read ``path x1 y1 ... x5 y5`` lines (or ``path x1 y1 x2 y2`` for the two
    eye centres); ``#`` starts a comment. Returns ``{path: (K, 2) array}``."""
    out = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) not in (5, 11):
                raise ValueError(f"{path}: line {lineno} has {len(fields)} fields; "
                                 "expected 'image x1 y1 ... x5 y5' (11) or "
                                 "'image xl yl xr yr' (5)")
            try:
                pts = np.array([float(v) for v in fields[1:]]).reshape(-1, 2)
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: coordinates must be "
                                 f"numbers, got {' '.join(fields[1:])!r}") from None
            key = os.path.normpath(fields[0])
            if key in out:
                raise ValueError(f"{path}: line {lineno}: {fields[0]} appears twice")
            out[key] = pts
    return out


def eyes_from_box(box):
    """Eye centres guessed from a Haar frontal-face box ``(x, y, w, h)``.

    In boxes of ``haarcascade_frontalface_default`` the eyes sit at roughly
    27 % and 73 % of the width and 37 % of the height (as on scikit-image's
    astronaut, whose eyes the eye cascade finds at 26 %/75 % and 36 %). A
    fallback only, used when the eye cascade finds no pair: expect a few
    pixels of error and no in-plane rotation.
    """
    x, y, w, h = (float(v) for v in box)
    return np.array([[x + 0.27 * w, y + 0.37 * h], [x + 0.73 * w, y + 0.37 * h]])


class FaceEyeDetector:
    """The largest frontal face and its two eyes, with OpenCV's Haar cascades.

    Eyes are searched in the upper 60 % of the face box; of the candidates
    the largest one left of the box centre and the largest one right of it
    are kept (left/right in the image), so a nostril or brow rarely wins.
    """

    def __init__(self, scale_factor=1.1, min_neighbors=5, min_face=40):
        import cv2
        root = cv2.data.haarcascades
        self.face = cv2.CascadeClassifier(
            os.path.join(root, "haarcascade_frontalface_default.xml"))
        self.eye = cv2.CascadeClassifier(os.path.join(root, "haarcascade_eye.xml"))
        if self.face.empty() or self.eye.empty():  # pragma: no cover
            raise RuntimeError(f"cannot load the Haar cascades from {root}")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_face = min_face

    def __call__(self, image):
        """``(face_box or None, eye_centres (2, 2) or None)`` of an RGB image."""
        import cv2
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        faces = self.face.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face))
        if len(faces) == 0:
            return None, None
        x, y, w, h = max((tuple(int(v) for v in f) for f in faces),
                         key=lambda b: b[2] * b[3])
        roi = gray[y:y + int(0.6 * h), x:x + w]
        eyes = self.eye.detectMultiScale(roi, self.scale_factor, self.min_neighbors,
                                         minSize=(max(5, w // 10),) * 2)
        left = right = None
        for ex, ey, ew, eh in (tuple(int(v) for v in e) for e in eyes):
            centre = np.array([x + ex + ew / 2.0, y + ey + eh / 2.0])
            if centre[0] < x + w / 2.0:
                if left is None or ew * eh > left[1]:
                    left = (centre, ew * eh)
            elif right is None or ew * eh > right[1]:
                right = (centre, ew * eh)
        if left is None or right is None:
            return (x, y, w, h), None
        return (x, y, w, h), np.stack([left[0], right[0]])


_DETECTOR = {}


def align_image(task):
    """Worker: detect (or take the given landmarks), align and write one image.

    ``task`` is ``(src, dst, landmarks, size, require_eyes, quality)``;
    ``landmarks`` is None (detect with :class:`FaceEyeDetector`) or a (5, 2) /
    (2, 2) array. Returns ``(src, how, message)`` with ``how`` one of
    ``'landmarks'``, ``'eyes'``, ``'box'`` (eyes guessed from the face box),
    ``'no face'``, ``'no eyes'`` (with ``require_eyes``) or ``'unreadable'``;
    nothing is written for the last three.
    """
    from .align import align_face
    import cv2
    src, dst, landmarks, size, require_eyes, quality = task
    try:
        with open(src, "rb") as f:
            img = decode_image(f.read())
    except OSError as err:
        return src, "unreadable", str(err.strerror or err)
    if img is None:
        return src, "unreadable", "not a decodable image"
    img = np.ascontiguousarray(img)
    if landmarks is not None:
        points, how = np.asarray(landmarks, np.float64), "landmarks"
    else:
        if "det" not in _DETECTOR:
            _DETECTOR["det"] = FaceEyeDetector()
        box, eyes = _DETECTOR["det"](img)
        if box is None:
            return src, "no face", "no face found"
        if eyes is None:
            if require_eyes:
                return src, "no eyes", f"face at {box}, but no pair of eyes"
            points, how = eyes_from_box(box), "box"
        else:
            points, how = eyes, "eyes"
    aligned, _ = align_face(img, points, size=size)
    ext = os.path.splitext(dst)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") \
        else []
    ok, buf = cv2.imencode(ext, aligned[:, :, ::-1], params)
    if not ok:  # pragma: no cover
        return src, "unreadable", f"cannot encode {dst}"
    atomic_write_bytes(dst, buf.tobytes())
    return src, how, ""


# -- summaries and contact sheets --------------------------------------------------

def text_histogram(counts, width=40):
    """Lines of a text histogram of positive integers in power-of-two bins."""
    counts = np.asarray(counts, np.int64)
    if counts.size == 0:
        return ["  (empty)"]
    edges = [1]
    while edges[-1] <= counts.max():
        edges.append(edges[-1] * 2)
    hist = [int(((counts >= lo) & (counts < hi)).sum())
            for lo, hi in zip(edges[:-1], edges[1:])]
    top = max(hist)
    lines = []
    for lo, hi, n in zip(edges[:-1], edges[1:], hist):
        label = f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"
        bar = "#" * int(round(width * n / top)) if n else ""
        lines.append(f"  {label:>11} | {bar:<{width}} {n}")
    return lines


def describe_rec(dataset, sample=16):
    """Summary lines of a :class:`~fr_lib.data.FaceRecordDataset`."""
    per_id = np.bincount(dataset.labels, minlength=dataset.num_classes) \
        if len(dataset) else np.zeros(0, np.int64)
    present = per_id[per_id > 0]
    sizes = {}
    for i in range(min(sample, len(dataset))):
        shape = tuple(dataset[i][0].shape)
        sizes[shape] = sizes.get(shape, 0) + 1
    lines = [f"rec        {dataset.rec_path}",
             f"layout     {dataset.layout}",
             f"images     {len(dataset):,}",
             f"classes    {dataset.num_classes:,} ({len(present):,} with images)"]
    if dataset.property is not None:
        c, h, w = dataset.property
        lines.append(f"property   {c},{h},{w}")
    else:
        lines.append("property   (no property file)")
    lines.append("image size " + ", ".join(
        f"{s[0]}x{s[1]}x{s[2]} ({n} of the first {min(sample, len(dataset))})"
        for s, n in sorted(sizes.items())))
    if len(present):
        lines.append(f"per class  min {present.min()}, mean {present.mean():.1f}, "
                     f"median {int(np.median(present))}, max {present.max()}")
        lines.append("images per identity:")
        lines += text_histogram(present)
    if dataset.bad_records:
        lines.append(f"bad records {len(dataset.bad_records)}")
    return lines


def describe_bin(vset):
    """Summary lines of a :class:`~fr_lib.data.VerificationSet`."""
    n = len(vset)
    same = int(vset.issame.sum())
    _, _, h, w = vset.images.shape
    return [f"bin        {vset.path}",
            f"pairs      {n:,} ({same:,} same, {n - same:,} different)",
            f"images     {2 * n:,} of {h}x{w}"]


def _label(tile, text):
    import cv2
    cv2.rectangle(tile, (0, tile.shape[0] - 14), (tile.shape[1], tile.shape[0]),
                  (0, 0, 0), -1)
    cv2.putText(tile, text, (2, tile.shape[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _tile(img, size):
    import cv2
    if hasattr(img, "asnumpy"):
        img = img.asnumpy()
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.uint8).copy()


def contact_sheet(dataset, identities=8, per_identity=8, size=112, gap=2):
    """An RGB grid: one row per identity (the first ``identities`` classes with
    images), its first ``per_identity`` images, each labelled with its class."""
    index = dataset.identity_index
    classes = sorted(index)[:identities]
    if not classes:
        raise ValueError(f"{dataset.rec_path}: no images to show")
    sheet = np.full((len(classes) * (size + gap) + gap,
                     per_identity * (size + gap) + gap, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        for k, pos in enumerate(list(index[c])[:per_identity]):
            img, label = dataset[int(pos)]
            tile = _label(_tile(img, size), f"id {int(label)}")
            y, x = gap + r * (size + gap), gap + k * (size + gap)
            sheet[y:y + size, x:x + size] = tile
    return sheet


def pair_sheet(vset, pairs=8, columns=2, size=112, gap=2):
    """An RGB grid of the first ``pairs`` pairs of a ``.bin`` read with
    ``keep_raw=True``, side by side, labelled same/diff."""
    if vset.raw is None:
        raise ValueError("read the .bin with keep_raw=True to draw its pairs")
    n = min(pairs, len(vset))
    rows = (n + columns - 1) // columns
    pw = 2 * size + gap
    sheet = np.full((rows * (size + gap) + gap,
                     columns * (pw + 3 * gap) + gap, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = gap + r * (size + gap), gap + c * (pw + 3 * gap)
        tag = "same" if vset.issame[i] else "diff"
        sheet[y:y + size, x:x + size] = _label(_tile(vset.raw[2 * i], size),
                                               f"#{i} {tag}")
        sheet[y:y + size, x + size + gap:x + pw] = _label(
            _tile(vset.raw[2 * i + 1], size), f"#{i} {tag}")
    return sheet


# -- data set check ---------------------------------------------------------------

def check_dataset(folder, expect_identities=EMORE_IDENTITIES,
                  expect_images=EMORE_IMAGES, expect_bins=None, required_bins=None,
                  full=False, image_size=(112, 112), progress=False):
    """Check a training folder (``train.rec``, ``train.idx``, ``property``, ``.bin`` files).

    Parameters
    ----------
    folder : str
    expect_identities, expect_images : int or None
        Expected counts (None: not checked).
    expect_bins : dict or None
        ``{name: pairs}``; default :data:`EMORE_BINS`. Every ``.bin`` in the
        folder is read; those named here must have that many pairs.
    required_bins : iterable or None
        Names that must be present; default ``lfw, cfp_fp, agedb_30``.
    full : bool
        Decode every training image (slow) instead of checking headers.
    image_size : (h, w)

    Returns
    -------
    list of (name, ok, message)
    """
    from .recordio import FaceRecordDataset
    from .binfile import read_bin
    expect_bins = dict(EMORE_BINS if expect_bins is None else expect_bins)
    required = ["lfw", "cfp_fp", "agedb_30"] if required_bins is None \
        else list(required_bins)
    results = []

    def add(name, ok, message):
        results.append((name, bool(ok), message))

    if not os.path.isdir(folder):
        add("folder", False, f"{folder}: no such folder")
        return results
    for name in ("train.rec", "train.idx", "property"):
        path = os.path.join(folder, name)
        add(name, os.path.isfile(path),
            f"{path}: " + ("present" if os.path.isfile(path) else "missing"))
    if all(ok for _, ok, _ in results):
        try:
            ds = FaceRecordDataset(folder, check="full" if full else True,
                                   progress=progress)
        except Exception as err:  # report, do not crash: other checks still run
            add("records", False, f"{folder}: cannot read the records: {err}")
            ds = None
        if ds is not None:
            nc, h, w = ds.property
            labels = np.unique(ds.labels)
            add("layout", ds.layout == "insightface",
                f"layout {ds.layout} (expected insightface)")
            add("property size", (h, w) == tuple(image_size),
                f"property says {h}x{w}, expected {image_size[0]}x{image_size[1]}")
            span = f" ({labels[0]}..{labels[-1]})" if len(labels) else ""
            add("property vs records", nc == ds.num_classes == len(labels)
                and len(labels) and labels[0] == 0 and labels[-1] == nc - 1,
                f"property says {nc:,} classes; the records hold {len(labels):,} "
                f"distinct labels{span}")
            if ds.layout == "insightface":
                nid = len(ds._identity_keys)
                add("identity records", nid == nc,
                    f"{nid:,} identity records for {nc:,} classes")
            if expect_identities is not None:
                add("identities", nc == expect_identities,
                    f"{nc:,} identities, expected {expect_identities:,}")
            if expect_images is not None:
                add("images", len(ds) == expect_images,
                    f"{len(ds):,} images, expected {expect_images:,}")
    present = sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".bin"))
    for name in required:
        if name not in present:
            add(f"{name}.bin", False, f"{os.path.join(folder, name + '.bin')}: "
                "missing")
    for name in present:
        path = os.path.join(folder, name + ".bin")
        try:
            vset = read_bin(path, image_size=tuple(image_size))
        except Exception as err:
            add(f"{name}.bin", False, f"{path}: {err}")
            continue
        want = expect_bins.get(name)
        add(f"{name}.bin", want is None or len(vset) == want,
            f"{len(vset):,} pairs ({int(vset.issame.sum()):,} same)"
            + (f", expected {want:,}" if want is not None else ""))
    return results

"""Image folders: listing identities and images, parallel decoding with ordered results, JPEG orientation."""
import os

import numpy as np

from ..transforms import decode_image, encode_jpeg


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm")


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

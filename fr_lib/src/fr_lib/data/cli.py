"""``fr-data``: the data tools on the command line.

::

    fr-data synthetic OUT [--identities N --images K --val-pairs P ...]
    fr-data align IN OUT [--landmarks FILE]
    fr-data folder2rec IN OUT [--resize 112] [--plain-shuffled]
    fr-data pairs2bin PAIRS --images DIR -o OUT.bin
    fr-data inspect PATH [--contact-sheet OUT.png]
    fr-data verify-emore [FOLDER]

Each subcommand is a function of this module (``folder2rec(argv)`` ...), so a
notebook can run one in-process: ``fr_lib.data.cli.main(['folder2rec', ...])``
returns the exit status. Expected failures (a missing file, bad input, a full
disk) print one line ``fr-data <command>: error: ...`` and exit with status 2;
``--debug`` (or ``FR_DEBUG=1``) shows the traceback instead. ``verify-emore``
exits with 1 when a check fails. ``data_scripts/*.py`` in the repository are thin wrappers around
these commands.
"""
import argparse
import os
import signal
import sys
import time

from .tools import (EMORE_BINS, EMORE_IDENTITIES, EMORE_IMAGES, IMAGE_EXTENSIONS,
                    default_workers)

__all__ = ["DataToolError", "COMMANDS", "main", "run_command", "tool_main"]

PROG = "fr-data"


class DataToolError(Exception):
    """An expected failure of a data tool: bad input, a missing file. The
    command line prints its message as one line and exits with status 2."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM or SIGHUP (``args[0]``: the
    signal number), so ``finally`` blocks remove temporary outputs before
    the process exits."""


def _fail(message):
    raise DataToolError(message)


def _doc(text):
    """(description, epilog) of a command's docstring-like help text."""
    head, _, rest = text.strip().partition("\n\n")
    return head, rest


# -- synthetic ------------------------------------------------------------------

SYNTHETIC_HELP = """\
Write a synthetic face data set: procedurally drawn 112x112 identities in the
InsightFace layout (train.rec, train.idx, property) plus a verification .bin
whose pairs come from held-out identities.

The faces are cartoons drawn with OpenCV, not real people: they give CI and the
book's quick mode a data set with a real identity structure (see
fr_lib.data.synthetic). The same --seed and --difficulty give byte-identical
files, whatever --workers.

Example:
    fr-data synthetic out/faces_synthetic \\
        --identities 200 --images 20 --val-pairs 600 --difficulty 0.5
"""


def _synthetic_args(ap):
    ap.add_argument("output", help="output folder (created; existing train.* "
                    "files in it are replaced atomically)")
    ap.add_argument("--identities", type=int, default=100,
                    help="training identities (default 100)")
    ap.add_argument("--images", type=int, default=20,
                    help="images per training identity (default 20)")
    ap.add_argument("--val-pairs", type=int, default=600,
                    help="pairs in the .bin, half genuine and half impostor, "
                         "from held-out identities; 0 for none (default 600)")
    ap.add_argument("--val-identities", type=int, default=None,
                    help="held-out identities for the pairs "
                         "(default: identities // 4, at least 2)")
    ap.add_argument("--val-name", default="synth_val",
                    help="name of the .bin file (default synth_val)")
    ap.add_argument("--difficulty", type=float, default=0.5,
                    help="0..1: nuisance strength and closeness of identities "
                         "(default 0.5)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="rendering processes (default: the CPU cores, "
                         f"{default_workers()} here)")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")


def _synthetic(args):
    from .synthetic import write_dataset
    if args.identities < 1:
        _fail(f"--identities must be >= 1, got {args.identities}")
    if args.images < 1:
        _fail(f"--images must be >= 1, got {args.images}")
    if args.val_pairs < 0 or args.val_pairs % 2:
        _fail(f"--val-pairs must be even and >= 0, got {args.val_pairs}")
    if not 0 <= args.difficulty <= 1:
        _fail(f"--difficulty must be in [0, 1], got {args.difficulty}")
    if args.workers < 1:
        _fail(f"--workers must be >= 1, got {args.workers}")
    info = write_dataset(args.output, args.identities, args.images,
                         args.val_pairs, seed=args.seed,
                         difficulty=args.difficulty, workers=args.workers,
                         num_val_identities=args.val_identities,
                         val_name=args.val_name, quality=args.quality,
                         progress=True)
    val = info["val_identities"]
    print(f"wrote {info['out_dir']}")
    print(f"  train.rec  {info['num_images']:,} images of "
          f"{info['num_classes']:,} identities (0..{info['num_classes'] - 1}), "
          "112x112, InsightFace layout")
    if info["bin"]:
        print(f"  {os.path.basename(info['bin'])}  {info['num_val_pairs']:,} "
              f"pairs from {len(val)} held-out identities "
              f"({val.start}..{val.stop - 1})")
    print(f"  seed {args.seed}, difficulty {args.difficulty}, "
          f"{args.workers} worker(s): {info['seconds']:.1f} s, "
          f"{info['images_per_second']:.0f} images/s")
    return 0


# -- align ----------------------------------------------------------------------

ALIGN_HELP = """\
Align faces to the 112x112 ArcFace template: input folder -> output folder
with the same tree and file names.

Landmarks come from a file (--landmarks: one line "path x1 y1 ... x5 y5" per
image, the five points in ArcFace order -- left eye, right eye, nose tip, left
and right mouth corner, left/right as seen in the image -- or "path xl yl xr yr"
for the two eye centres; paths relative to the input folder), or from OpenCV's
Haar cascades bundled with opencv-python: the largest frontal face, then the
largest eye left and right of its centre in the upper 60 % of the face box.

The warp is the least-squares similarity transform (rotation, uniform scale,
shift; fr_lib.data.estimate_similarity) from the points to the template's. With
five points it is a least-squares fit; with only the two eye centres it is
exact: two points fix the four degrees of freedom of a similarity, so the eyes
land on the template's eye points (38.29, 51.70) and (73.53, 51.50) and the rest
of the face follows with the same rotation and scale. When a face is found but
not its eyes, the eye centres are guessed from the face box (27 %/73 % of the
width, 37 % of the height) unless --require-eyes. Images with no face are
listed in the summary and in not_aligned.txt in the output folder.

Example:
    fr-data align lfw/ lfw_aligned/
"""


def _align_args(ap):
    ap.add_argument("input", help="folder of images (any depth)")
    ap.add_argument("output", help="folder for the aligned images (same tree)")
    ap.add_argument("--landmarks", default=None, metavar="FILE",
                    help="read landmarks from FILE instead of detecting")
    ap.add_argument("--size", type=int, default=112,
                    help="output side; the template is scaled by size/112")
    ap.add_argument("--require-eyes", action="store_true",
                    help="skip faces whose eyes are not found instead of "
                         "guessing the eyes from the face box")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="processes (default: the CPU cores, "
                         f"{default_workers()} here)")


def _align(args):
    from tqdm import tqdm
    from .tools import (align_image, atomic_write_text, imap_ordered, list_images,
                        read_landmarks)
    if not os.path.isdir(args.input):
        _fail(f"{args.input}: no such input folder")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        _fail("the output folder must differ from the input")
    if args.size < 8:
        _fail(f"--size {args.size} is too small")
    if args.workers < 1:
        _fail(f"--workers must be >= 1, got {args.workers}")
    files = list_images(args.input)
    if args.landmarks:
        if not os.path.isfile(args.landmarks):
            _fail(f"--landmarks {args.landmarks}: no such file")
        marks = read_landmarks(args.landmarks)
        known = {os.path.normpath(f) for f in files}
        unknown = sorted(k for k in marks if k not in known)
        if unknown:
            _fail(f"{args.landmarks}: {len(unknown)} path(s) are not images in "
                  f"{args.input}, e.g. {unknown[0]}")
        files = [f for f in files if os.path.normpath(f) in marks]
    if not files:
        _fail(f"{args.input}: no images to align")
    tasks = [(os.path.join(args.input, f), os.path.join(args.output, f),
              marks[os.path.normpath(f)] if args.landmarks else None,
              args.size, args.require_eyes, args.quality) for f in files]
    t0 = time.perf_counter()
    counts, failed = {}, []
    results = imap_ordered(align_image, tasks, args.workers, chunksize=8)
    for src, how, message in tqdm(results, total=len(tasks), desc="aligning",
                                  unit="img"):
        counts[how] = counts.get(how, 0) + 1
        if how in ("no face", "no eyes", "unreadable"):
            failed.append((os.path.relpath(src, args.input), how, message))
    os.makedirs(args.output, exist_ok=True)
    atomic_write_text(os.path.join(args.output, "not_aligned.txt"), "".join(
        f"{p}\t{how}\t{msg}\n" for p, how, msg in failed))
    seconds = time.perf_counter() - t0
    done = sum(counts.get(k, 0) for k in ("landmarks", "eyes", "box"))
    print(f"aligned {done:,} of {len(tasks):,} images to {args.size}x{args.size} "
          f"in {args.output} ({seconds:.1f} s)")
    if args.landmarks:
        print(f"  from landmarks: {counts.get('landmarks', 0):,}")
    else:
        print(f"  face and both eyes found: {counts.get('eyes', 0):,}")
        print(f"  face found, eyes guessed from the box: {counts.get('box', 0):,}")
    if failed:
        print(f"  not aligned: {len(failed):,} (listed in "
              f"{os.path.join(args.output, 'not_aligned.txt')})")
        for p, how, msg in failed[:10]:
            print(f"    {p}: {how}" + (f" ({msg})" if msg and msg != how else ""))
        if len(failed) > 10:
            print(f"    ... and {len(failed) - 10} more")
    else:
        print("  not aligned: 0")
    return 0


# -- folder2rec -----------------------------------------------------------------

FOLDER2REC_HELP = """\
Pack an image folder (one sub-folder per identity) into InsightFace-layout
RecordIO: train.rec, train.idx and property.

Identity ids follow the sorted sub-folder names (0, 1, 2, ...); the mapping is
saved as identities.txt ("id<TAB>folder<TAB>images"). Images that cannot be
read or decoded are skipped and listed in skipped.txt and in the summary; a
folder left with no image gets no id. JPEGs keep their bytes unless they must
be resized or their EXIF tag says they are stored rotated (phone photos): those
are stored upright, so every decoder reads the face the right way up. With
--plain-shuffled the output is a plain rec (every record an image, records in
a random order) for DALI's readers, which need no InsightFace header.

The records are written into a temporary folder and renamed into place at the
end; an interrupted run leaves no partial output, and the temporary folder of
a killed one is removed by the next run.

Example:
    fr-data folder2rec aligned_faces/ out/my_faces --resize 112
"""


def _folder2rec_args(ap):
    ap.add_argument("input", help="folder with one sub-folder of images per identity")
    ap.add_argument("output", help="output folder for train.rec, train.idx, "
                    "property, identities.txt, skipped.txt")
    ap.add_argument("--resize", type=int, default=None, metavar="N",
                    help="resize every image to NxN (e.g. 112); without it all "
                         "images must already have the same size")
    ap.add_argument("--quality", type=int, default=95,
                    help="JPEG quality when an image is (re-)encoded (default 95)")
    ap.add_argument("--reencode", action="store_true",
                    help="re-encode JPEGs that need no resizing (default: keep "
                         "their bytes)")
    ap.add_argument("--plain-shuffled", action="store_true",
                    help="write a plain, shuffled rec (for DALI) instead of the "
                         "InsightFace layout")
    ap.add_argument("--seed", type=int, default=0,
                    help="shuffle seed for --plain-shuffled (default 0)")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="decoding/encoding processes (default: the CPU cores, "
                         f"{default_workers()} here)")
    ap.add_argument("--chunksize", type=int, default=32,
                    help="images per task sent to a worker (default 32)")
    ap.add_argument("--extensions", default=",".join(IMAGE_EXTENSIONS),
                    help="image file extensions (comma separated)")


def _folder2rec(args):
    from tqdm import tqdm
    from .recordio import write_face_rec
    from .tools import (atomic_write_text, imap_ordered, list_identity_folders,
                        load_image)
    if args.resize is not None and args.resize < 1:
        _fail(f"--resize must be a positive size, got {args.resize}")
    if args.workers < 1:
        _fail(f"--workers must be >= 1, got {args.workers}")
    exts = tuple(e if e.startswith(".") else "." + e
                 for e in args.extensions.lower().split(",") if e)
    folders = list_identity_folders(args.input, exts)
    if os.path.abspath(args.output) == os.path.abspath(args.input):
        _fail("the output folder must differ from the input")
    files = [(name, path) for name, images in folders for path in images]
    tasks = [(path, args.resize, args.quality, not args.reencode)
             for _, path in files]
    t0 = time.perf_counter()
    skipped, labels, counts = [], {}, {}
    state = {"size": None}

    def items():
        bar = tqdm(total=len(tasks), desc="packing images", unit="img")
        try:
            results = imap_ordered(load_image, tasks, args.workers, args.chunksize)
            for (folder, _), (path, data, shape, error) in zip(files, results):
                bar.update(1)
                if error is None and state["size"] is None:
                    state["size"] = shape
                elif error is None and shape != state["size"]:
                    _fail(f"{path} is {shape[0]}x{shape[1]} but earlier images "
                          f"are {state['size'][0]}x{state['size'][1]}; pass "
                          "--resize N to bring them to one size")
                if error is not None:
                    skipped.append((path, error))
                    continue
                if folder not in labels:  # ids in sorted folder order, no gaps
                    labels[folder] = len(labels)
                counts[folder] = counts.get(folder, 0) + 1
                yield labels[folder], data
        finally:
            bar.close()

    # The size is known once the first image is decoded, before the rec is
    # finished; write_face_rec needs it only at the end (for `property`).
    gen = items()
    first = None
    for first in gen:
        break
    if first is None:
        _fail(f"{args.input}: none of the {len(tasks)} image files could be "
              f"read ({skipped[0][0]}: {skipped[0][1]})" if skipped
              else f"{args.input}: no images")

    def chain():
        yield first
        yield from gen

    layout = "plain" if args.plain_shuffled else "insightface"
    info = write_face_rec(args.output, chain(), layout=layout,
                          shuffle_seed=args.seed if args.plain_shuffled else None,
                          image_size=state["size"], num_classes=None, verify=False)
    seconds = time.perf_counter() - t0
    names = [name for name, _ in folders]
    empty = [name for name in names if name not in labels]
    atomic_write_text(os.path.join(args.output, "identities.txt"), "".join(
        f"{labels[n]}\t{n}\t{counts[n]}\n" for n in names if n in labels))
    atomic_write_text(os.path.join(args.output, "skipped.txt"), "".join(
        f"{p}\t{why}\n" for p, why in skipped))
    h, w = state["size"]
    for path in info.get("removed_stale", ()):
        print(f"removed {path}, left by an earlier run that was killed")
    print(f"wrote {info['rec']} ({layout} layout"
          + (f", shuffled with seed {args.seed}" if args.plain_shuffled else "")
          + ")")
    print(f"  {info['num_images']:,} images of {len(labels):,} identities, "
          f"{h}x{w}, {seconds:.1f} s ({info['num_images'] / seconds:.0f} "
          f"images/s, {args.workers} worker(s))")
    print(f"  ids -> folders: {os.path.join(args.output, 'identities.txt')}")
    if skipped:
        print(f"  skipped {len(skipped)} unreadable image(s), listed in "
              f"{os.path.join(args.output, 'skipped.txt')}:")
        for p, why in skipped[:10]:
            print(f"    {p}: {why}")
        if len(skipped) > 10:
            print(f"    ... and {len(skipped) - 10} more")
    else:
        print("  skipped 0 images")
    if empty:
        print(f"  {len(empty)} folder(s) without a readable image got no id: "
              + ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    return 0


# -- pairs2bin ------------------------------------------------------------------

PAIRS2BIN_HELP = """\
Build a verification .bin (InsightFace's lfw.bin format) from a pairs list.

Two list formats are read:
  LFW pairs.txt   first line "folds pairs_per_fold" (e.g. "10 300") or one
                  count; then "name idx1 idx2" (same person) and
                  "name1 idx1 name2 idx2" (different people); image idx of name
                  is IMAGES/name/name_000idx.jpg (--ext changes jpg).
  CSV             "path1,path2,label" with label 1/0 (true/false, same/different);
                  an optional header line; relative paths are relative to
                  --images (default: the CSV's folder).

The .bin holds the images as JPEG bytes in pair order and one boolean per pair.
Feed it aligned 112x112 faces (see fr-data align) or pass --resize 112.

Example:
    fr-data pairs2bin lfw/pairs.txt --images lfw_aligned/ \\
        --output faces/lfw.bin
"""


def _pairs2bin_args(ap):
    ap.add_argument("pairs", help="LFW-format pairs.txt or a CSV path1,path2,label")
    ap.add_argument("--images", default=None,
                    help="image root (LFW: the folder of name/ sub-folders); "
                         "default: the pairs file's folder")
    ap.add_argument("--output", "-o", required=True, help="the .bin to write")
    ap.add_argument("--format", choices=("auto", "lfw", "csv"), default="auto",
                    help="list format (default: .csv or a comma means CSV)")
    ap.add_argument("--ext", default="jpg", help="LFW image extension (default jpg)")
    ap.add_argument("--resize", type=int, default=None, metavar="N",
                    help="resize images to NxN; without it all must have one size")
    ap.add_argument("--quality", type=int, default=95,
                    help="JPEG quality when re-encoding (default 95)")
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out pairs with a missing or unreadable image "
                         "(counted in the summary) instead of stopping")
    ap.add_argument("--protocol", type=int, default=4,
                    help="pickle protocol (2 makes a file Python 2 reads)")


def _pairs2bin(args):
    from tqdm import tqdm
    from .binfile import write_bin
    from .tools import load_image, read_pairs
    if not os.path.isfile(args.pairs):
        _fail(f"{args.pairs}: no such pairs file")
    if args.images is not None and not os.path.isdir(args.images):
        _fail(f"--images {args.images}: no such folder")
    if not args.output.endswith(".bin"):
        _fail(f"--output {args.output}: the name must end in .bin")
    pairs = read_pairs(args.pairs, args.images, args.format, args.ext)
    t0 = time.perf_counter()
    images, issame, skipped, size = [], [], [], None
    cache = {}
    for lineno, a, b, same in tqdm(pairs, desc="reading pairs", unit="pair"):
        got = []
        for path in (a, b):
            if path not in cache:
                if not os.path.isfile(path):
                    cache[path] = (None, None, "missing")
                else:
                    _, data, shape, error = load_image(
                        (path, args.resize, args.quality, True))
                    cache[path] = (data, shape, error)
            data, shape, error = cache[path]
            if error is not None:
                if not args.skip_missing:
                    _fail(f"{args.pairs}: line {lineno}: {path}: "
                          + ("no such image" if error == "missing" else error)
                          + " (pass --skip-missing to leave such pairs out)")
                skipped.append((lineno, path, error))
                break
            if size is None:
                size = shape
            elif shape != size:
                _fail(f"{args.pairs}: line {lineno}: {path} is "
                      f"{shape[0]}x{shape[1]} but earlier images are "
                      f"{size[0]}x{size[1]}; pass --resize N")
            got.append(data)
        if len(got) == 2:
            images += got
            issame.append(same)
    if not issame:
        _fail(f"{args.pairs}: no pair left to write ({len(skipped)} skipped)")
    out = write_bin(args.output, images, issame, protocol=args.protocol)
    seconds = time.perf_counter() - t0
    n_same = sum(issame)
    print(f"wrote {out}")
    print(f"  {len(issame):,} pairs ({n_same:,} same, {len(issame) - n_same:,} "
          f"different), {len(cache):,} distinct images of {size[0]}x{size[1]}, "
          f"{seconds:.1f} s")
    if skipped:
        print(f"  skipped {len(skipped)} pair(s) with a missing or unreadable "
              "image:")
        for lineno, path, why in skipped[:10]:
            print(f"    line {lineno}: {path}: {why}")
        if len(skipped) > 10:
            print(f"    ... and {len(skipped) - 10} more")
    return 0


# -- inspect --------------------------------------------------------------------

INSPECT_HELP = """\
Describe a training folder (train.rec/train.idx/property) or a .bin file,
and optionally draw a contact sheet.

For a folder: layout (InsightFace or plain), images, classes, property, image
sizes of the first records, a text histogram of images per identity, and a
one-line summary of every .bin beside it. For a .bin: pairs, same/different,
image size. --contact-sheet draws the first identities' images in rows
labelled with their class id, or, for a .bin, the first pairs side by side
labelled same/diff.

Example:
    fr-data inspect ~/.mxnet/datasets/face/emore --contact-sheet emore.png
"""


def _inspect_args(ap):
    ap.add_argument("path", help="a folder with train.rec/train.idx, a .rec "
                    "file, or a .bin file")
    ap.add_argument("--contact-sheet", metavar="OUT.png", default=None,
                    help="save a grid of images as PNG")
    ap.add_argument("--identities", type=int, default=8,
                    help="rows of the contact sheet (default 8)")
    ap.add_argument("--per-identity", type=int, default=8,
                    help="images per row (default 8)")
    ap.add_argument("--pairs", type=int, default=16,
                    help="pairs drawn for a .bin (default 16)")
    ap.add_argument("--no-bins", action="store_true",
                    help="do not read the .bin files beside a rec")
    ap.add_argument("--quick", action="store_true",
                    help="trust the files (check=False): fast for millions of "
                         "images, labels from the identity records")


def _save_png(path, rgb):
    import cv2
    from .tools import atomic_write_bytes
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:  # pragma: no cover
        _fail(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())
    print(f"contact sheet: {path} ({rgb.shape[1]}x{rgb.shape[0]})")


def _bin_lines(path, keep_raw=False):
    from .binfile import read_bin
    from .tools import describe_bin
    try:
        vset = read_bin(path, keep_raw=keep_raw)
    except ValueError as err:
        if "expected 112x112" not in str(err):
            raise
        vset = read_bin(path, keep_raw=keep_raw, resize=True)
        return vset, describe_bin(vset) + ["  (images are not 112x112: shown "
                                           "resized)"]
    return vset, describe_bin(vset)


def _inspect(args):
    from .recordio import FaceRecordDataset
    from .tools import contact_sheet, describe_rec, pair_sheet
    path = os.path.expanduser(args.path)
    if not os.path.exists(path):
        from .root import resolve_data_dir
        path = resolve_data_dir(path)  # emore under its old name: a warning
    if not os.path.exists(path):
        _fail(f"{path}: no such file or folder")
    if args.contact_sheet and not args.contact_sheet.lower().endswith(".png"):
        _fail(f"--contact-sheet {args.contact_sheet}: give a .png name")
    if path.endswith(".bin"):
        vset, lines = _bin_lines(path, keep_raw=bool(args.contact_sheet))
        print("\n".join(lines))
        if args.contact_sheet:
            _save_png(args.contact_sheet, pair_sheet(vset, args.pairs))
        return 0
    ds = FaceRecordDataset(path, check=not args.quick, progress=True)
    print("\n".join(describe_rec(ds)))
    folder = os.path.dirname(os.path.abspath(ds.rec_path))
    bins = sorted(n for n in os.listdir(folder) if n.endswith(".bin"))
    if bins:
        print(f"verification sets beside it ({len(bins)}):")
        for name in bins:
            if args.no_bins:
                print(f"  {name}")
                continue
            try:
                vset, lines = _bin_lines(os.path.join(folder, name))
                print(f"  {name:<14} " + lines[1].split(None, 1)[1]
                      + ", " + lines[2].split(None, 1)[1])
            except (OSError, ValueError) as err:
                print(f"  {name:<14} UNREADABLE: {err}")
    if args.contact_sheet:
        _save_png(args.contact_sheet,
                  contact_sheet(ds, args.identities, args.per_identity))
    return 0


# -- verify-emore ---------------------------------------------------------------

VERIFY_HELP = """\
Check a downloaded training folder: MS1M-ArcFace (emore) by default, any
InsightFace-layout folder with --expect-identities/--expect-images.

Checks: train.rec, train.idx and property are present; the records are in the
InsightFace layout; every image record's header is readable (--full: every
image decodes); property agrees with the records (class count, identity
records, labels 0..C-1, 112x112); the identity and image counts are the
expected ones (emore: 85,742 identities, 5,822,653 images); every .bin in the
folder reads and has its expected pair count (lfw 6000, cfp_fp 7000, agedb_30
6000, calfw 6000, cplfw 6000, cfp_ff 7000, vgg2_fp 5000), and lfw, cfp_fp,
agedb_30 are present. Exit status 0 when all checks pass, 1 otherwise.

The default folder is <data root>/emore; a folder still named after
InsightFace's faces_emore.zip is used when emore is absent, with a warning.

Examples:
    fr-data verify-emore            # ~/.mxnet/datasets/face/emore
    fr-data verify-emore out/faces_synthetic \\
        --expect-identities 100 --expect-images 2000 --bins synth_val=600
"""


def _bins(text):
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, count = part.partition("=")
        try:
            out[name.strip()] = int(count)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--bins: {part!r} is not name=pairs (e.g. lfw=6000)") from None
    return out


def _verify_args(ap):
    ap.add_argument("folder", nargs="?", default=None,
                    help="data folder (default: <data root>/emore, the data "
                         "root being $FR_DATA_ROOT or ~/.mxnet/datasets/face)")
    ap.add_argument("--expect-identities", type=int, default=EMORE_IDENTITIES,
                    help=f"expected identities (default {EMORE_IDENTITIES:,}); "
                         "-1: do not check")
    ap.add_argument("--expect-images", type=int, default=EMORE_IMAGES,
                    help=f"expected images (default {EMORE_IMAGES:,}); -1: do "
                         "not check")
    ap.add_argument("--bins", type=_bins, default=None, metavar="NAME=PAIRS,...",
                    help="expected .bin files and pair counts; when given, these "
                         "(instead of lfw, cfp_fp, agedb_30) are required")
    ap.add_argument("--full", action="store_true",
                    help="decode every training image (slow: ~20 min for emore)")


def _verify(args):
    from .root import get_dataset_dir, resolve_data_dir
    from .tools import check_dataset
    folder = resolve_data_dir(args.folder) if args.folder else get_dataset_dir()
    expect_bins = dict(EMORE_BINS)
    required = None
    if args.bins is not None:
        expect_bins.update(args.bins)
        required = list(args.bins)
    t0 = time.perf_counter()
    results = check_dataset(
        folder,
        expect_identities=None if args.expect_identities < 0
        else args.expect_identities,
        expect_images=None if args.expect_images < 0 else args.expect_images,
        expect_bins=expect_bins, required_bins=required, full=args.full,
        progress=True)
    print(f"checking {folder}")
    for name, ok, message in results:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name:<20} {message}")
    failed = [r for r in results if not r[1]]
    seconds = time.perf_counter() - t0
    if failed:
        print(f"{len(failed)} of {len(results)} checks FAILED ({seconds:.1f} s)")
        if not os.path.isdir(folder) or any(n == "train.rec" for n, _, _ in failed):
            print("Get the data from InsightFace's dataset zoo (MS1M-ArcFace, "
                  "faces_emore.zip), unzip it and rename the folder to "
                  f"{get_dataset_dir(warn=False)}; see data_scripts/README.md.")
        return 1
    print(f"all {len(results)} checks passed ({seconds:.1f} s)")
    return 0


# -- the command line ------------------------------------------------------------

#: name -> (help text, add-arguments function, run function)
COMMANDS = {
    "synthetic": (SYNTHETIC_HELP, _synthetic_args, _synthetic),
    "align": (ALIGN_HELP, _align_args, _align),
    "folder2rec": (FOLDER2REC_HELP, _folder2rec_args, _folder2rec),
    "pairs2bin": (PAIRS2BIN_HELP, _pairs2bin_args, _pairs2bin),
    "inspect": (INSPECT_HELP, _inspect_args, _inspect),
    "verify-emore": (VERIFY_HELP, _verify_args, _verify),
}

_SHORT = {
    "synthetic": "write a synthetic identity set (rec + .bin)",
    "align": "detect and align faces to the 112x112 ArcFace template",
    "folder2rec": "pack one-folder-per-identity images into train.rec/idx",
    "pairs2bin": "build a verification .bin from a pairs list",
    "inspect": "describe a rec folder or a .bin, draw a contact sheet",
    "verify-emore": "check a training folder (emore by default)",
}

_EXAMPLES = """\
examples:
  fr-data synthetic out/faces_synthetic --identities 200 --images 20
  fr-data align photos/ aligned/
  fr-data folder2rec aligned/ out/my_faces --resize 112
  fr-data pairs2bin lfw/pairs.txt --images lfw_aligned/ -o out/lfw.bin
  fr-data inspect out/my_faces --contact-sheet sheet.png
  fr-data verify-emore

fr-data COMMAND --help describes a command. Errors are one line (exit status
2); --debug (or FR_DEBUG=1) shows the traceback.
"""


def _add_command(ap, name):
    text, add_args, _ = COMMANDS[name]
    add_args(ap)
    ap.add_argument("--debug", action="store_true",
                    help="show the full traceback of an error")
    return ap


def _command_parser(name, prog=None):
    text = COMMANDS[name][0]
    description, epilog = _doc(text)
    ap = argparse.ArgumentParser(
        prog=prog or f"{PROG} {name}", description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return _add_command(ap, name)


def build_parser():
    """The ``fr-data`` argument parser (one sub-parser per command)."""
    ap = argparse.ArgumentParser(
        prog=PROG, description="Prepare face data: synthetic identities, "
        "alignment, RecordIO packing, verification pairs, inspection and checks.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", dest="debug_all", action="store_true",
                    help="show the full traceback of an error")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (text, _, _) in COMMANDS.items():
        description, epilog = _doc(text)
        sp = sub.add_parser(name, help=_SHORT[name],
                            description=description, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_command(sp, name)
    return ap


# Exceptions a user causes (bad input, a missing file, a full disk): one line.
_EXPECTED = (DataToolError, OSError, ValueError, ImportError)


def _debug(flag):
    """``--debug`` or ``FR_DEBUG=1``: raise errors with their traceback."""
    return bool(flag) or os.environ.get("FR_DEBUG", "") not in ("", "0")


def _on_sigterm(signum, frame):
    raise Terminated(signum)


def run_command(name, argv=None, prog=None):
    """Run command ``name`` with its arguments ``argv`` as the command line
    does: expected failures print one line on stderr and return 2.

    Returns
    -------
    int
        The exit status.
    """
    if name not in COMMANDS:
        raise ValueError(f"unknown fr-data command {name!r}; the commands are: "
                         + ", ".join(COMMANDS))
    args = _command_parser(name, prog).parse_args(argv)
    return _execute(name, args, prog or f"{PROG} {name}", _debug(args.debug))


def _execute(name, args, prog, debug):
    previous = {}
    for sig in ("SIGTERM", "SIGHUP"):  # kill's default; a closed terminal
        if hasattr(signal, sig):
            try:  # only the main thread may set handlers
                previous[sig] = signal.signal(getattr(signal, sig), _on_sigterm)
            except ValueError:
                pass
    try:
        return COMMANDS[name][2](args)
    except Terminated as stop:
        if debug:
            raise
        print(f"{prog}: terminated (temporary outputs removed)", file=sys.stderr)
        return 128 + int(stop.args[0] if stop.args else signal.SIGTERM)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted (temporary outputs removed)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the point of the command line
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, _EXPECTED):
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        print(f"{prog}: internal error: {type(err).__name__}: {message} (rerun "
              "with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(getattr(signal, sig), handler)


def main(argv=None):
    """Entry point of ``fr-data`` (see ``fr-data --help``).

    Returns
    -------
    int
        0 on success, 1 when ``verify-emore`` finds a failed check, 2 on an
        error (one line on stderr; ``--debug`` raises it instead).
    """
    args = build_parser().parse_args(argv)
    debug = _debug(args.debug or args.debug_all)
    return _execute(args.command, args, f"{PROG} {args.command}", debug)


def tool_main(name, argv=None, prog=None):
    """Run command ``name`` in-process the way ``data_scripts/<tool>.py``'s
    ``main(argv)`` always has: the exit status is returned, and an expected
    failure raises ``SystemExit('error: ...')`` (so a test can match it)."""
    args = _command_parser(name, prog).parse_args(argv)
    try:
        return COMMANDS[name][2](args)
    except _EXPECTED as err:
        if args.debug:
            raise
        raise SystemExit(f"error: {' '.join(str(err).split())}") from err


if __name__ == "__main__":  # python -m fr_lib.data.cli
    sys.exit(main())

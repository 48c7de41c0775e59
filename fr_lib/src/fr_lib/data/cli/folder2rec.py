"""``fr-data folder2rec``: pack one-folder-per-identity images into train.rec/idx.

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import os
import time

from ..tools import IMAGE_EXTENSIONS, default_workers
from .common import fail

SHORT = "pack one-folder-per-identity images into train.rec/idx"

HELP = """\
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


def add_arguments(ap):
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


def run(args):
    from tqdm import tqdm
    from ..recordio import write_face_rec
    from ..tools import (atomic_write_text, imap_ordered, list_identity_folders,
                        load_image)
    if args.resize is not None and args.resize < 1:
        fail(f"--resize must be a positive size, got {args.resize}")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
    exts = tuple(e if e.startswith(".") else "." + e
                 for e in args.extensions.lower().split(",") if e)
    folders = list_identity_folders(args.input, exts)
    if os.path.abspath(args.output) == os.path.abspath(args.input):
        fail("the output folder must differ from the input")
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
                    fail(f"{path} is {shape[0]}x{shape[1]} but earlier images "
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
        fail(f"{args.input}: none of the {len(tasks)} image files could be "
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

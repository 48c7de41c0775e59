#!/usr/bin/env python
"""Pack an image folder (one sub-folder per identity) into InsightFace-layout
RecordIO: train.rec, train.idx and property.

Identity ids follow the sorted sub-folder names (0, 1, 2, ...); the mapping is
saved as identities.txt ("id<TAB>folder<TAB>images"). Images that cannot be
read or decoded are skipped and listed in skipped.txt and in the summary; a
folder left with no image gets no id. With --plain-shuffled the output is a
plain rec (every record an image, records in a random order) for DALI's
readers, which need no InsightFace header.

Example:
    python data_scripts/folder2rec.py aligned_faces/ out/my_faces --resize 112
"""
import argparse
import os
import sys
import time

try:
    import fr_lib  # noqa: F401  (before mxnet)
except ImportError:  # running from a checkout without `pip install -e fr_lib`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "fr_lib", "src"))
    import fr_lib  # noqa: F401

from tqdm import tqdm

from fr_lib.data.recordio import write_face_rec
from fr_lib.data.tools import (IMAGE_EXTENSIONS, atomic_write_text, default_workers,
                               imap_ordered, list_identity_folders, load_image)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.resize is not None and args.resize < 1:
        raise SystemExit(f"--resize must be a positive size, got {args.resize}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    exts = tuple(e if e.startswith(".") else "." + e
                 for e in args.extensions.lower().split(",") if e)
    try:
        folders = list_identity_folders(args.input, exts)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    if os.path.abspath(args.output) == os.path.abspath(args.input):
        raise SystemExit("error: the output folder must differ from the input")
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
                    raise SystemExit(
                        f"error: {path} is {shape[0]}x{shape[1]} but earlier "
                        f"images are {state['size'][0]}x{state['size'][1]}; "
                        "pass --resize N to bring them to one size")
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
        raise SystemExit(f"error: {args.input}: none of the {len(tasks)} image "
                         f"files could be read ({skipped[0][0]}: {skipped[0][1]})"
                         if skipped else f"error: {args.input}: no images")

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


if __name__ == "__main__":
    sys.exit(main())

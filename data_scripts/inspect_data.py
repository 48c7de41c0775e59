#!/usr/bin/env python
"""Describe a training folder (train.rec/train.idx/property) or a .bin file,
and optionally draw a contact sheet.

For a folder: layout (InsightFace or plain), images, classes, property, image
sizes of the first records, a text histogram of images per identity, and a
one-line summary of every .bin beside it. For a .bin: pairs, same/different,
image size. --contact-sheet draws the first identities' images in rows
labelled with their class id, or, for a .bin, the first pairs side by side
labelled same/diff.

Example:
    python data_scripts/inspect_data.py ~/.mxnet/datasets/face/faces_emore \\
        --contact-sheet emore.png
"""
import argparse
import os
import sys

try:
    import fr_lib  # noqa: F401  (before mxnet)
except ImportError:  # running from a checkout without `pip install -e fr_lib`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "fr_lib", "src"))
    import fr_lib  # noqa: F401

from fr_lib.data.binfile import read_bin
from fr_lib.data.recordio import FaceRecordDataset
from fr_lib.data.tools import (atomic_write_bytes, contact_sheet, describe_bin,
                               describe_rec, pair_sheet)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return ap.parse_args(argv)


def _save_png(path, rgb):
    import cv2
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:  # pragma: no cover
        raise SystemExit(f"error: could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())
    print(f"contact sheet: {path} ({rgb.shape[1]}x{rgb.shape[0]})")


def _bin_lines(path, keep_raw=False):
    try:
        vset = read_bin(path, keep_raw=keep_raw)
    except ValueError as err:
        if "expected 112x112" not in str(err):
            raise
        vset = read_bin(path, keep_raw=keep_raw, resize=True)
        return vset, describe_bin(vset) + ["  (images are not 112x112: shown "
                                           "resized)"]
    return vset, describe_bin(vset)


def main(argv=None):
    args = parse_args(argv)
    path = os.path.expanduser(args.path)
    if not os.path.exists(path):
        raise SystemExit(f"error: {path}: no such file or folder")
    if args.contact_sheet and not args.contact_sheet.lower().endswith(".png"):
        raise SystemExit(f"error: --contact-sheet {args.contact_sheet}: give a "
                         ".png name")
    try:
        if path.endswith(".bin"):
            vset, lines = _bin_lines(path, keep_raw=bool(args.contact_sheet))
            print("\n".join(lines))
            if args.contact_sheet:
                _save_png(args.contact_sheet, pair_sheet(vset, args.pairs))
            return 0
        ds = FaceRecordDataset(path, check=not args.quick, progress=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
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


if __name__ == "__main__":
    sys.exit(main())

"""``fr-data inspect``: describe a rec folder or a .bin, draw a contact sheet.

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import os

from .common import fail

SHORT = "describe a rec folder or a .bin, draw a contact sheet"

HELP = """\
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


def add_arguments(ap):
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
    from ..tools import atomic_write_bytes
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:  # pragma: no cover
        fail(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())
    print(f"contact sheet: {path} ({rgb.shape[1]}x{rgb.shape[0]})")


def _bin_lines(path, keep_raw=False):
    from ..binfile import read_bin
    from ..tools import describe_bin
    try:
        vset = read_bin(path, keep_raw=keep_raw)
    except ValueError as err:
        if "expected 112x112" not in str(err):
            raise
        vset = read_bin(path, keep_raw=keep_raw, resize=True)
        return vset, describe_bin(vset) + ["  (images are not 112x112: shown "
                                           "resized)"]
    return vset, describe_bin(vset)


def run(args):
    from ..recordio import FaceRecordDataset
    from ..tools import contact_sheet, describe_rec, pair_sheet
    path = os.path.expanduser(args.path)
    if not os.path.exists(path):
        from ..root import resolve_data_dir
        path = resolve_data_dir(path)  # emore under its old name: a warning
    if not os.path.exists(path):
        fail(f"{path}: no such file or folder")
    if args.contact_sheet and not args.contact_sheet.lower().endswith(".png"):
        fail(f"--contact-sheet {args.contact_sheet}: give a .png name")
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

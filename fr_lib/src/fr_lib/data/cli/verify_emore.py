"""``fr-data verify-emore``: check a training folder (emore by default).

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import argparse
import os
import time

from ..tools import EMORE_BINS, EMORE_IDENTITIES, EMORE_IMAGES

SHORT = "check a training folder (emore by default)"

HELP = """\
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


def add_arguments(ap):
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


def run(args):
    from ..root import get_dataset_dir, resolve_data_dir
    from ..tools import check_dataset
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

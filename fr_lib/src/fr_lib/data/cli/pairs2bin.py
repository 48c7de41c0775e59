"""``fr-data pairs2bin``: build a verification .bin from a pairs list.

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import os
import time

from .common import fail

SHORT = "build a verification .bin from a pairs list"

HELP = """\
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


def add_arguments(ap):
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


def run(args):
    from tqdm import tqdm
    from ..binfile import write_bin
    from ..tools import load_image, read_pairs
    if not os.path.isfile(args.pairs):
        fail(f"{args.pairs}: no such pairs file")
    if args.images is not None and not os.path.isdir(args.images):
        fail(f"--images {args.images}: no such folder")
    if not args.output.endswith(".bin"):
        fail(f"--output {args.output}: the name must end in .bin")
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
                    fail(f"{args.pairs}: line {lineno}: {path}: "
                          + ("no such image" if error == "missing" else error)
                          + " (pass --skip-missing to leave such pairs out)")
                skipped.append((lineno, path, error))
                break
            if size is None:
                size = shape
            elif shape != size:
                fail(f"{args.pairs}: line {lineno}: {path} is "
                      f"{shape[0]}x{shape[1]} but earlier images are "
                      f"{size[0]}x{size[1]}; pass --resize N")
            got.append(data)
        if len(got) == 2:
            images += got
            issame.append(same)
    if not issame:
        fail(f"{args.pairs}: no pair left to write ({len(skipped)} skipped)")
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

"""``fr-data synthetic``: write a synthetic identity set (rec + .bin).

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import os

from ..tools import default_workers
from .common import fail

SHORT = "write a synthetic identity set (rec + .bin)"

HELP = """\
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


def add_arguments(ap):
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


def run(args):
    from ..synthetic import write_dataset
    if args.identities < 1:
        fail(f"--identities must be >= 1, got {args.identities}")
    if args.images < 1:
        fail(f"--images must be >= 1, got {args.images}")
    if args.val_pairs < 0 or args.val_pairs % 2:
        fail(f"--val-pairs must be even and >= 0, got {args.val_pairs}")
    if not 0 <= args.difficulty <= 1:
        fail(f"--difficulty must be in [0, 1], got {args.difficulty}")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
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

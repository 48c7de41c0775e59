"""``fr-data align``: detect and align faces to the 112x112 ArcFace template.

``HELP`` is the command's help text (its first paragraph the description),
``add_arguments(parser)`` declares its options and ``run(args)`` does the
work; :mod:`fr_lib.data.cli.parser` puts the commands together.
"""
import os
import time

from ..tools import default_workers
from .common import fail

SHORT = "detect and align faces to the 112x112 ArcFace template"

HELP = """\
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


def add_arguments(ap):
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


def run(args):
    from tqdm import tqdm
    from ..tools import (align_image, atomic_write_text, imap_ordered, list_images,
                        read_landmarks)
    if not os.path.isdir(args.input):
        fail(f"{args.input}: no such input folder")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        fail("the output folder must differ from the input")
    if args.size < 8:
        fail(f"--size {args.size} is too small")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
    files = list_images(args.input)
    if args.landmarks:
        if not os.path.isfile(args.landmarks):
            fail(f"--landmarks {args.landmarks}: no such file")
        marks = read_landmarks(args.landmarks)
        known = {os.path.normpath(f) for f in files}
        unknown = sorted(k for k in marks if k not in known)
        if unknown:
            fail(f"{args.landmarks}: {len(unknown)} path(s) are not images in "
                  f"{args.input}, e.g. {unknown[0]}")
        files = [f for f in files if os.path.normpath(f) in marks]
    if not files:
        fail(f"{args.input}: no images to align")
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

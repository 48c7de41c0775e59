"""The logic behind ``data_scripts/``: image folders, pair lists, face detection,
summaries, contact sheets and data set checks.

The command-line tools are thin ``argparse`` wrappers around these functions,
so a notebook can call the same code. Worker functions live here (a module
that child processes can import) rather than in the scripts.

Split by responsibility: :mod:`.folders` (image folders, workers, JPEG
orientation), :mod:`.pairs` (pair lists), :mod:`.detect` (detection, landmarks,
alignment) and :mod:`.summary` (summaries, contact sheets, the emore check).
Every public name is importable from here.
"""
from ...utils.fileio import atomic_write_bytes, atomic_write_text
from .folders import (IMAGE_EXTENSIONS, default_workers, list_identity_folders,
                      list_images, imap_ordered, child_init, jpeg_orientation,
                      load_image)
from .pairs import read_lfw_pairs, read_pair_csv, read_pairs
from .detect import read_landmarks, FaceEyeDetector, eyes_from_box, align_image
from .summary import (text_histogram, describe_rec, describe_bin, contact_sheet,
                      pair_sheet, check_dataset, EMORE_IDENTITIES, EMORE_IMAGES,
                      EMORE_BINS)

__all__ = ["IMAGE_EXTENSIONS", "default_workers", "atomic_write_text",
           "atomic_write_bytes", "list_identity_folders", "list_images",
           "imap_ordered", "child_init", "jpeg_orientation", "load_image", "read_lfw_pairs", "read_pair_csv",
           "read_pairs", "read_landmarks", "FaceEyeDetector", "eyes_from_box",
           "align_image",
           "text_histogram", "describe_rec", "describe_bin", "contact_sheet",
           "pair_sheet", "check_dataset", "EMORE_IDENTITIES", "EMORE_IMAGES",
           "EMORE_BINS"]

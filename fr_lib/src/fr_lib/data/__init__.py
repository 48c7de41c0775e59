"""Face data: where it lives on disk and how faces are aligned."""
from .root import DATA_ROOT_ENV, get_data_root
from .align import (ARCFACE_TEMPLATE, LANDMARK_NAMES, estimate_similarity,
                    apply_transform, align_face)

__all__ = ["DATA_ROOT_ENV", "get_data_root", "ARCFACE_TEMPLATE",
           "LANDMARK_NAMES", "estimate_similarity", "apply_transform", "align_face"]

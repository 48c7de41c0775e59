"""``python -m fr_lib.recipes``: the same as ``fr-train``."""
import sys

from . import train_main

sys.exit(train_main())

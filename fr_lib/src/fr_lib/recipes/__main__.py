"""``python -m fr_lib.recipes``: the same as ``fr-train``."""
import sys

from . import train_main

if __name__ == "__main__":
    sys.exit(train_main())

"""``python -m fr_lib.data.cli``: the same program as ``fr-data``."""
import sys

from .parser import main

sys.exit(main())

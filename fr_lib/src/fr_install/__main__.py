"""``python -m fr_install``."""
import sys

from fr_install import main

if __name__ == "__main__":
    sys.exit(main())

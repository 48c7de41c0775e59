"""``python -m fr_lib.train.launch -n 2 -s 1 -- python train.py``."""
import sys

from fr_lib.train.launch import main

if __name__ == "__main__":
    sys.exit(main())

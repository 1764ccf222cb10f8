"""`python -m lowshot ...` (and `torchrun ... -m lowshot bench ...`): the `lowshot` command line."""
import sys

from lowshot.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())

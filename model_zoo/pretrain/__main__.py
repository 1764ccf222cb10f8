"""`python -m model_zoo.pretrain ...` (also under torchrun): the same arguments as `lowshot pretrain`."""
import argparse
import sys

from .cli import add_pretrain_arguments, run_pretrain

if __name__ == "__main__":
    parser = add_pretrain_arguments(argparse.ArgumentParser(prog="python -m model_zoo.pretrain",
                                                            description=__doc__))
    sys.exit(run_pretrain(parser.parse_args()))

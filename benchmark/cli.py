"""The `lowshot` command line."""
from __future__ import annotations

import argparse
import sys


def cmd_models(args) -> int:
    from model_zoo import REGISTRY
    from model_zoo.download import is_cached

    rows = [(e.name, e.method, f"{e.arch}/{e.patch_size}", f"{e.num_params / 1e6:.1f}M", e.lowshot_feature,
             "bundled" if e.bundled else ("yes" if is_cached(e.file_name) else "no"), e.url or e.bundled)
            for e in REGISTRY.values()]
    header = ("name", "method", "arch", "params", "lowshot feature", "cached", "source")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model zoo").set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

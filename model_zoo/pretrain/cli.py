"""Command-line face of pre-training: `add_pretrain_arguments(parser)` + `config_from_args(args)`; the command
itself is `lowshot pretrain` (benchmark/cli.py), which also passes in the `--data embedded` images.

    lowshot pretrain --method maskcluster --arch vit_small --data DIR|embedded --out DIR [--steps N] [--resume]
    torchrun --nproc_per_node 4 -m lowshot pretrain --method dino --data /imagenet/train --out runs/dino

Any config field (see config.py and each recipe's defaults) can be set with --set KEY=VALUE (JSON values:
--set collapse='["sinkhorn","memax"]' --set mask_ratio=0.5).
"""
from __future__ import annotations

import argparse
import json
import math

from ..registry import ARCHS
from .recipes import RECIPES, make_config

# The tiny models shipped with the package (64 px, patch 8): embed_dim, depth, num_heads.
TINY = (96, 4, 3)
ARCH_CHOICES = ("tiny", *ARCHS)


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.add_argument("--method", choices=sorted(RECIPES), default="maskcluster", help="pre-training recipe")
    p.add_argument("--arch", choices=ARCH_CHOICES, default="tiny",
                   help=f"ViT size (tiny = dim {TINY[0]}, depth {TINY[1]}, {TINY[2]} heads)")
    p.add_argument("--data", default="embedded", help="'embedded' (the synthetic train pool) or an image folder")
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt, <name>.safetensors, log")
    p.add_argument("--name", default="backbone", help="file name (without suffix) of the final backbone")
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, help="images per process and step")
    p.add_argument("--lr", type=float, help="peak learning rate (after warm-up)")
    p.add_argument("--seed", type=int,
                   help="random seed of the run: initialisation, augmentations and data order (default 0)")
    p.add_argument("--img-size", type=int, help="global crop size (default: 64 for embedded/tiny, else 224)")
    p.add_argument("--patch-size", type=int, help="default: 8 for tiny, else 16")
    p.add_argument("--max-images", type=int, help="use at most this many training images")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--ckpt-every", type=int, help="steps between training checkpoints")
    p.add_argument("--log-every", type=int, help="steps between progress lines")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the process's GPU if any)")
    p.add_argument("--bf16", action="store_true",
                   help="forward pass and losses under bf16 autocast (CUDA or CPU); weights and optimizer in float32")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field (JSON value)")
    return parser


def config_from_args(args: argparse.Namespace):
    dim, depth, heads = TINY if args.arch == "tiny" else ARCHS[args.arch]
    img = args.img_size or (64 if args.arch == "tiny" or args.data == "embedded" else 224)
    patch = args.patch_size or (8 if args.arch == "tiny" else 16)
    overrides = dict(embed_dim=dim, depth=depth, num_heads=heads, img_size=img, patch_size=patch, data=args.data,
                     local_size=patch * math.ceil(img * 96 / 224 / patch))
    for key, field in [("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"), ("seed", "seed"),
                       ("max_images", "max_images"), ("num_workers", "num_workers"), ("ckpt_every", "ckpt_every"),
                       ("log_every", "log_every")]:
        if getattr(args, key) is not None:
            overrides[field] = getattr(args, key)
    return make_config(args.method, **{**overrides, **parse_overrides(args.set)})  # --set wins


def parse_overrides(items: list[str]) -> dict:
    """--set KEY=VALUE items -> {key: JSON value (a bare word stays a string)}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

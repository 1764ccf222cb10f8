"""The tiny models shipped in model_zoo/weights/: five recipes pre-trained on the embedded dataset, plus
`random-tiny` (same architecture, seeded random init) as the baseline they must beat.

    python -m model_zoo.pretrain.tiny            # `make pretrain-tiny`: train all, write weights, probe, print sha256
    python -m model_zoo.pretrain.tiny --methods dino --probe-only
    python -m model_zoo.pretrain.tiny --ablation centering memax sinkhorn --out build/ablation-collapse

Pre-training reads the classification train pool of the embedded dataset (20,800 images, labels unused;
object-centric like ImageNet, which the paper pre-trains on). The runs are deterministic given the seed, but
bit-exact regeneration (same sha256) holds only on the same machine, thread count and torch / timm versions.
The probe: logistic regression on the method's low-shot feature (`cls`; `cls_prenorm` for MSN) of
PROBE_PER_CLASS train images per class, accuracy on the embedded classification test set (800 images).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import backbone_config, save_backbone
from .cli import TINY, parse_overrides
from .recipes import make_config
from .train import train

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
METHODS = ("dino", "ibot", "msn", "mae", "maskcluster")
SEED = 0
THREADS = 1  # part of what makes a regeneration bit-exact; also leaves a core to the rest of the machine
PROBE_PER_CLASS = 40

# Shared by all five: 64 px, patch 8, ViT dim 96 / depth 4 / 3 heads, batch 64, seed 0. The teacher momentum
# starts at 0.97, not 0.996: over ~200 steps a 0.996 EMA would keep ~2/3 of the random init in the teacher
# (the weight left on the init is exp(-(1 - m0) * steps / 2) under the cosine schedule).
COMMON = dict(embed_dim=TINY[0], depth=TINY[1], num_heads=TINY[2], img_size=64, patch_size=8, local_size=32,
              batch_size=64, seed=SEED, momentum_teacher=0.97, log_every=20, ckpt_every=50)
# Steps per recipe: about 10 minutes each on one core of the development machine (a step's cost differs:
# measured ~1.3 s dino, 1.5 s ibot, 1.0 s msn, 0.4 s mae, 1.6 s maskcluster, rendering included).
SETTINGS = {
    "dino": dict(steps=400, n_local=2, lr=1e-3, warmup_steps=30),
    "ibot": dict(steps=360, n_local=2, lr=1e-3, warmup_steps=30),
    "msn": dict(steps=540, n_local=2, lr=1e-3, warmup_steps=40),
    "mae": dict(steps=1350, lr=1.5e-3, warmup_steps=80),
    "maskcluster": dict(steps=340, lr=1e-3, warmup_steps=30),
}


# The collapse-avoidance ablation (`--ablation`): MaskCluster's recipe (centering + ME-MAX) with one part alone.
ABLATION = {"centering": ("centering",), "memax": ("memax",), "sinkhorn": ("sinkhorn",)}


def tiny_config(method: str, **overrides):
    return make_config(method, **{**COMMON, **SETTINGS.get(method, {}), **overrides})


def write_random_tiny(path: Path) -> Path:
    """Seeded random init of the tiny architecture (the teacher at step 0 = the student's init), DINO rules."""
    cfg = tiny_config("dino", steps=0)
    from .model import PretrainModel

    torch.manual_seed(cfg.seed)
    model = PretrainModel(cfg)
    return save_backbone(path, model.backbone(), {**backbone_config(cfg, 0), "random_init": True})


def _probe_split(split: str, per_class: int | None):
    from tasks.datasets.synthetic import SyntheticScenes

    scenes = SyntheticScenes("classification", split, 64)
    labels = scenes.targets
    if per_class is None:
        idx = np.arange(len(scenes))
    else:
        idx = np.concatenate([np.flatnonzero(labels == c)[::len(labels) // len(scenes.classes) // per_class][:per_class]
                              for c in range(len(scenes.classes))])
    images = np.stack([np.asarray(scenes.load_image(int(i))) for i in idx])
    return images, labels[idx]


def linear_probe(model_or_path, per_class: int = PROBE_PER_CLASS, cache: dict = {}) -> float:
    """Top-1 test accuracy of a logistic regression on the model's low-shot feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from ..extractor import load_model

    model = load_model(model_or_path)
    key = per_class
    if key not in cache:
        cache[key] = (_probe_split("train", per_class), _probe_split("test", None))
    feats = []
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    for images, _ in cache[key]:
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        feats.append(torch.cat([model(x[i:i + 200]) for i in range(0, len(x), 200)]).numpy())
    (_, y_train), (_, y_test) = cache[key]
    scaler = StandardScaler().fit(feats[0])
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(scaler.transform(feats[0]), y_train)
    return float((clf.predict(scaler.transform(feats[1])) == y_test).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_zoo.pretrain.tiny", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ablation", nargs="+", choices=list(ABLATION), metavar="VARIANT",
                   help=f"instead: MaskCluster with only this collapse avoidance ({', '.join(ABLATION)}); "
                        "writes maskcluster-tiny-<variant>.safetensors")
    p.add_argument("--out", type=Path, default=WEIGHTS, help="where the .safetensors files go")
    p.add_argument("--work", type=Path, default=Path("build/pretrain-tiny"), help="run directories")
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    p.add_argument("--probe-only", action="store_true", help="only probe the weights in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (tuning)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.set)
    if args.ablation:
        runs = {f"maskcluster-tiny-{v}": tiny_config("maskcluster", **{"collapse": ABLATION[v], **overrides})
                for v in args.ablation}
    else:
        runs = {f"{m}-tiny": tiny_config(m, **overrides) for m in args.methods}
    from ..download import sha256_file

    summary = {}
    if not args.probe_only:
        if not args.ablation:
            summary["random-tiny"] = {"sha256": sha256_file(write_random_tiny(args.out / "random-tiny.safetensors"))}
        for name, cfg in runs.items():
            t0, cpu0 = time.time(), time.process_time()
            result = train(cfg, args.work / name, resume=args.resume, name=name)
            target = args.out / f"{name}.safetensors"
            shutil.copyfile(result["backbone"], target.with_suffix(".tmp"))
            os.replace(target.with_suffix(".tmp"), target)
            summary[name] = {"sha256": sha256_file(target), "threads": args.threads,
                             "wall_minutes": round((time.time() - t0) / 60, 1),
                             "cpu_minutes": round((time.process_time() - cpu0) / 60, 1)}
    for name in ([] if args.ablation else ["random-tiny"]) + list(runs):
        path = args.out / f"{name}.safetensors"
        summary.setdefault(name, {"sha256": sha256_file(path)})["probe_top1"] = linear_probe(path)
        print(f"{name:18s} probe top-1 {summary[name]['probe_top1']:.4f}  sha256 {summary[name]['sha256']}", flush=True)
    record = args.out / "tiny-models.json"  # provenance beside the weights (times vary; the weights do not)
    merged = {**(json.loads(record.read_text()) if record.exists() else {}), **summary}
    record.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

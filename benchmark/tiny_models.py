"""The tiny models shipped in model_zoo/weights/: five recipes pre-trained on the embedded dataset, plus
`random-tiny` (same architecture, seeded random init) as the baseline they must beat.

    python -m lowshot.benchmark.tiny_models            # `make pretrain-tiny`: train all, write weights, probe, print sha256
    python -m lowshot.benchmark.tiny_models --methods dino --probe-only
    python -m lowshot.benchmark.tiny_models --ablation centering memax sinkhorn --out build/ablation-collapse

Pre-training reads the classification train pool of the embedded dataset (20,800 images, labels unused;
object-centric like ImageNet, which the paper pre-trains on). The runs are deterministic given the seed, but
bit-exact regeneration (same sha256) holds only on the same machine, thread count and torch / timm versions.
The probe: the suite's own logistic regression (per-sample centring + L2, λ = 0.0025, as the low-shot protocols)
on the method's low-shot feature (`cls`; `cls_prenorm` for MSN) of PROBE_PER_CLASS train images per class,
extracted through the method's evaluation transform; top-1 on the embedded classification test set (800 images).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from lowshot.model_zoo import load_model
from lowshot.model_zoo.files import atomic_write, atomic_write_text, sha256_file
from lowshot.model_zoo.pretrain import TINY, make_config, train
from lowshot.model_zoo.pretrain.checkpoint import backbone_config, save_backbone
from lowshot.model_zoo.pretrain.cli import parse_overrides
from lowshot.model_zoo.pretrain.model import PretrainModel
from lowshot.tasks.classifiers import DEFAULT_LAMBDA, LogisticRegression, preprocess
from lowshot.tasks.datasets.synthetic import SyntheticScenes
from lowshot.tasks.metrics import top1_accuracy

from .features import extract_features

WEIGHTS = Path(__file__).resolve().parents[1] / "model_zoo" / "weights"
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
    torch.manual_seed(cfg.seed)
    model = PretrainModel(cfg)
    return save_backbone(path, model.backbone(), {**backbone_config(cfg, 0), "random_init": True})


def pretrain_source(cfg) -> SyntheticScenes:
    """The images the tiny models pre-train on: the embedded classification train pool (labels unused)."""
    return SyntheticScenes(cfg.embedded_task, "train", cfg.img_size)


def probe_indices(scenes: SyntheticScenes, per_class: int | None) -> np.ndarray:
    """`per_class` evenly spaced images of each class (None: all)."""
    labels = scenes.targets
    if per_class is None:
        return np.arange(len(scenes))
    step = len(labels) // len(scenes.classes) // per_class
    return np.concatenate([np.flatnonzero(labels == c)[::step][:per_class] for c in range(len(scenes.classes))])


def linear_probe(model_or_path, per_class: int = PROBE_PER_CLASS) -> float:
    """Top-1 test accuracy (fraction) of the suite's logistic regression on the model's low-shot feature."""
    model = load_model(model_or_path)
    feature = model.lowshot_feature
    transform = model.transform(64, 64)
    x, y = [], []
    for split, per in (("train", per_class), ("test", None)):
        scenes = SyntheticScenes("classification", split, 64)
        idx = probe_indices(scenes, per)
        feats = extract_features(model, scenes, idx, transform, [feature], workers=0, progress=False)[feature]
        x.append(preprocess(feats))
        y.append(scenes.targets[idx])
    clf = LogisticRegression(lambd=DEFAULT_LAMBDA).fit(x[0], y[0])
    return top1_accuracy(clf.predict(x[1]), y[1]) / 100


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowshot.benchmark.tiny_models", description=__doc__,
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
    summary = {}
    if not args.probe_only:
        if not args.ablation:
            summary["random-tiny"] = {"sha256": sha256_file(write_random_tiny(args.out / "random-tiny.safetensors"))}
        for name, cfg in runs.items():
            t0, cpu0 = time.time(), time.process_time()
            result = train(cfg, args.work / name, resume=args.resume, name=name, source=pretrain_source(cfg))
            target = atomic_write(args.out / f"{name}.safetensors", lambda tmp: shutil.copyfile(result["backbone"], tmp))
            summary[name] = {"sha256": sha256_file(target), "threads": args.threads,
                             "wall_minutes": round((time.time() - t0) / 60, 1),
                             "cpu_minutes": round((time.process_time() - cpu0) / 60, 1)}
    for name in ([] if args.ablation else ["random-tiny"]) + list(runs):
        path = args.out / f"{name}.safetensors"
        summary.setdefault(name, {"sha256": sha256_file(path)})["probe_top1"] = linear_probe(path)
        print(f"{name:18s} probe top-1 {summary[name]['probe_top1']:.4f}  sha256 {summary[name]['sha256']}", flush=True)
    record = args.out / "tiny-models.json"  # provenance beside the weights (times vary; the weights do not)
    merged = {**(json.loads(record.read_text()) if record.exists() else {}), **summary}
    atomic_write_text(record, json.dumps(merged, indent=1, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

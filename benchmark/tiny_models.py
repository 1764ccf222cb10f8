"""The tiny models shipped in model_zoo/weights/: five recipes pre-trained on the embedded dataset, plus
`random-tiny` (same architecture, seeded random init) as the baseline they must beat.

    python -m lowshot.benchmark.tiny_models            # `make pretrain-tiny`: train all, write weights, probe, print sha256
    python -m lowshot.benchmark.tiny_models --methods dino --probe-only
    python -m lowshot.benchmark.tiny_models --ablation both centering memax sinkhorn --out build/ablation-collapse --jobs 2

Pre-training reads the classification train pool of the embedded dataset (20,800 images, labels unused;
object-centric like ImageNet, which the paper pre-trains on). The runs are deterministic given the seed, but
bit-exact regeneration (same sha256) holds only on the same machine, thread count and torch / timm versions.
The probe: the suite's own logistic regression (per-sample centring + L2, λ = 0.0025, as the low-shot protocols)
on the method's low-shot feature (`cls`; `cls_prenorm` for MSN) of PROBE_PER_CLASS train images per class,
extracted through the method's evaluation transform; top-1 on the embedded classification test set (800 images).

The ablation (`--ablation`) also scores each run's EMA teacher while it trains (`--eval-every`, default every
ABLATION_EVAL_EVERY steps and at step 0): a `LowShotProbe` through `PretrainEvaluations`, as `lowshot pretrain
--eval-every`, writes `<work>/<run>/evaluations.csv`; the variants' curves are then gathered in `<out>/curves.csv`
and drawn in `<out>/ablation_curves.png|pdf` by the series figure of `lowshot plot series`. The probe restores
the random number generators it touches and every training step seeds its own, so the weights are the same
with or without it (tests/test_tiny_ablation.py).
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import LowshotError, one_line
from lowshot.model_zoo.files import atomic_write, atomic_write_text, sha256_file
from lowshot.model_zoo.pretrain import TINY, make_config, train
from lowshot.model_zoo.pretrain.checkpoint import backbone_config, save_backbone
from lowshot.model_zoo.pretrain.cli import parse_overrides
from lowshot.model_zoo.pretrain.model import PretrainModel
from lowshot.tasks.classifiers import CLASSIFIERS, DEFAULT_LAMBDA, LogisticRegression, preprocess
from lowshot.tasks.datasets.synthetic import SyntheticScenes
from lowshot.tasks.metrics import top1_accuracy

from .features import extract_features
from .pretrain_evaluations import DEFAULT_CLASSIFIERS, DEFAULT_TASKS, EVALUATIONS, PretrainEvaluations, curve_figure
from .probe import LowShotProbe

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


# The collapse-avoidance ablation (`--ablation`): MaskCluster's recipe (`both`: centering + ME-MAX, the shipped
# maskcluster-tiny's exact config) and each part alone (Sinkhorn: MSN's alternative to centering).
ABLATION = {"both": ("centering", "memax"), "centering": ("centering",), "memax": ("memax",), "sinkhorn": ("sinkhorn",)}
# Low-shot scores while the ablation trains: every 20 of the 340 steps (18 evaluations), the 1/2/5-images settings
# of embedded-lowshot, k-NN and logistic regression, all 800 evaluation images. Measured on the `both` run (one
# thread, 2026-12-07, a loaded 2-core machine): 134 s of evaluations, 14 % of its training time.
ABLATION_EVAL_EVERY = 20
ABLATION_EVAL_SETTINGS = ["1img", "2img", "5img"]
CURVES = "curves.csv"
CURVE_FIGURE = "ablation_curves"


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


def train_run(name: str, cfg, work: Path, out: Path, resume: bool, threads: int, evaluation: dict | None,
              prefix_log: bool = False) -> dict:
    """Train one tiny run (in this process or a job's), copy its backbone to `out`; with `evaluation` (the
    `LowShotProbe` arguments) score its EMA teacher while it trains and write `<work>/<name>/evaluations.csv`."""
    run_dir = work / name
    on_step = None
    if evaluation:
        if not resume:  # a fresh run: rows of an earlier run in this directory are not this run's
            (run_dir / EVALUATIONS).unlink(missing_ok=True)
        on_step = PretrainEvaluations(LowShotProbe(**evaluation, name=name), cfg.method, cfg.num_heads, name)
    log = functools.partial(print, f"[{name}]", flush=True) if prefix_log else functools.partial(print, flush=True)
    t0, cpu0 = time.time(), time.process_time()
    result = train(cfg, run_dir, resume=resume, name=name, source=pretrain_source(cfg), log=log, on_step=on_step)
    target = atomic_write(out / f"{name}.safetensors", lambda tmp: shutil.copyfile(result["backbone"], tmp))
    summary = {"sha256": sha256_file(target), "threads": threads, "wall_minutes": round((time.time() - t0) / 60, 1),
               "cpu_minutes": round((time.process_time() - cpu0) / 60, 1)}
    if on_step:
        log(on_step.report(run_dir, time.time() - t0))
        summary["evaluation_minutes"] = round(on_step.probe.seconds / 60, 2)
    return summary


def _one_thread_per_job(threads: int) -> None:
    torch.set_num_threads(threads)


def train_runs(runs: dict, jobs: int, **kwargs) -> dict:
    """`train_run` of each run; `jobs` > 1: that many at a time in fresh processes (each with `threads` threads, so
    every run's weights are those of a run on its own)."""
    if jobs <= 1 or len(runs) <= 1:
        return {name: train_run(name, cfg, **kwargs) for name, cfg in runs.items()}
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread_per_job, initargs=(kwargs["threads"],)) as pool:
        futures = {name: pool.submit(train_run, name, cfg, **kwargs, prefix_log=True) for name, cfg in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def ablation_curves(variants: list[str], work: Path, out: Path) -> list[Path]:
    """`<out>/curves.csv` (variant, step, task, setting, classifier, score = mean over the setting's seeds, n_seeds)
    from each variant's evaluations.csv, and `<out>/ablation_curves.png|pdf`: the series figure of those rows."""
    from .figure_style import save_figure

    curves = pd.concat([pd.read_csv(work / f"maskcluster-tiny-{v}" / EVALUATIONS).assign(variant=v)
                        for v in variants], ignore_index=True)
    curves = curves[["variant", "step", "task", "setting", "classifier", "score", "n_seeds"]]
    path = atomic_write_text(out / CURVES, curves.to_csv(index=False, float_format="%.4f"))
    figure = curve_figure(curves, "Collapse-avoidance ablation (MaskCluster tiny): low-shot scores of the EMA teacher "
                          "while it trains", run="variant", runs_note="both = the shipped recipe (centering + ME-MAX); "
                          "centering, memax, sinkhorn = that module alone. ")
    return [path] + save_figure(figure, out / CURVE_FIGURE)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowshot.benchmark.tiny_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ablation", nargs="+", choices=list(ABLATION), metavar="VARIANT",
                   help=f"instead: MaskCluster with this collapse avoidance ({', '.join(ABLATION)}; both = the "
                        "shipped recipe); writes maskcluster-tiny-<variant>.safetensors, curves.csv and "
                        f"{CURVE_FIGURE}.png|pdf")
    p.add_argument("--out", type=Path, default=WEIGHTS, help="where the .safetensors files go")
    p.add_argument("--work", type=Path, default=Path("build/pretrain-tiny"), help="run directories")
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many runs at a time, each in its own process with --threads threads")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    p.add_argument("--probe-only", action="store_true", help="only probe the weights in --out")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help=f"low-shot scores of the EMA teacher every N steps while training (default: "
                        f"{ABLATION_EVAL_EVERY} with --ablation, else none; 0: none)")
    p.add_argument("--eval-setting", nargs="+", default=ABLATION_EVAL_SETTINGS, help="embedded-lowshot settings")
    p.add_argument("--eval-classifier", nargs="+", default=DEFAULT_CLASSIFIERS, choices=list(CLASSIFIERS))
    p.add_argument("--eval-images", type=int, metavar="N", help="score on N evenly spaced evaluation images (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (tuning)")
    args = p.parse_args(argv)
    for option in ("threads", "jobs"):
        if getattr(args, option) < 1:
            p.error(f"--{option}: at least 1 (got {getattr(args, option)})")
    every = args.eval_every if args.eval_every is not None else (ABLATION_EVAL_EVERY if args.ablation else 0)
    if every < 0:
        p.error(f"--eval-every: N >= 0 (got {every})")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _main(args, every)
    except LowshotError as e:  # e.g. an --eval-setting the task does not declare
        print(f"{p.prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads_before)


def _main(args, every: int) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.set)
    if args.ablation:
        runs = {f"maskcluster-tiny-{v}": tiny_config("maskcluster", **{"collapse": ABLATION[v], **overrides})
                for v in args.ablation}
    else:
        runs = {f"{m}-tiny": tiny_config(m, **overrides) for m in args.methods}
    evaluation = dict(tasks=DEFAULT_TASKS, settings=args.eval_setting, classifiers=args.eval_classifier,
                      every=every, eval_images=args.eval_images) if every else None
    summary = {}
    if not args.probe_only:
        if not args.ablation:
            summary["random-tiny"] = {"sha256": sha256_file(write_random_tiny(args.out / "random-tiny.safetensors"))}
        if evaluation:  # the tasks' data read and checked before any training
            LowShotProbe(**evaluation)
        summary.update(train_runs(runs, args.jobs, work=args.work, out=args.out, resume=args.resume,
                                  threads=args.threads, evaluation=evaluation))
        if args.ablation and evaluation:
            for path in ablation_curves(args.ablation, args.work, args.out):
                print(f"wrote {path}", flush=True)
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

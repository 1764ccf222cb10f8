"""The figures of `gpu_check`: extraction throughput (bare forward, pipeline from memory, from JPEG files with
DataLoader workers, JPEG decoded on the device), torch.compile, the logistic regression and the k-NN at ImageNet
shapes, and pretraining steps. Each function returns an outcome (`outcome.measured`) of plain numbers.

The sizes come from `Sizes` (FULL on a GPU; SMALL for `--small`, CPU-sized so CI runs every line).
"""
from __future__ import annotations

import functools
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2 as T

from lowshot.benchmark.features import default_workers
from lowshot.model_zoo.transforms import PIL_INTERPOLATION
from lowshot.tasks.classifiers import KNNClassifier, LogisticRegression

from .classifier_speed import make_features, objective
from .extraction import (InMemoryImages, JpegFolder, bare_forward, eval_spec, pipeline, random_extractor,
                         synthetic_images, write_jpegs)
from .gpu_agreement import deviation
from .knn_speed import make_problem
from .outcome import measured, on_cuda, skipped
from .timing import seconds, sync, throughput


@dataclass(frozen=True)
class Sizes:
    img: int = 224  # extraction: image size, images per pipeline run, batch, photo size (shorter side)
    images: int = 1024  # distinct images (each pipeline run cycles through them)
    pipeline_images: int = 4096  # the longer of the two pipeline runs whose difference is the steady rate
    batch: int = 256
    photo_side: int = 375  # ImageNet's photos: 500 x 375 on average
    workers: int | None = None  # DataLoader workers of the pipelines (None: from the machine, as `lowshot bench`)
    lr_n: int = 12_811  # logistic regression: the 1 %-ImageNet shape
    lr_dim: int = 768
    lr_classes: int = 1000
    lr_test: int = 10_000
    knn_queries: int = 50_000  # k-NN: ImageNet's validation set against its 1 % subset
    knn_refs: int = 12_811
    knn_dim: int = 768
    knn_classes: int = 1000
    pretrain: tuple = ("--arch", "vit_small", "--img-size", "224", "--batch-size", "64")
    pretrain_steps: int = 50
    compile: bool = True


FULL = Sizes()
SMALL = Sizes(img=32, images=8, pipeline_images=16, batch=4, photo_side=48, workers=1,
              lr_n=1000, lr_dim=64, lr_classes=20, lr_test=500, knn_queries=500, knn_refs=300, knn_dim=32, knn_classes=10,
              pretrain=("--arch", "tiny", "--img-size", "32", "--batch-size", "8", "--max-images", "48",
                        "--set", "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "patch_size=8",
                        "--set", "local_size=16", "--set", "num_prototypes=64", "--set", "patch_prototypes=32",
                        "--set", "head_hidden=64", "--set", "head_bottleneck=32"),
              pretrain_steps=12, compile=False)


def decode_on_device(jpeg: JpegFolder, indices, img: int, device: str, mean, std) -> torch.Tensor:
    """JPEG files decoded by `torchvision.io.decode_jpeg` on `device` (nvJPEG on CUDA), then the evaluation
    transform on tensors there: a normalised batch [B, 3, img, img]."""
    spec = eval_spec(img)
    tf = T.Compose([T.Resize(spec.resize, interpolation=PIL_INTERPOLATION[spec.interpolation], antialias=True),
                    T.CenterCrop(spec.crop), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    decoded = decode_jpeg([read_file(str(jpeg.paths[i])) for i in indices], device=device)
    return torch.stack([tf(im) for im in decoded])


def _device_decode(model, jpeg: JpegFolder, sizes: Sizes) -> dict:
    """Images/s from JPEG files decoded on the device through the bare forward, and the fp32 feature deviation of
    that path from the PIL path (decode + resize by PIL, as the pipeline does)."""
    device, n = str(model.device), len(jpeg)
    mean, std = model.eval_config.mean, model.eval_config.std

    def run():
        for s in range(0, n, sizes.batch):
            batch = decode_on_device(jpeg, range(s, min(n, s + sizes.batch)), sizes.img, device, mean, std)
            with torch.no_grad(), model.precision(model.device):
                model.backbone.vit.forward_features(batch)
    rate = n / seconds(run, device, repeats=2)
    few = range(min(n, 16))
    pil = torch.stack([eval_spec(sizes.img).build()(jpeg.load_image(i)) for i in few]).to(device)
    bf16, model.bf16 = model.bf16, False  # the deviation of the decode path alone, in fp32
    try:
        dev = deviation(model.extract(pil, ["cls"]), model.extract(decode_on_device(jpeg, few, sizes.img, device,
                                                                                    mean, std), ["cls"]))
        pixels = float((decode_on_device(jpeg, few, sizes.img, device, mean, std) - pil).abs().max())
    finally:
        model.bf16 = bf16
    return {"img_s": rate, "device": device, "feature_deviation_fp32": dev["cls"],
            "max_input_difference": pixels}


@functools.lru_cache(maxsize=1)
def _photos(n: int, img: int, side: int) -> tuple:
    """The photo-like images both extraction figures use (made once)."""
    return tuple(synthetic_images(n, img, side=side))


def _steady_rate(model, source, sizes: Sizes, workers) -> dict:
    """Images/s of the whole pipeline (cache included) once it runs: two runs, of `images` and `pipeline_images`
    images of `source(n)`, the rate from their difference (worker start-up and the first batches cancel out), and
    that start-up."""
    transform = eval_spec(sizes.img)
    n1, n2 = sizes.images, sizes.pipeline_images
    t1, t2 = (n / pipeline(model, source(n), n, transform, sizes.batch, workers) for n in (n1, n2))
    rate = (n2 - n1) / (t2 - t1) if t2 > t1 else n2 / t2
    return {"img_s": rate, "startup_s": max(0.0, t1 - n1 / rate), "whole_run_img_s": n2 / t2}


def extraction(arch: str, device: str, sizes: Sizes) -> dict:
    """ViT-<arch>/16 in bf16 at batch `sizes.batch`: bare forward, pipeline from decoded images in memory, from JPEG
    files with DataLoader workers (as `lowshot bench`: the machine's default workers), and with the JPEG files
    decoded on the device."""
    torch.manual_seed(0)
    model = random_extractor(arch, 16, sizes.img, device, bf16=True)
    images = _photos(sizes.images, sizes.img, sizes.photo_side)
    workers = default_workers() if sizes.workers is None else sizes.workers
    batch = torch.stack([eval_spec(sizes.img).build()(im) for im in images[:sizes.batch]]).to(device)
    bare = bare_forward(model, batch)
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(images, Path(tmp))
        cycle = len(images)
        memory = _steady_rate(model, lambda n: InMemoryImages(images * -(-n // cycle), "memory"), sizes, workers)
        jpeg = _steady_rate(model, lambda n: JpegFolder(Path(tmp), n, distinct=cycle), sizes, workers)
        files = JpegFolder(Path(tmp), cycle)
        decode = _device_decode(model, files, sizes)
        jpeg_kib = sum(p.stat().st_size for p in files.paths) / cycle / 1024
    return measured(img=sizes.img, batch=sizes.batch, images=[sizes.images, sizes.pipeline_images],
                    photo=[sizes.photo_side * 4 // 3, sizes.photo_side], jpeg_kib=jpeg_kib, workers=workers, bf16=True,
                    bare_img_s=bare, memory_img_s=memory["img_s"], jpeg_img_s=jpeg["img_s"],
                    ratio_memory=memory["img_s"] / bare, ratio_jpeg=jpeg["img_s"] / bare, memory=memory, jpeg=jpeg,
                    device_decode=decode, ratio_device_decode=decode["img_s"] / bare)


def compile_speed(device: str, sizes: Sizes) -> dict:
    """ViT-B/16 bf16 bare forward at batch `sizes.batch`, eager against torch.compile (default mode)."""
    if not sizes.compile:
        return skipped("--small: compiling a ViT takes minutes on a CPU")
    torch.manual_seed(0)
    model = random_extractor("vit_base", 16, sizes.img, device, bf16=True)
    batch = torch.randn(sizes.batch, 3, sizes.img, sizes.img, device=device)
    forward = model.backbone.vit.forward_features
    compiled = torch.compile(forward)

    def rate(fn):
        def step():
            with torch.no_grad(), model.precision(model.device):
                return fn(batch)
        return step

    t0 = time.perf_counter()
    rate(compiled)()
    sync(device)
    compile_s = time.perf_counter() - t0
    eager, fast = throughput(rate(forward), sizes.batch, device), throughput(rate(compiled), sizes.batch, device)
    with torch.no_grad(), model.precision(model.device):  # the compiled shape only: another would recompile
        a, b = forward(batch)[:8].float(), compiled(batch)[:8].float()
    return measured(arch="vit_base/16", batch=sizes.batch, eager_img_s=eager, compiled_img_s=fast,
                    ratio_compiled=fast / eager, compile_s=compile_s,
                    max_rel_l2=float(((a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).max()))


def _timed_fit(X, y, device, lambd):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = time.perf_counter()
        clf = LogisticRegression(lambd=lambd, device=device).fit(X, y)
        sync(device)
        return time.perf_counter() - t, clf


LAMBDA_ONE_PERCENT, LAMBDA_FEW_SHOT = 0.075, 0.0025  # the suite's λ for 1 % and for 1 / 2 / 5 images per class


def lambda_grid(device: str, sizes: Sizes) -> dict:
    """The λ grid's cross-validation (5 λ x 3 folds) in one batched solve on the device, as ratios against one fit,
    15 separate fits and the fit's matmul floor (`classifier_speed --grid`, a 16-shot-shaped problem; CI-sized
    under --small)."""
    import contextlib
    import io

    from .classifier_speed import main as classifier_speed

    small = ["--n", "60", "--dim", "32"] if sizes is SMALL else []
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ratios = classifier_speed(["--grid", "--device", device, "--repeats", "1", *small])
    return {"status": "measured", "device": device, "ratios": ratios, "printed": printed.getvalue().splitlines()}


def logreg_speed(device: str, sizes: Sizes) -> dict:
    """The 1 %-ImageNet-shaped logistic regression (λ = 0.075, the 1 % value) on the device, on the CPU and by
    scikit-learn at the same objective; the 1-image-per-class fit (λ = 0.0025) on the device; and what a float64
    [N, D] x [D, C] product costs there against float32 (the solver's float64 finish)."""
    from sklearn.linear_model import LogisticRegression as SkLR

    lambd = LAMBDA_ONE_PERCENT
    X, y, _, _ = make_features(sizes.lr_n, sizes.lr_dim, sizes.lr_classes, sizes.lr_test, noise=3.5)
    Xd = torch.from_numpy(X).to(device)
    _timed_fit(Xd[:256], y[:256], device, lambd)  # warm-up (CUDA context, kernels)
    fits = {"device": _timed_fit(Xd, y, device, lambd)}
    Xf, yf, _, _ = make_features(sizes.lr_classes, sizes.lr_dim, sizes.lr_classes, 1, noise=3.5, seed=1)
    few_s, few = _timed_fit(torch.from_numpy(Xf).to(device), yf, device, LAMBDA_FEW_SHOT)
    if on_cuda(device):
        fits["cpu"] = _timed_fit(X, y, "cpu", lambd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        sk = SkLR(C=1 / lambd, fit_intercept=False, tol=1e-6, max_iter=10000).fit(X, y)
        sk_s = time.perf_counter() - t
    out = {f"{k}_s": s for k, (s, _) in fits.items()}
    out.update({f"{k}_objective": objective(c.coef_, X, y, lambd) for k, (_, c) in fits.items()})
    out.update({f"{k}_precision": c.precision_ for k, (_, c) in fits.items()})
    out.update({f"{k}_n_iter": c.n_iter_ for k, (_, c) in fits.items()})
    W = torch.zeros(sizes.lr_dim, sizes.lr_classes, device=device)
    f32 = seconds(lambda: Xd @ W, device)
    f64 = seconds(lambda: Xd.double() @ W.double(), device)
    return measured(shape=[sizes.lr_n, sizes.lr_dim, sizes.lr_classes], lambd=lambd, sklearn_s=sk_s,
                    one_per_class_shape=[sizes.lr_classes, sizes.lr_dim, sizes.lr_classes],
                    one_per_class_lambd=LAMBDA_FEW_SHOT, one_per_class_device_s=few_s,
                    one_per_class_n_iter=few.n_iter_, one_per_class_precision=few.precision_,
                    sklearn_objective=objective(sk.coef_.T, X, y, lambd), **out,
                    ratio_device_sklearn=out["device_s"] / sk_s,
                    ratio_device_cpu=out["device_s"] / out["cpu_s"] if "cpu_s" in out else None,
                    float64_matmul_ratio=f64 / f32)


def knn_speed(device: str, sizes: Sizes) -> dict:
    """k-NN (k = 20) of `knn_queries` against `knn_refs` on the device with the default backend (faiss-gpu where
    installed, else torch) and with torch, against faiss on the CPU; peak device memory on CUDA."""
    refs, labels, queries = make_problem(sizes.knn_queries, sizes.knn_refs, sizes.knn_dim, sizes.knn_classes)
    out, preds = {}, {}
    runs = [("device", "faiss", device), ("device_torch", "torch", device)] if on_cuda(device) else \
        [("device", "torch", device)]  # on the CPU: torch against faiss
    for name, backend, dev in runs + [("cpu_faiss", "faiss", "cpu")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            knn = KNNClassifier(backend=backend, device=dev).fit(refs, labels)
        if on_cuda(dev):
            torch.cuda.reset_peak_memory_stats()
        out[f"{name}_s"] = seconds(lambda: preds.__setitem__(name, knn.predict(queries)), dev, repeats=2)
        out[f"{name}_backend"] = knn.backend_
        if on_cuda(dev):
            out[f"{name}_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return measured(shape=[sizes.knn_queries, sizes.knn_refs, sizes.knn_dim], k=20, **out,
                    ratio_device_cpu=out["device_s"] / out["cpu_faiss_s"],
                    predictions_agree=float(np.mean(preds["device"] == preds["cpu_faiss"])))


def pretrain_speed(device: str, sizes: Sizes) -> dict:
    """`lowshot pretrain --method maskcluster` (FULL: --arch vit_small at 224 px, batch 64) in bf16 on the embedded
    synthetic scenes, `pretrain_steps` steps: steps/s and images/s after 5 warm-up steps, peak device memory, and
    the loss of each step (the loss must fall)."""
    import os

    from lowshot.benchmark.cli import build_parser
    from lowshot.model_zoo.pretrain import config_from_args, train
    from lowshot.tasks.datasets.synthetic import SyntheticScenes

    workers = 0 if not on_cuda(device) else max(0, min(8, (os.cpu_count() or 1) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["pretrain", "--method", "maskcluster", *sizes.pretrain, "--steps", str(sizes.pretrain_steps),
                "--out", tmp, "--bf16", "--device", device, "--num-workers", str(workers), "--log-every", "1",
                "--ckpt-every", str(10 * sizes.pretrain_steps), "--set", "warmup_steps=5"]
        args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
        stamps = []
        if on_cuda(device):
            torch.cuda.reset_peak_memory_stats()
        result = train(cfg, tmp, device=args.device, source=SyntheticScenes(cfg.embedded_task, "train", cfg.img_size),
                       log=lambda line: stamps.append(time.perf_counter()), bf16=args.bf16)
    steps = np.diff(stamps[1:sizes.pretrain_steps + 1])  # the first line is the header
    timed = steps[4:] if len(steps) > 8 else steps
    per_step = float(np.median(timed))
    losses = result["losses"]
    third = max(1, len(losses) // 3)
    return measured(command="lowshot " + " ".join("DIR" if a == tmp else a for a in argv), batch=cfg.batch_size,
                    img=cfg.img_size, steps=len(losses), steps_per_s=1 / per_step,
                    images_per_s=cfg.batch_size / per_step, workers=workers,
                    peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if on_cuda(device) else None,
                    loss_first=float(np.mean(losses[:third])), loss_last=float(np.mean(losses[-third:])),
                    losses=[round(x, 4) for x in losses])

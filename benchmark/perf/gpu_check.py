"""One prepared check of every CUDA path and every GPU figure, written to one JSON file.

    python -m lowshot.benchmark.perf.gpu_check --out gpu_check.json          # on a GPU: < 8 min on one H100 / H200
    python -m lowshot.benchmark.perf.gpu_check --device cpu --small --out ci.json   # CI: every path that needs no GPU
    python -m lowshot.benchmark.perf.gpu_check --compare h100.json h200.json        # B / A of every figure

Checks (passed / failed / skipped, with the reason): each CUDA path once on a tiny model or problem against the
CPU -- fp32 features within 1e-5, bf16 features within BF16_TOLERANCE, the same logistic-regression objective,
the same k-NN neighbours, a segmentation head whose loss falls, torchrun with nccl, the local multi-GPU launcher
where this version has one -- and the CPU paths they stand on. Without CUDA every CUDA check is "skipped: no GPU".

Figures: ViT-S/16 and ViT-B/16 bf16 extraction at batch 256 (bare forward; the pipeline from decoded images in
memory, from JPEG files with DataLoader workers; JPEG decoded on the device by torchvision.io.decode_jpeg, with its
feature deviation from the PIL path), torch.compile on / off, the 1 %-ImageNet logistic regression on the device vs
the CPU vs scikit-learn, the k-NN 50,000 x 12,811 x 768, 50 bf16 steps of `lowshot pretrain --method maskcluster
--arch vit_small` at 224 px; then a projection of the ImageNet low-shot suite's end-to-end time for ViT-B/16 and
its bottleneck. `--small` shrinks every size so that the whole run takes seconds on a CPU (its figures and
projection say nothing about speed; they prove the code runs).

The JSON is rewritten after every item, so a run stopped by a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from lowshot.model_zoo.errors import BadInputError, LowshotError, MissingFileError, one_line
from lowshot.model_zoo.files import atomic_write_text

from . import gpu_agreement as agree
from . import gpu_figures as fig
from .outcome import NO_GPU, on_cuda, run_item, skipped

SCHEMA = "lowshot-gpu-check/1"

# name -> (check(device), needs CUDA). On a GPU the CPU-only ones run too: they are the references' own paths.
CHECKS = {
    "features_fp32_cuda_vs_cpu": (agree.features_fp32_vs_cpu, True),
    "features_bf16_cpu_vs_cpu_fp32": (lambda device: agree.features_bf16("cpu"), False),
    "features_bf16_cuda_vs_cpu_fp32": (agree.features_bf16, True),
    "logreg_objective_vs_sklearn": (agree.logreg_vs_sklearn, False),
    "logreg_objective_cuda_vs_cpu": (agree.logreg_vs_cpu, True),
    "knn_faiss_vs_torch": (agree.knn_faiss_vs_torch, False),
    "knn_neighbours_cuda_vs_cpu": (agree.knn_vs_cpu, True),
    "segmentation_head_loss_falls_cpu": (lambda device: agree.segmentation_head("cpu"), False),
    "segmentation_head_loss_falls_cuda": (agree.segmentation_head, True),
    "torchrun_gloo_cpu": (lambda device: agree.torchrun_one_process("cpu"), False),
    "torchrun_nccl": (agree.torchrun_one_process, True),
    "multi_gpu_launcher": (agree.multi_gpu_launcher, False),  # says itself whether this version has one
}
# name -> figure(device, sizes), in the order they run (torch.compile last: the slowest to start).
FIGURES = {
    "extraction_vit_small": lambda device, sizes: fig.extraction("vit_small", device, sizes),
    "extraction_vit_base": lambda device, sizes: fig.extraction("vit_base", device, sizes),
    "logreg_speed": fig.logreg_speed,
    "lambda_grid": fig.lambda_grid,
    "knn_speed": fig.knn_speed,
    "pretrain": fig.pretrain_speed,
    "torch_compile": fig.compile_speed,
}
# The ImageNet low-shot suite: 12,811 (1 %) + 50,000 (validation) images extracted once; 10 settings
# (1, 2, 5 images per class x 3 seeds, 1 % x 1) x (logistic regression + k-NN over the 50,000 validation images).
SUITE_IMAGES = 12_811 + 50_000
SUITE_TRAIN_SIZES = [1000] * 3 + [2000] * 3 + [5000] * 3 + [12_811]
SUITE_QUERIES = 50_000
GOAL_S = 120.0


def environment(device: str) -> dict:
    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    try:
        from lowshot.tasks.classifiers.knn import faiss_gpu_available, import_faiss
        faiss_gpu = faiss_gpu_available(import_faiss())
    except ImportError:
        faiss_gpu = False
    env = {"device": device, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "torchvision": version("torchvision"),
           "timm": version("timm"), "faiss": version("faiss-cpu") or version("faiss-gpu-cu12") or version("faiss-gpu"),
           "faiss_gpu": faiss_gpu, "scikit-learn": version("scikit-learn"), "numpy": version("numpy"),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "gpu": None, "gpu_memory_gib": None, "gpu_count": 0, "driver": None, "cudnn": None}
    if on_cuda(device):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count(), compute_capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(), driver=_driver())
    return env


def _driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    run = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=30)
    return run.stdout.strip().splitlines()[0] if run.returncode == 0 and run.stdout.strip() else None


def projection(figures: dict, small: bool) -> dict:
    """End-to-end time of the ImageNet low-shot suite for ViT-B/16 (bf16) from the measured figures: extraction at
    the JPEG pipeline's steady rate plus two start-ups; the 1 % fit as measured, the 1 / 2 / 5-image fits scaled from
    the measured 1-image fit by their number of training images (an L-BFGS iteration's cost is linear in it;
    iteration counts vary); each k-NN scaled from the measured one by its references; and the bottleneck."""
    needed = ("extraction_vit_base", "logreg_speed", "knn_speed")
    missing = [n for n in needed if figures.get(n, {}).get("status") != "measured"]
    if missing:
        return skipped(f"needs the figures {', '.join(missing)}")
    ext, lr, knn = (figures[n] for n in needed)
    n_fit, n_few, (queries, refs, _) = lr["shape"][0], lr["one_per_class_shape"][0], knn["shape"]
    # 1 / 2 / 5 images per class scaled from the 1-image fit (λ = 0.0025), 1 % from the 1 % fit (λ = 0.075)
    fits = [lr["one_per_class_device_s"] * n / n_few for n in SUITE_TRAIN_SIZES[:-1]] + [lr["device_s"]]
    # two feature sets (the labelled images of every setting, the validation set): two pipeline start-ups
    stages = {"extraction": SUITE_IMAGES / ext["jpeg_img_s"] + 2 * ext["jpeg"]["startup_s"],
              "logistic_regression": sum(fits),
              "knn": sum(knn["device_s"] * (n / refs) * (SUITE_QUERIES / queries) for n in SUITE_TRAIN_SIZES)}
    total = sum(stages.values())
    bottleneck = max(stages, key=stages.get)
    if bottleneck == "extraction":
        bottleneck += (" (JPEG decoding and resizing on the CPU workers: the pipeline runs at "
                       f"{ext['ratio_jpeg']:.2f} of the bare forward)" if ext["ratio_jpeg"] < 0.9 else
                       " (the model's forward pass: the JPEG pipeline keeps up with it)")
    with_device_decode = SUITE_IMAGES / ext["device_decode"]["img_s"]
    return {"status": "projected", "model": "ViT-B/16, bf16", "stages_s": stages, "total_s": total,
            "bottleneck": bottleneck, "goal_s": GOAL_S, "meets_goal": total <= GOAL_S,
            "total_with_device_jpeg_decode_s": total - stages["extraction"] + with_device_decode,
            "note": ("from --small sizes: says nothing about the suite's time" if small else
                     "measured shapes scaled to the suite's; model loading and the cross-validation of λ (not the "
                     "default) left out")}


def run(device: str, small: bool, out: str, only: list[str] | None, budget_s: float) -> dict:
    sizes = fig.SMALL if small else fig.FULL
    report = {"schema": SCHEMA, "mode": {"device": device, "small": small, "only": only, "budget_s": budget_s},
              "environment": environment(device), "checks": {}, "figures": {}, "projection": None}
    t0 = time.perf_counter()

    def item(group, name, fn, *args):
        if only and name not in only:
            result = skipped("not selected (--only)")
        elif time.perf_counter() - t0 > budget_s:
            result = skipped(f"time budget of {budget_s:.0f} s spent")
        else:
            print(f"[{time.perf_counter() - t0:6.1f}s] {name} ...", flush=True)
            result = run_item(fn, *args)
        report[group][name] = result
        report["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
        print(f"  {name}: {result['status']}" + (f" ({result['reason']})" if "reason" in result else ""), flush=True)

    for name, (check, needs_cuda) in CHECKS.items():
        item("checks", name, (lambda d: skipped(NO_GPU)) if needs_cuda and not on_cuda(device) else check, device)
    for name, figure in FIGURES.items():
        item("figures", name, figure, device, sizes)
    pre = report["figures"]["pretrain"]
    report["checks"]["pretrain_loss_falls"] = (
        {"status": "passed" if pre["loss_last"] < pre["loss_first"] else "failed", "loss_first": pre["loss_first"],
         "loss_last": pre["loss_last"]} if pre["status"] == "measured" else skipped(f"pretrain figure {pre['status']}"))
    if report["checks"]["pretrain_loss_falls"]["status"] == "failed":
        report["checks"]["pretrain_loss_falls"]["reason"] = "the mean loss of the last third is not below the first's"
    report["projection"] = projection(report["figures"], small)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return report


def _numbers(tree, prefix=""):
    """Dotted key -> number for every numeric leaf (booleans left out)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix[:-1], float(tree)


def compare(path_a: str, path_b: str) -> dict:
    """B / A of every figure and projected time both files hold, and the checks whose status differs."""
    def load(path):
        try:
            report = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MissingFileError(f"{path}: no such file") from None
        except (OSError, ValueError) as e:
            raise BadInputError(f"{path}: not readable as JSON ({one_line(e)})") from None
        if not isinstance(report, dict) or report.get("schema") != SCHEMA:
            raise BadInputError(f"{path}: not a gpu_check file (its schema is not {SCHEMA!r})")
        return report

    a, b = load(path_a), load(path_b)
    print(f"A: {path_a} ({a['environment'].get('gpu') or 'cpu'}, torch {a['environment']['torch']})")
    print(f"B: {path_b} ({b['environment'].get('gpu') or 'cpu'}, torch {b['environment']['torch']})")
    na = dict(_numbers({"figures": a["figures"], "projection": a.get("projection") or {}}))
    nb = dict(_numbers({"figures": b["figures"], "projection": b.get("projection") or {}}))
    ratios = {k: nb[k] / na[k] for k in na if k in nb and na[k] != 0 and not k.endswith(".seconds")}
    width = max([len(k) for k in ratios] + [10])
    print(f"{'figure':{width}s} {'A':>12s} {'B':>12s} {'B/A':>8s}")
    for k, r in ratios.items():
        print(f"{k:{width}s} {na[k]:12.4g} {nb[k]:12.4g} {r:8.3f}")
    statuses = {k: (a["checks"].get(k, {}).get("status"), b["checks"].get(k, {}).get("status"))
                for k in sorted(set(a["checks"]) | set(b["checks"]))}
    for k, (sa, sb) in statuses.items():
        if sa != sb:
            print(f"check {k}: A {sa}, B {sb}")
    return {"ratios": ratios, "checks": statuses}


def main(argv=None) -> dict:
    from lowshot.benchmark.bench_command import parse_device

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", type=parse_device,
                   help="auto (cuda when CUDA is available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--small", action="store_true", help="CI sizes: every path runs in seconds on a CPU")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file to write (default gpu_check.json)")
    p.add_argument("--only", nargs="+", choices=[*CHECKS, *FIGURES], metavar="ITEM",
                   help="run only these checks / figures (the others are reported as not selected)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="items not started after this many seconds are skipped (default 450: the whole run stays "
                   "under 8 minutes)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print B / A of two files' figures")
    a = p.parse_args(argv)
    if a.compare:
        try:
            return {"compare": compare(*a.compare)}
        except LowshotError as e:
            p.error(f"--compare: {one_line(e)}")  # one line, exit code 2
    report = run(a.device, a.small, a.out, a.only, a.budget_s)
    failed = [k for k, v in report["checks"].items() if v["status"] == "failed"]
    proj = report["projection"]
    if proj.get("status") == "projected":
        print(f"projection ({proj['model']}): {proj['total_s']:.1f} s end to end, bottleneck {proj['bottleneck']}"
              f" ({proj['note']})")
    print(f"{a.out}: {sum(v['status'] == 'passed' for v in report['checks'].values())} check(s) passed, "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}, "
          f"{sum(v['status'] == 'skipped' for v in report['checks'].values())} skipped; {report['seconds']} s")
    return report


if __name__ == "__main__":
    sys.exit(1 if any(v["status"] == "failed" for v in main().get("checks", {}).values()) else 0)

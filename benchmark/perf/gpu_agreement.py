"""The agreement checks of `gpu_check`: each CUDA path once, on a tiny model or problem, against the CPU result.

Every function takes the device under test and returns an outcome (`outcome.passed`). The ones named `*_vs_cpu`
need CUDA; the others run on the CPU as well (so CI runs their code and the CPU paths they cover).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowshot.benchmark.features import extract_features
from lowshot.model_zoo import load_model
from lowshot.model_zoo.extractor import BF16_TOLERANCE
from lowshot.tasks.classifiers import KNNClassifier, LogisticRegression
from lowshot.tasks.classifiers.linear_head import LinearHead, interpolation_matrix, train_head, TokenFeatures
from lowshot.tasks.datasets.synthetic import SyntheticScenes

from .classifier_speed import make_features, objective
from .knn_speed import make_problem
from .outcome import passed, skipped

FP32_TOLERANCE = 1e-5  # the loaders' bound against the official code's features (absolute)
OBJECTIVE_RTOL = 1e-4  # two solvers of the same objective: the same minimum to this relative difference
TINY_MODEL, CHECK_IMAGES = "dino-tiny", 32


def _tiny_features(device: str, bf16: bool, workers: int, names=("cls", "cls_avgpool", "patch")) -> dict:
    """Features of the embedded test scenes through the whole pipeline (DataLoader workers, pinned memory and
    non-blocking copies on CUDA, the feature interface)."""
    model = load_model(TINY_MODEL, device=device, bf16=bf16)
    source = SyntheticScenes("classification", "test")
    return extract_features(model, source, np.arange(CHECK_IMAGES), model.transform(64, 64), list(names),
                            batch_size=8, workers=workers, progress=False)


def deviation(reference: dict, other: dict) -> dict:
    """Per feature: the largest absolute difference and the largest per-image relative L2 difference."""
    def rows(a):  # numpy or torch (any device) -> float32 CPU rows
        a = a.detach().float().cpu() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, np.float32))
        return a.flatten(0, -2)

    out = {}
    for name, a in reference.items():
        x, y = rows(a), rows(other[name])
        out[name] = {"max_abs": float((x - y).abs().max()),
                     "max_rel_l2": float(((x - y).norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)).max())}
    return out


def features_fp32_vs_cpu(device: str) -> dict:
    """float32 features only: patch tokens are stored in float16, whose rounding alone can exceed 1e-5."""
    names = ("cls", "cls_avgpool")
    dev = deviation(_tiny_features("cpu", False, 0, names), _tiny_features(device, False, 2, names))
    worst = max(d["max_abs"] for d in dev.values())
    return passed(worst <= FP32_TOLERANCE, f"fp32 features on {device} differ from the CPU's by {worst:.2e} "
                  f"> {FP32_TOLERANCE:g}", tolerance_abs=FP32_TOLERANCE, deviation=dev)


def features_bf16(device: str) -> dict:
    """bf16 features on `device` against fp32 features on the CPU."""
    dev = deviation(_tiny_features("cpu", False, 0), _tiny_features(device, True, 2 if device != "cpu" else 0))
    worst = max(d["max_rel_l2"] for d in dev.values())
    ok = 0 < worst <= BF16_TOLERANCE  # 0: bf16 was not used at all
    return passed(ok, f"bf16 features on {device}: relative L2 deviation {worst:.2e}, expected in "
                  f"(0, {BF16_TOLERANCE:g}]", tolerance_rel_l2=BF16_TOLERANCE, deviation=dev)


LAMBDA = 0.075  # the 1 % setting's λ


def _logreg_problem():
    return make_features(600, 32, 10, 300, noise=3.0, seed=1)


def _fit(X, y, device, lambd=LAMBDA):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return LogisticRegression(lambd=lambd, device=device).fit(X, y)


def logreg_vs_sklearn(device: str) -> dict:
    """Ours on `device` against scikit-learn's lbfgs on the same objective (C = 1/λ, no intercept)."""
    from sklearn.linear_model import LogisticRegression as SkLR

    X, y, _, _ = _logreg_problem()
    ours = _fit(X, y, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkLR(C=1 / LAMBDA, fit_intercept=False, tol=1e-7, max_iter=10000).fit(X, y)
    a, b = objective(ours.coef_, X, y, LAMBDA), objective(sk.coef_.T, X, y, LAMBDA)
    return passed(abs(a - b) <= OBJECTIVE_RTOL * b, f"objective {a:.7f} on {device} vs scikit-learn {b:.7f}",
                  objective=a, objective_sklearn=b, precision=ours.precision_, n_iter=ours.n_iter_)


def logreg_vs_cpu(device: str) -> dict:
    X, y, Xte, _ = _logreg_problem()
    dev, cpu = _fit(X, y, device), _fit(X, y, "cpu")
    a, b = objective(dev.coef_, X, y, LAMBDA), objective(cpu.coef_, X, y, LAMBDA)
    agree = float(np.mean(dev.predict(Xte) == cpu.predict(Xte)))
    return passed(abs(a - b) <= OBJECTIVE_RTOL * b and agree >= 0.99,
                  f"objective {a:.7f} on {device} vs {b:.7f} on cpu, held-out predictions agree {agree:.3f}",
                  objective=a, objective_cpu=b, predictions_agree=agree, precision=dev.precision_,
                  precision_cpu=cpu.precision_, n_iter=dev.n_iter_, n_iter_cpu=cpu.n_iter_)


def _same_neighbours(a: KNNClassifier, b: KNNClassifier, queries) -> tuple[float, float]:
    """(fraction of queries with the same k neighbours in the same order, largest similarity difference)."""
    (sa, ia), (sb, ib) = a.kneighbors(queries), b.kneighbors(queries)
    same = float((ia.cpu() == ib.cpu()).all(dim=1).float().mean())
    return same, float((sa.cpu() - sb.cpu()).abs().max())


def knn_faiss_vs_torch(device: str) -> dict:
    refs, labels, queries = make_problem(400, 300, 32, 10, seed=2)
    f = KNNClassifier(backend="faiss", device="cpu").fit(refs, labels)
    t = KNNClassifier(backend="torch", device=device).fit(refs, labels)
    same, gap = _same_neighbours(f, t, queries)
    return passed(same >= 0.999, f"{same:.4f} of the queries have the same neighbours (faiss on cpu, torch on "
                  f"{device})", same_neighbours=same, max_similarity_difference=gap)


def knn_vs_cpu(device: str) -> dict:
    """The default k-NN on CUDA (faiss-gpu, or torch where faiss has no GPU support) against faiss on the CPU."""
    refs, labels, queries = make_problem(2000, 1000, 64, 20, seed=3)
    cpu = KNNClassifier(backend="faiss", device="cpu").fit(refs, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu = KNNClassifier(backend="faiss", device=device).fit(refs, labels)
    same, gap = _same_neighbours(cpu, gpu, queries)
    torch_same, _ = _same_neighbours(cpu, KNNClassifier(backend="torch", device=device).fit(refs, labels), queries)
    return passed(min(same, torch_same) >= 0.999, f"same neighbours as the CPU: {gpu.backend_} {same:.4f}, torch "
                  f"{torch_same:.4f}", backend=gpu.backend_, same_neighbours=same, torch_same_neighbours=torch_same,
                  max_similarity_difference=gap, warnings=[str(w.message) for w in caught])


def _planted_segmentation(seed: int = 0, images: int = 16, grid: int = 4, dim: int = 32, classes: int = 5,
                          crop: int = 16):
    """Token features whose class is a linear function of the token, and masks of that class per pixel."""
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(images, grid * grid, dim)).astype(np.float16)
    w = rng.normal(size=(dim, classes))
    cls = (tokens.astype(np.float64) @ w).argmax(-1).reshape(images, grid, grid)
    masks = cls.repeat(crop // grid, axis=1).repeat(crop // grid, axis=2).astype(np.int64)
    return TokenFeatures([tokens]), masks, grid, classes


def _head_loss(head: LinearHead, features: TokenFeatures, masks: np.ndarray, grid: int, device) -> float:
    rows = np.arange(len(masks))
    up = interpolation_matrix(grid, masks.shape[-1]).to(device)
    with torch.no_grad():
        z = head(torch.from_numpy(features.rows(rows)).to(device, torch.float32), (grid, grid))
        return float(F.cross_entropy(up @ z @ up.T, torch.from_numpy(masks).to(device)))


def segmentation_head(device: str) -> dict:
    """The linear segmentation head trained on `device` (60 steps): its training loss must fall well below that of
    the untrained (zero) head, log(classes); on CUDA it is compared with the same training on the CPU."""
    features, masks, grid, classes = _planted_segmentation()
    rows = np.arange(len(masks))

    def trained_loss(dev):
        head = train_head(features, masks, rows, classes, grid, lr=3e-2, steps=60, seed=0, device=dev)
        return _head_loss(head, features, masks, grid, dev)

    start = _head_loss(LinearHead(features.chunks[0].shape[-1], classes).to(device).eval(), features, masks, grid,
                       device)
    end = trained_loss(device)
    details = {"loss_untrained": start, "loss_trained": end}
    if device != "cpu":
        details["loss_trained_cpu"] = trained_loss("cpu")
    return passed(end < 0.5 * start, f"loss {start:.4f} -> {end:.4f} on {device}: did not halve", **details)


def torchrun_one_process(device: str) -> dict:
    """`torchrun --nproc_per_node 1` of `nccl_probe`: nccl on CUDA (gloo on the CPU) through benchmark.distributed."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--standalone",
                              "-m", "lowshot.benchmark.perf.nccl_probe", "--device", device, "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=180)
        if run.returncode != 0 or not out.exists():
            tail = " | ".join((run.stderr or run.stdout).strip().splitlines()[-3:])
            return passed(False, f"torchrun exited with {run.returncode}: {tail}")
        probe = json.loads(out.read_text())
    expected = "nccl" if device.startswith("cuda") else "gloo"
    ok = probe["backend"] == expected and probe["all_reduce"] == 1.0 and probe["broadcast"] == "rank 0"
    return passed(ok, f"probe under torchrun: {probe}", **probe)


def multi_gpu_launcher(device: str) -> dict:
    """The local multi-GPU launcher (`lowshot bench --launcher local --jobs N`, one job per GPU; one CPU job
    without CUDA): every job exits 0 and writes its records."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-m", "lowshot", "bench", "--model", TINY_MODEL, "--task",
                              "embedded-lowshot", "--setting", "1img", "--launcher", "local", "--jobs",
                              str(max(1, torch.cuda.device_count())), "--device", device, "--results",
                              f"{tmp}/r", "--cache", f"{tmp}/c", "--quiet"], capture_output=True, text=True,
                             timeout=300)
        records = len(list(Path(tmp, "r").rglob("*__*.json")))
    tail = " | ".join((run.stderr or run.stdout).strip().splitlines()[-3:])
    return passed(run.returncode == 0 and records > 0, f"exit code {run.returncode}, {records} record(s): {tail}",
                  jobs=max(1, torch.cuda.device_count()), records=records)

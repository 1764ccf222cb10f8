"""A library call changes nothing of its caller: matplotlib's backend, torch's thread count, the warnings filters,
and a model's train/eval mode and requires_grad are as they were after every call."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import scipy.stats  # noqa: F401  (scipy adds a warnings filter of its own when first imported: done here)
import timm
import torch

from lowshot.benchmark.cli import main
from lowshot.model_zoo.backbones import TimmBackbone
from lowshot.model_zoo.extractor import FeatureExtractor, ModelInfo
from lowshot.model_zoo.formats import Architecture
from lowshot.model_zoo.registry import eval_config
from lowshot.tasks.classifiers import LogisticRegression, preprocess


def test_importing_and_drawing_figures_keeps_the_callers_matplotlib_backend(tmp_path):
    """A notebook's backend (here svg) survives importing the report and drawing and saving a figure; pyplot's
    global figure list stays empty."""
    script = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("svg")
        import pandas as pd
        import lowshot.benchmark.report, lowshot.benchmark.plots as plots
        from lowshot.benchmark.figure_style import new_figure, save_figure
        fig, ax = new_figure(figsize=(2, 2))
        ax.plot([1, 2], [3, 4])
        save_figure(fig, {str(tmp_path / "f")!r})
        import sys
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "f.pdf").stat().st_size > 0


def test_a_fit_keeps_the_callers_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the solver runs small problems on one thread: the caller's 3 must come back
    try:
        threads = torch.get_num_threads()
        rng = np.random.default_rng(0)
        x = preprocess(rng.normal(size=(40, 8)).astype(np.float32))
        LogisticRegression(lambd=0.01).fit(x, np.arange(40) % 4)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_a_bench_run_keeps_the_callers_warnings_filters(tmp_path):
    with warnings.catch_warnings():  # the caller's own filters, restored here for the tests that follow
        warnings.simplefilter("ignore", DeprecationWarning)
        filters = list(warnings.filters)
        assert main(["bench", "--model", "dino-tiny", "--task", "embedded-lowshot", "--setting", "1percent",
                     "--classifier", "knn", "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
                     "--workers", "0", "--quiet"]) == 0
        assert warnings.filters == filters


def _training_vit():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0,
                            drop_rate=0.1, dynamic_img_size=True)
    vit.train()
    vit.blocks[0].eval()  # a caller may keep a part of its model in eval mode (e.g. frozen early blocks)
    vit.cls_token.requires_grad_(False)  # ... and some parameters frozen
    return vit


def test_extraction_gives_the_model_back_as_it_was_and_it_still_trains():
    vit = _training_vit()
    modes = {name: m.training for name, m in vit.named_modules()}
    grads = {name: p.requires_grad for name, p in vit.named_parameters()}
    backbone = TimmBackbone(vit)
    info = ModelInfo("in-memory", "timm", "", "", "timm", "model",
                     Architecture(192, 12, 16, 0, 4.0, True, position="model"), 3)
    extractor = FeatureExtractor(backbone, eval_config("dino"), info)
    images = torch.randn(2, 3, 32, 32)
    first = extractor.extract(images, ["cls"])["cls"]
    assert torch.allclose(first, extractor.extract(images, ["cls"])["cls"])  # eval mode inside: no dropout
    assert {name: m.training for name, m in vit.named_modules()} == modes
    assert {name: p.requires_grad for name, p in vit.named_parameters()} == grads
    loss = vit(images).pow(2).mean()
    loss.backward()  # the training loop goes on
    assert vit.blocks[1].attn.qkv.weight.grad is not None and vit.cls_token.grad is None


def test_extraction_after_a_training_step_reads_the_new_weights():
    """A model that trains between two evaluations: the features follow its weights (no stale cached state)."""
    from lowshot.model_zoo.backbones import ViTBackbone

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)
    backbone = ViTBackbone(vit, "dino")
    info = ModelInfo("in-memory", "dino", "", "", "timm", "model",
                     Architecture(192, 12, 16, 2, 4.0, True), 3)
    extractor = FeatureExtractor(backbone, eval_config("dino"), info)
    images = torch.randn(2, 3, 48, 48)  # a 3x3 grid: the 2x2 position embedding is resized
    before = extractor.extract(images, ["cls"])["cls"]
    with torch.no_grad():
        vit.pos_embed.add_(1.0)  # an optimizer step changes the weights in place
    after = extractor.extract(images, ["cls"])["cls"]
    assert not torch.allclose(before, after)

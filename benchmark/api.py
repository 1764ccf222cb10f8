"""The Python API: `lowshot.evaluate(model, tasks)` runs tasks on a model -- a name or path as `--model` takes, or a
module held in memory (a notebook's, a training loop's) -- and returns its records as a pandas DataFrame.

It goes through the one runner (`benchmark.runner.run_task`) that `lowshot bench` uses, so its numbers are the
CLI's. A call changes nothing of its caller: without `results` no record is kept (a temporary directory, removed
afterwards), without `cache` no feature is kept; a module comes back on its device, in its train/eval modes and with
its `requires_grad` flags; it prints nothing unless `progress=True` (then on stderr).
"""
from __future__ import annotations

import contextlib
import itertools
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from lowshot.model_zoo.errors import BadInputError

from .features import FeatureCache
from .leaderboard import records_frame
from .planning import plan_task
from .records import read_record
from .runner import RunContext, run_task


def evaluate(model, tasks, *, settings=None, classifiers=None, data_root=None, results=None, cache=None,
             device="cpu", name=None, arch=None, progress=False) -> pd.DataFrame:
    """Run `tasks` on `model`; one row per record, with the columns of `records.csv`.

    model: anything `lowshot bench --model` takes (registry name, checkpoint path, `timm:`, `hf:`, `py:`), a timm
        token model (`torch.nn.Module` with `forward_intermediates`), or `(module, TokenAdapter)` for any other
        module. An in-memory module's identity is a digest of its weights (and adapter); `name` labels it. A `timm:`
        name may carry build options (`"timm:vit_small_patch16_224:img_size=64"`); a plain timm state-dict file
        is read with `arch="vit_small_patch16_224"` (the generic method, `--arch`).
    tasks: a task name, a group (`transfer`) or a list of them (`lowshot tasks` lists them).
    settings, classifiers: only these (e.g. `["1img"]`, `["knn"]`); default: every one of each task.
    data_root: the real datasets' root (`--data-root`); the embedded tasks need none.
    results: a directory to keep the records in, exactly as `lowshot bench --results` writes them (a second call
        computes nothing); None: nothing is written.
    cache: a feature cache directory (`--cache`); None: features are not kept.
    """
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    settings = [settings] if isinstance(settings, str) else settings
    classifiers = [classifiers] if isinstance(classifiers, str) else classifiers
    built = build_tasks(names, data_root, settings)
    with contextlib.ExitStack() as stack:
        def temporary(prefix: str) -> Path:
            return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))

        ctx = RunContext(Path(results) if results else temporary("lowshot-records-"),
                         FeatureCache(cache if cache else temporary("lowshot-features-")),
                         classifiers=tuple(classifiers) if classifiers else None,
                         settings=tuple(settings) if settings else None, device=str(device), progress=progress)
        extractor = stack.enter_context(as_extractor(model, name=name, device=device, progress=progress, arch=arch))
        return run_and_read(built, extractor, ctx)


def run_and_read(tasks: list, extractor, ctx: RunContext) -> pd.DataFrame:
    """Run `tasks` on a loaded model; the frame of exactly the records this run asked for (computed now or found
    done in `ctx.results`)."""
    paths = []
    for task in tasks:
        plan = plan_task(task, extractor, ctx)
        run_task(task, extractor, ctx, plan)
        paths += [p.path for p in itertools.chain(plan.keys.values(), plan.label_free.values())]
    return records_frame([{**read_record(p), "path": str(p)} for p in paths]).drop(columns=["path"])


def build_tasks(names: list[str], data_root=None, settings=None, skipped=None) -> list:
    """The runnable tasks a list of task names and groups means, their data read and checked (as `lowshot bench`
    builds them): a task named explicitly must have its data; a group's member without it is skipped (`skipped(line)`
    is told)."""
    from lowshot.tasks.registry import TaskOptions, expand

    from .bench_command import build_tasks as build

    return build(expand(names), TaskOptions(data_root), settings, skipped or (lambda line: None))


@contextlib.contextmanager
def as_extractor(model, name: str | None = None, device="cpu", progress: bool = False, arch: str | None = None):
    """A `FeatureExtractor` of `model` (see `evaluate`) for the duration of the block; an in-memory module is given
    back afterwards on its own device, in its own train/eval modes and with its own `requires_grad` flags."""
    from lowshot.model_zoo.extractor import FeatureExtractor
    from lowshot.model_zoo.loading import load_model
    from lowshot.model_zoo.sources import TokenAdapter, in_memory_source

    if isinstance(model, (str, Path)):
        extractor = load_model(str(model), device=device, progress=progress, arch=arch)
        if name:
            extractor.info = replace(extractor.info, name=name)
        yield extractor
        return
    if arch:
        raise BadInputError("arch= goes with a checkpoint file (a plain timm state dict), not a module in memory")
    if isinstance(model, FeatureExtractor):
        module, make = model, lambda: model if not name else _renamed(model, name)
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], TokenAdapter):
        module, make = model[0], lambda: FeatureExtractor(*in_memory_source(model[0], model[1], name))
    elif isinstance(model, torch.nn.Module):
        module, make = model, lambda: FeatureExtractor(*in_memory_source(model, None, name))
    else:
        raise BadInputError(f"model: expected a name or path, a torch.nn.Module or (module, TokenAdapter), got "
                            f"{type(model).__name__}")
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"model: the first item of (module, TokenAdapter) is {type(module).__name__}, not a "
                            "torch.nn.Module")
    with kept_as_it_was(module):
        extractor = make()
        extractor.to(device)
        yield extractor


def _renamed(extractor, name: str):
    from lowshot.model_zoo.extractor import FeatureExtractor

    return FeatureExtractor(extractor.backbone, extractor.eval_config, replace(extractor.info, name=name),
                            bf16=extractor.bf16)


@contextlib.contextmanager
def kept_as_it_was(module: torch.nn.Module):
    """Inside, a module may be moved and switched to eval mode; afterwards it is on its device, every submodule in
    its own mode and every parameter with its own `requires_grad`, as before."""
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise BadInputError(f"model: its parameters and buffers are on several devices ({sorted(map(str, devices))});"
                            " move it to one device first")
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield
    finally:
        if devices:
            module.to(next(iter(devices)))
        for m, training in modes:
            m.training = training
        for p, requires_grad in grads:
            p.requires_grad_(requires_grad)

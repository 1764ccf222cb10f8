"""Low-shot scores during training: `LowShotProbe`, which a plain training loop calls with its model and step.

    probe = lowshot.LowShotProbe(tasks="embedded-lowshot", settings=["1img"], classifiers=["knn"], every=500)
    for step in range(steps):
        ...                                  # the loop's own forward, backward, optimizer step
        probe(model, step)                   # evaluates only when step % every == 0
    probe.history                            # one row per record and step; probe.curve(): mean over seeds

Cheap by construction: the tasks' data is read once, the images once loaded are kept in memory (`keep_images`;
turn it off for large images), the evaluation set can be a fixed subset (`eval_images`),
features and records are never written unless `cache` / `results` are given, and the model is evaluated where it
is (its device) and handed back as it was (`benchmark.api.as_extractor`). Each call goes through the one runner,
so a probe's score at a step is the score `lowshot.evaluate` (and `lowshot bench` on the saved weights) gives.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from lowshot.model_zoo.errors import BadInputError

from .api import as_extractor, build_tasks, run_and_read
from .features import FeatureCache
from .runner import RunContext

CURVE_COLUMNS = ["step", "task", "setting", "classifier", "score", "n_seeds"]


class LowShotProbe:
    """Evaluates a model in a training loop every `every` steps (see the module's docstring)."""

    def __init__(self, tasks="embedded-lowshot", settings=None, every: int = 1000, classifiers=None, *,
                 data_root=None, eval_images: int | None = None, keep_images: bool = True, device=None,
                 name: str = "probe", results=None, cache=None, progress: bool = False):
        if not isinstance(every, int) or every < 1:
            raise BadInputError(f"every: evaluate every N steps, N >= 1 (got {every!r})")
        self.every, self.name, self.device, self.progress = every, name, device, progress
        self.settings = [settings] if isinstance(settings, str) else settings
        self.classifiers = [classifiers] if isinstance(classifiers, str) else classifiers
        self.results, self.cache = results, cache
        self.tasks = build_tasks([tasks] if isinstance(tasks, str) else list(tasks), data_root, self.settings)
        if eval_images:
            self.tasks = [_on_fewer_images(t, eval_images) for t in self.tasks]
        if keep_images:
            self.tasks = [_remembering_images(t) for t in self.tasks]
        self.seconds = 0.0  # spent in evaluations, for the caller's overhead accounting
        self._frames: list[pd.DataFrame] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, model, step: int) -> pd.DataFrame | None:
        """The records of `model` at `step` (also kept in `history`), or None when the step is not due."""
        if not self.due(step):
            return None
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            def where(given, prefix: str) -> Path:
                return Path(given) if given else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))

            ctx = RunContext(where(self.results, "lowshot-probe-records-"),
                             FeatureCache(where(self.cache, "lowshot-probe-features-")),
                             classifiers=tuple(self.classifiers) if self.classifiers else None,
                             settings=tuple(self.settings) if self.settings else None,
                             device=str(self.device or _device_of(model)), workers=0, progress=self.progress)
            with as_extractor(model, name=f"{self.name}@step{step}", device=ctx.device) as extractor:
                frame = run_and_read(self.tasks, extractor, ctx)
        frame.insert(0, "step", int(step))
        self._frames.append(frame)
        self.seconds += time.perf_counter() - t0
        return frame

    @property
    def history(self) -> pd.DataFrame:
        """Every record of every evaluation so far: `step`, then the columns of records.csv."""
        if not self._frames:
            return pd.DataFrame(columns=["step"])
        return pd.concat(self._frames, ignore_index=True)

    def curve(self) -> pd.DataFrame:
        """Score per step, task, setting and classifier, the mean over the setting's seeds."""
        return curve(self.history)


def curve(history: pd.DataFrame) -> pd.DataFrame:
    if history.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    grouped = history.groupby(["step", "task", "setting", "classifier"], sort=True)["score"]
    return grouped.agg(score="mean", n_seeds="count").reset_index()[CURVE_COLUMNS]


def _device_of(model) -> torch.device:
    if isinstance(model, tuple):
        model = model[0]
    if isinstance(model, torch.nn.Module):
        return next(model.parameters(), torch.empty(0)).device
    return torch.device("cpu")


def _remembering_images(task):
    """The task with its images kept in memory once loaded (the tasks with one feature vector per image; others
    as they are)."""
    from lowshot.tasks.base import FeatureVectorTask
    from lowshot.tasks.datasets import RememberedImages

    if isinstance(task, FeatureVectorTask):
        task.data = replace(task.data, train=RememberedImages(task.data.train), test=RememberedImages(task.data.test))
    return task


def _on_fewer_images(task, n: int):
    """The task scored on `n` evenly spaced images of its evaluation set (a fixed subset: the same at every step)."""
    from lowshot.tasks.base import FeatureVectorTask
    from lowshot.tasks.datasets import EvenlySpacedImages

    if not isinstance(task, FeatureVectorTask):
        raise BadInputError(f"eval_images: {task.name} is a {task.family} task; a smaller evaluation set is for "
                            "the tasks with one feature vector per image (classification, multi-label, transfer)")
    task.data = replace(task.data, test=EvenlySpacedImages(task.data.test, n))
    return task

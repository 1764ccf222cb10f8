"""What a task receives from the run: the small typed interface a task family's hooks call, declared here and
implemented by the runner (`lowshot.benchmark.runner.RunContext`), so that tasks never reach up into `benchmark`.
"""
from __future__ import annotations

from typing import Callable, ContextManager, Protocol, runtime_checkable

import numpy as np


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> None: ...


@runtime_checkable
class RunServices(Protocol):
    """Features through the verified cache, other cached arrays, progress, and the run's options a fit reads."""

    device: str  # where classifiers fit ("cpu", "cuda:0")
    workers: int  # DataLoader workers
    lambd: float | str | None  # the user's λ (None: the task's rule; "cv": cross-validation on the labelled subset)

    def features(self, model, source, indices: np.ndarray, transform, names: list[str]) -> dict[str, np.ndarray]:
        """{name: [len(indices), ...]} of `source[indices]` through `transform`, from the cache (computed when
        missing)."""
        ...

    def array(self, description: dict, shape: tuple, dtype, fill: Callable[[np.ndarray], None]) -> np.ndarray:
        """Any other array cached beside the features (e.g. segmentation masks), made once by `fill`."""
        ...

    def bar(self, total: int, desc: str, unit: str = "it", leave: bool = True) -> ContextManager[ProgressBar]:
        """A progress bar (or periodic log lines, or nothing under --quiet)."""
        ...

    def log(self, line: str) -> None:
        """One line of the run's story (nothing under --quiet)."""
        ...

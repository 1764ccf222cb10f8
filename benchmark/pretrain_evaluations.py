"""`lowshot pretrain --eval-every N`: low-shot scores of the EMA teacher while it trains.

The model zoo's training loop knows no task: the command passes it `PretrainEvaluations` as its `on_step`
callback. Every N steps (and at step 0) the encoder the evaluation uses is read by its method's rules, as
`lowshot bench` reads the saved weights (`model_zoo.loading.vit_in_memory`), and scored by a `LowShotProbe`
(features and records never written). At the end: `<out>/evaluations.csv` (step, task, setting, classifier, score
= mean over the setting's seeds, n_seeds) and `<out>/evaluations.png|pdf`, score vs. step in the series figure.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lowshot.model_zoo.files import atomic_write_text

from .figure_style import save_figure
from .probe import CURVE_COLUMNS, LowShotProbe

EVALUATIONS = "evaluations.csv"


class PretrainEvaluations:
    def __init__(self, probe: LowShotProbe, method: str, num_heads: int, name: str):
        self.probe, self.method, self.num_heads, self.name = probe, method, num_heads, name

    def __call__(self, step: int, encoder) -> None:
        from lowshot.model_zoo.loading import vit_in_memory

        if self.probe.due(step):
            self.probe(vit_in_memory(encoder, self.method, self.num_heads, self.name), step)

    def report(self, out: str | Path, run_seconds: float) -> str:
        """Write the evaluations; the lines the command ends with, the probe's cost as a share of the training."""
        paths = self.write(out)
        steps = sorted(set(self.probe.history["step"])) if len(self.probe.history) else []
        spent, training = self.probe.seconds, max(run_seconds - self.probe.seconds, 1e-9)
        return (f"low-shot evaluations at {len(steps)} step(s) {steps}: {spent:.1f} s, "
                f"{100 * spent / training:.1f} % of the training time ({training:.1f} s without them)\n"
                + "\n".join(f"wrote {p}" for p in paths))

    def write(self, out: str | Path) -> list[Path]:
        """evaluations.csv (rows of an earlier, resumed part of the run kept) and the curve figure."""
        out = Path(out)
        curve = self.probe.curve()
        path = out / EVALUATIONS
        if path.exists():  # a resumed run: the steps evaluated before it stopped
            before = pd.read_csv(path)
            curve = pd.concat([before[~before["step"].isin(curve["step"])], curve], ignore_index=True)
        curve = curve.sort_values(["task", "setting", "classifier", "step"], kind="stable")[CURVE_COLUMNS]
        atomic_write_text(path, curve.to_csv(index=False, float_format="%.4f"))
        title = f"{self.name}: low-shot scores while pretraining ({self.method})"
        return [path] + save_figure(curve_figure(curve.assign(run=self.name), title), out / "evaluations")


def series_records(curve: pd.DataFrame, run: str = "run") -> pd.DataFrame:
    """evaluations.csv rows (column `run` naming each run) as the records `plots.draw_series` reads: one point per
    (run, step, task, setting, classifier), the score being the mean over the setting's seeds."""
    from lowshot.tasks.registry import declaration

    families = {t: (declaration(t).family if declaration(t) else "") for t in set(curve["task"])}
    return curve.rename(columns={run: "run", "step": "training_step"}).assign(
        model=lambda f: f["run"], step_unit="step", family=lambda f: f["task"].map(families))


def curve_figure(curve: pd.DataFrame, title: str, run: str = "run", runs_note: str = ""):
    """The evaluations' rows in the series figure of `lowshot plot series` (a panel per task and setting, a line per
    run and classifier, each point the mean over the setting's seeds); `runs_note`: a sentence on the runs for the
    caption."""
    from .plots import draw_series

    seeds = "/".join(map(str, sorted(set(curve["n_seeds"].astype(int)))))
    note = (f"Each point: the mean over the setting's {seeds} seeds (labelled subsets), no error bars. {runs_note}"
            "x: the training step at which the teacher was evaluated.")
    return draw_series(series_records(curve, run=run), title=title, note=note)


DEFAULT_TASKS, DEFAULT_SETTINGS, DEFAULT_CLASSIFIERS = ["embedded-lowshot"], ["1img", "5img"], ["knn", "logreg"]


def start_evaluations(args, cfg) -> PretrainEvaluations:
    """The `on_step` callback of `lowshot pretrain --eval-every` (its tasks' data read and checked before training)."""
    probe = LowShotProbe(tasks=args.eval_task or DEFAULT_TASKS, settings=args.eval_setting or DEFAULT_SETTINGS,
                         classifiers=args.eval_classifier or DEFAULT_CLASSIFIERS, every=args.eval_every,
                         data_root=args.eval_data_root, eval_images=args.eval_images, name=args.name)
    return PretrainEvaluations(probe, cfg.method, cfg.num_heads, args.name)

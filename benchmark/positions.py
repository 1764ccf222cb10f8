"""Where a task's settings stand: by their labelled images per class, the one order of the tables and the x axis
of the figures.

A setting's position is the mean, over our records of it, of `num_train / num_classes` (labelled images per class:
exactly k for k images per class; for a fraction, or k-shot multi-label sampling where one image counts for
several classes, what the drawn subsets really hold). A setting without such a record (a published reference row
only, or records without the counts) takes the x its task declares (`tasks.base.Setting.x`); a setting the task
does not declare goes last, by name. Equal positions keep the declared order.
"""
from __future__ import annotations

import math

import pandas as pd

from lowshot.tasks.registry import declaration


def _declared(task: str) -> dict[str, tuple[int, float]]:
    entry = declaration(task)
    return {s.name: (i, float(s.x)) for i, s in enumerate(entry.declared_settings)} if entry else {}


def setting_positions(summary: pd.DataFrame, task: str) -> dict[str, float]:
    """{setting: x} for every setting of `task` in `summary` (x = labelled images per class, see the module)."""
    rows = summary[summary["task"] == task]
    declared = _declared(task)
    measured = {}
    if "per_class" in rows:
        ours = rows[rows["source"] == "ours"]
        for setting, values in pd.to_numeric(ours["per_class"], errors="coerce").groupby(ours["setting"]):
            if values.notna().any():
                measured[setting] = float(values.mean())
    out = {}
    for setting in dict.fromkeys(rows["setting"]):
        out[setting] = measured.get(setting, declared.get(setting, (0, math.nan))[1])
    return out


def ordered_settings(summary: pd.DataFrame, task: str) -> list[str]:
    """The settings of `task` in `summary`, in the order of their positions."""
    positions = setting_positions(summary, task)
    declared = _declared(task)

    def key(setting):
        x = positions[setting]
        index = declared.get(setting, (len(declared), 0))[0]
        return (math.isnan(x), x if not math.isnan(x) else 0.0, index, setting)

    return sorted(positions, key=key)


def setting_ranks(summary: pd.DataFrame) -> list[int]:
    """Per row of `summary`: the rank of its setting within its task (for sorting whole tables)."""
    ranks = {}
    for task in dict.fromkeys(summary["task"]):
        for i, setting in enumerate(ordered_settings(summary, task)):
            ranks[(task, setting)] = i
    return [ranks[(t, s)] for t, s in zip(summary["task"], summary["setting"])]

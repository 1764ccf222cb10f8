"""The run's (model x task) grid, from names alone (no weights are read), and its parts.

A unit of the grid is one model on one task: `lowshot bench --model M --task T` with the run's other options
computes exactly that unit's records, so units are the jobs of a launcher and the parts of a shard. A task of a
group or of the default list whose dataset is not found is left out (as `lowshot bench` skips it); a task asked
for by name stays (its job then fails and says what is missing). `--setting` is narrowed per task to the settings
that task declares (and `label-free`), a task without any of them is no unit.

`--shard i/n` keeps units i, i+n, i+2n, ... of the grid's order (models in the order given, tasks in the order
asked): shards are disjoint, their union is the grid, whatever the machine. `--shard auto` takes i and n from a
SLURM job array (SLURM_ARRAY_TASK_ID, its minimum and count), a SLURM step (SLURM_PROCID, SLURM_NTASKS) or a
launcher's RANK and WORLD_SIZE.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

from lowshot.model_zoo.errors import BadInputError, one_line


@dataclass(frozen=True)
class Unit:
    model: str  # a resolved model name or checkpoint path
    task: str
    settings: tuple[str, ...] | None  # this task's share of --setting; None: all its settings

    def title(self) -> str:
        return f"{self.model} x {self.task}"


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> Shard | str:
    """--shard: `i/n` with 0 <= i < n, or `auto`."""
    if value == "auto":
        return value
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is neither i/n (e.g. 0/4) nor 'auto'")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise argparse.ArgumentTypeError(f"{value}: the shard index must be in 0..n-1 (n >= 1)")
    return Shard(index, count)


def shard_from_environment(env=os.environ) -> Shard:
    """`--shard auto`: the shard of this process from SLURM's or a launcher's variables."""
    def number(name: str) -> int:
        try:
            return int(env[name])
        except ValueError:
            raise BadInputError(f"--shard auto: ${name}={env[name]!r} is not a whole number") from None

    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        index = number("SLURM_ARRAY_TASK_ID") - number("SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env \
            else number("SLURM_ARRAY_TASK_ID")
        count, source = number("SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        index, count, source = number("SLURM_PROCID"), number("SLURM_NTASKS"), "SLURM_PROCID/SLURM_NTASKS"
    elif "RANK" in env and "WORLD_SIZE" in env:
        index, count, source = number("RANK"), number("WORLD_SIZE"), "RANK/WORLD_SIZE"
    else:
        raise BadInputError("--shard auto: none of SLURM_ARRAY_TASK_ID (with SLURM_ARRAY_TASK_COUNT), SLURM_PROCID "
                            "(with SLURM_NTASKS) or RANK (with WORLD_SIZE) is set; pass --shard i/n")
    if not 0 <= index < count:
        raise BadInputError(f"--shard auto: {source} gives shard {index} of {count}")
    return Shard(index, count)


def _found(entry, data_root) -> str | None:
    """None when the task's data can be there, else why not (from the task's own `locate`; no data is read)."""
    if entry.embedded or entry.locate is None:
        return None
    try:
        entry.locate(data_root)
    except FileNotFoundError as e:
        return one_line(e)
    return None


def build_grid(models: list[str], args, label_free_setting: str) -> tuple[list[Unit], list[str], list[str]]:
    """The units of a run (models already resolved), one line per task left out, and the tasks whose data can be
    there (for the check of --setting)."""
    from lowshot.tasks.registry import embedded_tasks, expand, get_task, real_tasks

    embedded = args.data_root is None
    asked = expand(args.task) if args.task else [(n, False) for n in (embedded_tasks() if embedded else real_tasks())]
    tasks, skipped, present = [], [], []
    for name, by_name in asked:
        entry = get_task(name)
        missing = None if by_name else _found(entry, args.data_root)
        if missing:
            skipped.append(f"skipping {name}: {missing}")
            continue
        present.append(name)
        settings = None
        if args.setting:
            declared = {s.name for s in entry.declared_settings} | {label_free_setting}
            settings = tuple(s for s in args.setting if s in declared)
            if not settings:
                skipped.append(f"skipping {name}: none of --setting {' '.join(args.setting)} is one of its settings")
                continue
        tasks.append((name, settings))
    return [Unit(model, task, settings) for model in models for task, settings in tasks], skipped, present


def shard_units(units: list[Unit], shard: Shard) -> list[Unit]:
    return units[shard.index::shard.count]

"""One unit of the grid as a job: `lowshot bench --model M --task T ...` in a child process, its output appended
to the unit's two log files, and, when it succeeds, a marker that a rerun reads to skip the unit.

The command line is the run's own options (the parsed ones, written back) with the unit's model, task and
settings, paths made absolute (a job may start in another directory) and no launcher option, so a job is
exactly `lowshot bench` on one unit; its records, cache entries and locks are those of any other run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from lowshot.model_zoo.files import atomic_write_text

from .grid import Unit
from .options import LAUNCH_DESTS

PATH_OPTIONS = {"results", "cache", "data_root", "splits", "weights_file"}
UNIT_DESTS = {"model", "task", "setting"}  # written per unit


@dataclass(frozen=True)
class UnitJob:
    model: str
    task: str
    argv: tuple[str, ...]  # after `lowshot`
    out: str  # log files (appended to by every attempt)
    err: str
    marker: str  # written when the unit succeeded
    model_file: tuple[int, int] | None  # size and mtime of a checkpoint file: a changed file is not done

    def title(self) -> str:
        return f"{self.model} x {self.task}"

    def done_before(self) -> bool:
        """Whether an earlier job of the same command line (and the same checkpoint file) succeeded."""
        try:
            marker = json.loads(Path(self.marker).read_text())
        except (OSError, ValueError):
            return False
        return marker == {"argv": list(self.argv), "model_file": list(self.model_file) if self.model_file else None}

    def mark_done(self) -> None:
        atomic_write_text(Path(self.marker), json.dumps(
            {"argv": list(self.argv), "model_file": list(self.model_file) if self.model_file else None}))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UnitJob":
        return cls(**{**d, "argv": tuple(d["argv"]),
                      "model_file": tuple(d["model_file"]) if d.get("model_file") else None})


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().absolute())


def _option_strings(action: argparse.Action, value) -> list[str]:
    flag = action.option_strings[0]
    if isinstance(action, argparse._StoreTrueAction):  # argparse names its action classes privately
        return [flag] if value else []
    if action.dest in PATH_OPTIONS:
        value = _absolute(value)
    if isinstance(action, argparse._AppendAction):
        return [part for v in value for part in (flag, str(v))]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def unit_argv(args, unit: Unit, device: str | None = None) -> tuple[str, ...]:
    """`bench` and the options of this run for `unit` (device replaced where a launcher pins one)."""
    model = _absolute(unit.model) if Path(unit.model).is_file() else unit.model
    argv = ["bench", "--model", model, "--task", unit.task]
    if unit.settings:
        argv += ["--setting", *unit.settings]
    for action in args.bench_parser._actions:  # the parser's declared options, in their order
        dest = action.dest
        if not action.option_strings or dest in LAUNCH_DESTS | UNIT_DESTS or dest == "help":
            continue
        value = device if dest == "device" and device else getattr(args, dest, None)
        if value is None or value == action.default:
            continue
        argv += _option_strings(action, value)
    return tuple(argv)


def model_file_stamp(model: str) -> tuple[int, int] | None:
    path = Path(model)
    if not path.is_file():
        return None
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def execute(job: UnitJob, env: dict | None = None, started=None) -> int:
    """Run the unit's `lowshot bench` to its end; its exit status. `started(process)` is called once it runs."""
    Path(job.out).parent.mkdir(parents=True, exist_ok=True)
    with open(job.out, "a") as out, open(job.err, "a") as err:
        process = subprocess.Popen([sys.executable, "-m", "lowshot", *job.argv], stdout=out, stderr=err,
                                   env=env if env is not None else os.environ.copy(), stdin=subprocess.DEVNULL)
        if started:
            started(process)
        status = process.wait()
    if status == 0:
        job.mark_done()
    return status


def tail(path: str | Path, lines: int = 6) -> list[str]:
    """The last non-empty lines of a log file (none when it is missing)."""
    try:
        with open(path, errors="replace") as f:
            return list(deque((line.rstrip() for line in f if line.strip()), maxlen=lines))
    except OSError:
        return []

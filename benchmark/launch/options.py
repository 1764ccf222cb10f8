"""The options of `lowshot bench` that spread its (model x task) grid over jobs: --launcher, --jobs, --shard, the
SLURM resources, --detach."""
from __future__ import annotations

import argparse

from .grid import parse_shard

LAUNCHERS = ("none", "local", "slurm")
# SLURM options: dest -> the flag, for the error when they are given without --launcher slurm
SLURM_OPTIONS = {"partition": "--partition", "time_limit": "--time-limit", "gpus_per_job": "--gpus-per-job",
                 "cpus_per_job": "--cpus-per-job", "mem_per_job": "--mem-per-job",
                 "array_parallelism": "--array-parallelism", "account": "--account", "qos": "--qos",
                 "constraint": "--constraint", "detach": "--detach"}
# what a unit's own `lowshot bench` command line never carries
LAUNCH_DESTS = {"launcher", "jobs", "shard", *SLURM_OPTIONS}
DEFAULTS = {"time_limit": 120, "cpus_per_job": 4, "array_parallelism": 32, "detach": False}


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return number


def _gigabytes(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of GB") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value}: memory must be above 0 GB")
    return number


def add_launch_arguments(bench: argparse.ArgumentParser) -> None:
    g = bench.add_argument_group(
        "beyond one machine", "the run's (model x task) grid as jobs: one job per model and task, sharing --results "
        "and --cache; a rerun submits only the units not done (`lowshot status RESULTS` reports a SLURM run)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="none",
                   help="none: this process runs everything (default); local: --jobs processes at once on this "
                   "machine; slurm: one SLURM job array through submitit")
    g.add_argument("--jobs", type=_positive, help="--launcher local: jobs at once, each on one GPU "
                   "(CUDA_VISIBLE_DEVICES) with --device cuda, else on its share of the CPU cores (default: the "
                   "visible GPUs with --device cuda, else 2)")
    g.add_argument("--shard", type=parse_shard, metavar="I/N|auto",
                   help="run only part I of N of the grid in this process (0-based; the union of the N parts is "
                   "the run, no unit in two); auto: from SLURM_ARRAY_TASK_ID, SLURM_PROCID or RANK")
    s = bench.add_argument_group("SLURM (--launcher slurm)")
    s.add_argument("--partition", help="partition to submit to (default: the cluster's default)")
    s.add_argument("--time-limit", type=_positive, default=DEFAULTS["time_limit"], metavar="MINUTES",
                   help="time limit of one job; a job that reaches it is requeued and continues (default 120)")
    s.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: 1 with --device cuda, else 0)")
    s.add_argument("--cpus-per-job", type=_positive, default=DEFAULTS["cpus_per_job"], help="CPU cores per job (default 4)")
    s.add_argument("--mem-per-job", type=_gigabytes, metavar="GB", help="memory per job in GB (default: the "
                   "partition's default)")
    s.add_argument("--array-parallelism", type=_positive, default=DEFAULTS["array_parallelism"],
                   help="jobs of the array running at once (default 32)")
    s.add_argument("--account", help="account to charge")
    s.add_argument("--qos", help="quality of service")
    s.add_argument("--constraint", help="node features the jobs need (sbatch --constraint, e.g. a100)")
    s.add_argument("--detach", action="store_true", help="submit and return; `lowshot status RESULTS` reports "
                   "the jobs later and builds the leaderboard and report when all are done")


def check_launch_arguments(args) -> None:
    """Options that mean nothing for the chosen launcher are an error, not silently ignored."""
    from lowshot.model_zoo.errors import BadInputError

    if args.launcher != "slurm":
        given = [flag for dest, flag in SLURM_OPTIONS.items() if getattr(args, dest) not in (None, DEFAULTS.get(dest))]
        if given:
            raise BadInputError(f"{', '.join(given)}: only with --launcher slurm")
    if args.jobs is not None and args.launcher != "local":
        raise BadInputError("--jobs: only with --launcher local")
    if args.shard is not None and args.launcher != "none":
        raise BadInputError("--shard runs one part of the grid in this process: not with --launcher "
                            f"{args.launcher}, which spreads the whole grid itself")
    if args.launcher != "none" and args.extract_only:
        raise BadInputError(f"--extract-only is for torchrun: not with --launcher {args.launcher}")

"""Beyond one process: the run's (model x task) grid as jobs.

`lowshot bench ... --launcher local --jobs N` runs N units at once on this machine, `--launcher slurm` submits one
SLURM job array through submitit, and `--shard i/n` runs one part of the grid in this process (for a user's own
sbatch or several machines). A unit is one model on one task, run as `lowshot bench` on that unit alone (one model
loaded per job); jobs share the results directory and the feature cache, whose identities and locks make a rerun
compute only what is missing. The grid needs model and task names only: no weights are read to plan it.
"""
from __future__ import annotations

import copy

from lowshot.model_zoo.errors import BadInputError

from .folder import LaunchFolder
from .grid import Unit, build_grid, shard_from_environment, shard_units
from .options import add_launch_arguments, check_launch_arguments

__all__ = ["add_launch_arguments", "launcher_requested", "launch"]


def launcher_requested(args) -> bool:
    """Whether `lowshot bench` spreads its grid (--launcher or --shard); launch options that mean nothing for the
    chosen launcher are an error here, before anything runs."""
    check_launch_arguments(args)
    return args.launcher != "none" or args.shard is not None


def launch(args, models: list[str], check_settings, bench) -> int:
    """`lowshot bench` with --launcher or --shard. `models` are resolved names; `check_settings(settings, tasks)`
    rejects a --setting of no task; `bench(args)` runs a run in this process (for a shard)."""
    from .. import distributed
    from lowshot.tasks.spectrum import LABEL_FREE

    if distributed.launched_by_torchrun():
        raise BadInputError("--launcher and --shard are not for torchrun (which shards one extraction): run them "
                            "without torchrun")
    units, skipped, tasks = build_grid(models, args, LABEL_FREE)
    for line in skipped:
        print(line)
    check_settings(args.setting, tasks)
    if not units:
        raise BadInputError("no unit to run: no task of this run has data and a setting asked for")
    if args.shard is not None:
        return _run_shard(args, units, bench)
    folder = LaunchFolder(args.results)
    if args.launcher == "local":
        return _run_local(args, units, folder)
    return _run_slurm(args, units, folder)


def _run_shard(args, units: list[Unit], bench) -> int:
    shard = shard_from_environment() if args.shard == "auto" else args.shard
    mine = shard_units(units, shard)
    print(f"shard {shard}: {len(mine)} of the grid's {len(units)} unit(s)"
          + "".join(f"\n  {u.title()}" for u in mine), flush=True)
    status = 0
    for model in dict.fromkeys(u.model for u in mine):  # one model at a time, its units of this shard together
        its = [u for u in mine if u.model == model]
        part = copy.copy(args)
        part.model, part.task, part.shard = [model], [u.task for u in its], None
        if args.setting:
            part.setting = [s for s in args.setting if any(s in u.settings for u in its)]
        status = bench(part) or status
    return status


def _plan(jobs, todo) -> None:
    print(f"plan: {len(jobs)} unit(s) (model x task), {len(todo)} to run, {len(jobs) - len(todo)} done by earlier "
          "jobs:")
    for job in jobs:
        print(f"  {job.title()}: {'to run' if job in todo else 'done'}")


def _todo(args, jobs):
    return jobs if args.overwrite else [job for job in jobs if not job.done_before()]


def _run_local(args, units: list[Unit], folder: LaunchFolder) -> int:
    from . import local
    from .status import Board, finish

    free = local.slots(args.jobs, args.device)
    device = "cuda" if args.device.startswith("cuda") else None  # each job sees its one GPU as `cuda`
    jobs = [folder.unit_job(args, unit, device) for unit in units]
    todo = _todo(args, jobs)
    _plan(jobs, todo)
    print(f"{len(free)} job(s) at once: " + "; ".join(slot.describe() for slot in free)
          + f"; logs in {folder.root / 'logs'}", flush=True)
    board = Board(todo, enabled=not args.quiet)
    local.run(todo, free, board)
    return finish(board, args.results)


def _run_slurm(args, units: list[Unit], folder: LaunchFolder) -> int:
    from . import slurm
    from .status import Board, poll_interval, watch

    jobs = [folder.unit_job(args, unit) for unit in units]
    if folder.manifest.is_file():
        _, earlier = folder.read_manifest()
        unfinished = [job.title() for (job, _), (state, _) in zip(earlier, slurm.states(folder, earlier))
                      if state not in ("done", "failed")]
        if unfinished:
            raise BadInputError(f"{len(unfinished)} job(s) of the last launch into {args.results} have not ended "
                                f"({', '.join(unfinished[:3])}{', ...' if len(unfinished) > 3 else ''}): wait for "
                                f"them (`lowshot status {args.results}`) or scancel them, then rerun")
    todo = _todo(args, jobs)
    _plan(jobs, todo)
    if not todo:
        from .status import build_outputs
        build_outputs(args.results)
        return 0
    ids = slurm.submit(todo, args, folder)
    by_title = dict(zip((job.title() for job in todo), ids))
    entries = [(job, by_title.get(job.title())) for job in jobs]
    folder.write_manifest({"launcher": "slurm", "results": str(folder.results)}, entries)
    print(f"submitted job array {ids[0].split('_')[0]}: {len(todo)} job(s), at most {args.array_parallelism} at "
          f"once; logs in {folder.root / 'logs'} (submitit's in {folder.slurm})", flush=True)
    if args.detach:
        print(f"detached: `lowshot status {args.results}` reports the jobs and builds the leaderboard and report "
              "once all have ended")
        return 0
    board = Board(todo, enabled=not args.quiet)
    pending = [(job, job_id) for job, job_id in entries if job_id]
    try:
        return watch(board, lambda: slurm.states(folder, pending), args.results)
    except KeyboardInterrupt:
        print(f"\nthe jobs go on on the cluster: `lowshot status {args.results}` reports them; "
              f"`scancel {ids[0].split('_')[0]}` stops them", flush=True)
        raise


def report_status(results: str) -> int:
    """`lowshot status RESULTS`: the jobs of the last SLURM launch there; once all have ended, the leaderboard and
    the report. 1 when a job failed, else 0."""
    from . import slurm
    from .status import Board, failure_text, finish

    folder = LaunchFolder(results)
    header, entries = folder.read_manifest()
    print(f"launch of {header.get('submitted', '?')} into {folder.results}: {len(entries)} unit(s)")
    board = Board([job for job, _ in entries], enabled=False)
    for (job, _), (state, detail) in zip(entries, slurm.states(folder, entries)):
        board.set(job, state, detail)
        print(f"  {state:8} {job.title()}" + (f" ({detail})" if detail and state != "done" else ""))
    print(f"jobs: {board.counts()}")
    if not board.all_finished():
        text = failure_text(board)
        if text:
            print(text)
        print("not every job has ended: the leaderboard and report are built when all have")
        return 0
    return finish(board, results)

"""`--launcher slurm`: the grid's units as one SLURM job array through submitit.

Each array task runs one unit (`job.execute`) inside submitit's job process; a unit that fails raises, so its
submitit result names the unit, its log and the log's last lines. A job that reaches its time limit or is
preempted is requeued by submitit (`checkpoint`): its records written so far are kept and the requeued job
computes only the missing ones.

Job states come from `sacct` where the cluster keeps accounting, else from `scontrol show job -o` (clusters
without accounting answer nothing to sacct, and submitit would report UNKNOWN forever); scontrol knows a finished
job for MinJobAge seconds (300 by default). A finished job's outcome is read from submitit's result file first,
so a job the scheduler has forgotten is still counted when it left its result.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import time

import submitit
from submitit.core import utils as submitit_utils
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmInfoWatcher

from lowshot.model_zoo.errors import BadInputError

from .job import UnitJob, execute, tail

PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED",
           "PREEMPTED", "STOPPED", "SIGNALING", "REVOKED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}


class UnitFailed(RuntimeError):
    pass


class RunUnit(Checkpointable):
    """The function of an array task: one unit; requeued as it is on timeout or preemption (`checkpoint`)."""

    def __call__(self, job: UnitJob) -> int:
        status = execute(job)
        if status:
            raise UnitFailed("\n".join([f"{job.title()}: lowshot bench exited with status {status}; log {job.err}:",
                                        *tail(job.err)]))
        return status


class SchedulerWatcher(SlurmInfoWatcher):
    """submitit's watcher, asking `scontrol show job -o` about the jobs `sacct` does not know."""

    def update(self) -> None:
        self._num_calls += 1
        command = self._make_command()
        if command is None:
            return
        answer = subprocess.run(command, capture_output=True, text=True)
        fresh = self.read_info(answer.stdout) if answer.returncode == 0 else {}
        self._info_dict.update(fresh)
        unknown = {job_id.split("_")[0] for job_id in self._registered - self._finished if job_id not in fresh}
        for array_id in sorted(unknown):
            shown = subprocess.run(["scontrol", "show", "job", "-o", array_id], capture_output=True, text=True)
            if shown.returncode == 0:
                self._info_dict.update(read_scontrol(shown.stdout))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def read_scontrol(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show job -o` (one line per job or array task) -> {"<array>_<task>" or "<job>": {"State": ...}}."""
    states = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields or "JobState" not in fields:
            continue
        info = {"JobID": fields["JobId"], "State": fields["JobState"], "NodeList": fields.get("NodeList", "")}
        array, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if not array or not tasks:
            states[fields["JobId"]] = info
            continue
        for part in tasks.split("%")[0].split(","):  # pending tasks are shown as one line: 2-5%2 or 1,3
            low, _, high = part.partition("-")
            for index in range(int(low), int(high or low) + 1):
                states[f"{array}_{index}"] = info
    return states


class Job(submitit.SlurmJob):
    watcher = SchedulerWatcher(delay_s=60)


class Executor(submitit.SlurmExecutor):
    job_class = Job


def submit(jobs: list[UnitJob], args, folder) -> list[str]:
    """One job array of `jobs`; the job id of each."""
    if shutil.which("sbatch") is None:
        raise BadInputError("--launcher slurm: sbatch not found on this machine (run it where jobs are submitted, "
                            "e.g. a login node)")
    gpus = args.gpus_per_job if args.gpus_per_job is not None else (1 if args.device.startswith("cuda") else 0)
    executor = Executor(folder=folder.slurm, max_num_timeout=3)
    parameters = {"job_name": "lowshot-bench", "time": args.time_limit, "cpus_per_task": args.cpus_per_job,
                  "gpus_per_node": gpus or None, "array_parallelism": args.array_parallelism,
                  "partition": args.partition, "account": args.account, "qos": args.qos,
                  "constraint": args.constraint,
                  "mem": f"{math.ceil(args.mem_per_job * 1024)}M" if args.mem_per_job else None}
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    try:
        submitted = executor.map_array(RunUnit(), jobs)
    except (submitit_utils.FailedJobError, subprocess.CalledProcessError, OSError) as e:
        raise BadInputError(f"sbatch refused the job array: {' '.join(str(e).split())}") from None
    return [job.job_id for job in submitted]


def states(folder, entries: list[tuple[UnitJob, str | None]]) -> list[tuple[str, str]]:
    """(state, detail) of each entry: done, failed, running or pending; the detail names a failed job's cause."""
    jobs = {job_id: Job(folder=folder.slurm, job_id=job_id) for _, job_id in entries if job_id}
    if jobs:
        Job.watcher.update()
    out = []
    for unit, job_id in entries:
        if job_id is None:
            out.append(("done", "by an earlier launch"))
            continue
        job = jobs[job_id]
        if job.paths.result_pickle.exists():
            outcome, _ = submitit_utils.pickle_load(job.paths.result_pickle)
            out.append(("done", "") if outcome == "success" else ("failed", f"job {job_id}"))
            continue
        state = Job.watcher.get_state(job_id, mode="cache").split()[0]
        if state in RUNNING:
            out.append(("running", f"job {job_id}"))
        elif state in PENDING or state == "UNKNOWN" and not started(job):  # just submitted: not shown yet
            out.append(("pending", f"job {job_id}"))
        elif state == "UNKNOWN":
            out.append(("failed", f"job {job_id}: neither sacct nor scontrol knows it any more and it left no "
                        f"result; submitit log {job.paths.stderr}"))
        else:  # ended without a result: cancelled, killed, out of memory, node failure, time limit without requeue
            out.append(("failed", f"job {job_id}: {state}, no result; submitit log {job.paths.stderr}"))
    return out


def started(job) -> bool:
    """Whether the job has begun (submitit's logs exist)."""
    return job.paths.stderr.exists() or job.paths.stdout.exists()

"""`--launcher local --jobs N`: N units at once on this machine, each in its own `lowshot bench` process.

With `--device cuda` each job sees one GPU (CUDA_VISIBLE_DEVICES) and runs on `cuda`; on CPU each job is pinned
to its share of this process's cores (sched_setaffinity) and told to use that many threads (OMP_NUM_THREADS and
the BLAS libraries' own variables, which torch and faiss read when they start).
"""
from __future__ import annotations

import os
import queue
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from lowshot.model_zoo.errors import BadInputError

from .job import UnitJob, execute
from .status import Board

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Slot:
    """Where one job runs: its environment and the cores it is pinned to."""
    env: dict
    cores: tuple[int, ...]

    def describe(self) -> str:
        gpu = self.env.get("CUDA_VISIBLE_DEVICES")
        return (f"GPU {gpu}, " if gpu is not None else "") + f"cores {','.join(map(str, self.cores))}"


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def slots(jobs: int | None, device: str) -> list[Slot]:
    """One slot per concurrent job: a GPU each with --device cuda, and a disjoint share of the cores."""
    cores = sorted(os.sched_getaffinity(0))
    gpus = visible_gpus() if device.startswith("cuda") else []
    if device.startswith("cuda"):
        jobs = jobs or len(gpus)
        if jobs > len(gpus):
            raise BadInputError(f"--jobs {jobs}: {len(gpus)} GPU(s) visible here, one per job")
    jobs = jobs or 2
    share = max(1, len(cores) // jobs)
    out = []
    for i in range(jobs):
        mine = tuple(cores[(i * share + k) % len(cores)] for k in range(share))
        env = {name: str(share) for name in THREAD_VARIABLES}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        out.append(Slot(env, mine))
    return out


def run(jobs: list[UnitJob], free_slots: list[Slot], board: Board) -> None:
    """Run every job, at most one per slot at a time; the board follows them. Ctrl-C stops the running ones."""
    free: queue.Queue[Slot] = queue.Queue()
    for slot in free_slots:
        free.put(slot)
    running: set[subprocess.Popen] = set()

    def work(job: UnitJob) -> tuple[int, Slot]:
        slot = free.get()
        try:
            board.set(job, "running", slot.describe())

            def started(process):
                running.add(process)
                os.sched_setaffinity(process.pid, slot.cores)

            return execute(job, {**os.environ, **slot.env}, started), slot
        finally:
            free.put(slot)

    with ThreadPoolExecutor(len(free_slots)) as pool:
        futures = {pool.submit(work, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                status, slot = future.result()
                board.set(futures[future], "done" if status == 0 else "failed",
                          "" if status == 0 else f"exit status {status}")
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            for process in list(running):
                process.terminate()
            raise

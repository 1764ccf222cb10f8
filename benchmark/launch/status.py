"""The jobs of a launch as the user sees them: done / running / pending / failed with the suite's progress
conventions (a bar on a terminal, log lines otherwise), each failed job named with its log and the log's last
lines, and, once every job has ended, the leaderboard and the report built from the records."""
from __future__ import annotations

import os
import threading
import time

from ..progress import Progress, write
from .job import UnitJob, tail

FINISHED = ("done", "failed")


def poll_interval() -> float:
    """Seconds between two looks at the scheduler ($LOWSHOT_POLL_INTERVAL, default 10)."""
    try:
        return max(0.2, float(os.environ.get("LOWSHOT_POLL_INTERVAL", "10")))
    except ValueError:
        return 10.0


class Board:
    """The state of each job; a line per change (started, done, failed) and a count of the finished ones."""

    def __init__(self, jobs: list[UnitJob], enabled: bool = True):
        self.jobs = jobs
        self.state = {job.title(): "pending" for job in jobs}
        self.detail: dict[str, str] = {}
        self.enabled = enabled
        self.lock = threading.Lock()
        self.progress = Progress(len(jobs), "jobs", unit="job", enabled=enabled)
        self.progress.note(self.counts())

    def counts(self) -> str:
        values = list(self.state.values())
        return ", ".join(f"{values.count(s)} {s}" for s in ("done", "running", "pending", "failed"))

    def set(self, job: UnitJob, state: str, detail: str = "") -> None:
        with self.lock:
            title = job.title()
            if self.state[title] == state:
                return
            finished_now = state in FINISHED and self.state[title] not in FINISHED
            self.state[title], self.detail[title] = state, detail
            if self.enabled and state != "pending":
                write(f"job {state}: {title}" + (f" ({detail})" if detail else ""))
            self.progress.note(self.counts())
            if finished_now:
                self.progress.update(1)

    def all_finished(self) -> bool:
        return all(s in FINISHED for s in self.state.values())

    def failed(self) -> list[UnitJob]:
        return [job for job in self.jobs if self.state[job.title()] == "failed"]

    def close(self) -> None:
        self.progress.close()


def failure_text(board: Board) -> str:
    """Each failed job: what it ran, its log, the log's last lines."""
    failed = board.failed()
    if not failed:
        return ""
    lines = [f"{len(failed)} job(s) failed (the records of the others are kept; a rerun of the same command "
             "submits only the units not done):"]
    for job in failed:
        lines.append(f"  {job.title()} ({board.detail.get(job.title()) or 'failed'}): log {job.err}")
        lines += [f"      {line}" for line in tail(job.err)] or ["      (the log is empty)"]
    return "\n".join(lines)


def build_outputs(results) -> None:
    """The leaderboard and the report of every record under `results` (as `lowshot leaderboard` and
    `lowshot report` do)."""
    from ..leaderboard import format_table, load_summary, write_tables
    from ..report import write_report
    from ..transfer_report import write_transfer_tables

    frame, summary = load_summary(results)
    paths = write_tables(frame, summary, results)
    paths.update(write_transfer_tables(summary, results))
    print(format_table(summary[summary["config_digest"].isin(frame["config_digest"])]))  # no reference rows
    print(f"\nleaderboard: {paths['leaderboard']} and {paths['markdown']}")
    print(f"report: {write_report(results, None)}")


def finish(board: Board, results) -> int:
    """After the last job: failures named, tables and report built; 1 when a job failed, else 0."""
    board.close()
    text = failure_text(board)
    if text:
        print(text, flush=True)
    build_outputs(results)
    return 1 if text else 0


def watch(board: Board, poll, results) -> int:
    """Refresh `board` from `poll()` (a (state, detail) per job) until every job has ended, then `finish`."""
    interval = poll_interval()
    while True:
        for job, (state, detail) in zip(board.jobs, poll()):
            board.set(job, state, detail)
        if board.all_finished():
            return finish(board, results)
        time.sleep(interval)

"""What a launcher keeps beside the records: `<results>/launch/`.

- `logs/<unit>.out`, `logs/<unit>.err`: each unit's `lowshot bench` output, every attempt appended;
- `done/<unit>.done`: written by a unit that succeeded (its command line): a rerun submits only units without one;
- `slurm/`: submitit's folder (its job scripts, pickles and logs);
- `jobs.jsonl`: the last SLURM submission (a header line, then one line per unit with its job id), read by
  `lowshot status`.
No file there ends in `.json`, so that nothing in it is taken for a record.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from lowshot.model_zoo.errors import MissingFileError
from lowshot.model_zoo.files import atomic_write_text

from ..records import safe_name
from .grid import Unit
from .job import UnitJob, model_file_stamp, unit_argv


class LaunchFolder:
    def __init__(self, results: str | Path):
        self.results = Path(results).absolute()
        self.root = self.results / "launch"
        self.manifest = self.root / "jobs.jsonl"
        self.slurm = self.root / "slurm"

    def unit_job(self, args, unit: Unit, device: str | None = None) -> UnitJob:
        name = f"{safe_name(unit.model)}__{safe_name(unit.task)}"
        return UnitJob(unit.model, unit.task, unit_argv(args, unit, device), out=str(self.root / "logs" / f"{name}.out"),
                       err=str(self.root / "logs" / f"{name}.err"), marker=str(self.root / "done" / f"{name}.done"),
                       model_file=model_file_stamp(unit.model))

    def write_manifest(self, header: dict, entries: list[tuple[UnitJob, str]]) -> None:
        lines = [json.dumps({**header, "submitted": time.strftime("%Y-%m-%d %H:%M:%S")})]
        lines += [json.dumps({"job_id": job_id, **job.to_dict()}) for job, job_id in entries]
        atomic_write_text(self.manifest, "\n".join(lines) + "\n")

    def read_manifest(self) -> tuple[dict, list[tuple[UnitJob, str]]]:
        if not self.manifest.is_file():
            raise MissingFileError(f"{self.manifest}: no SLURM launch in {self.results} (`lowshot bench --launcher "
                                   f"slurm --results {self.results} ...` writes it)")
        try:
            rows = [json.loads(line) for line in self.manifest.read_text().splitlines() if line.strip()]
            entries = [(UnitJob.from_dict({k: v for k, v in row.items() if k != "job_id"}), row["job_id"])
                       for row in rows[1:]]
        except (ValueError, KeyError, TypeError) as e:
            raise MissingFileError(f"{self.manifest}: not a launch manifest ({e})") from None
        return rows[0], entries

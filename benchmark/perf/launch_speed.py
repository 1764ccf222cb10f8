"""Local jobs: wall time of `lowshot bench --launcher local --jobs N` / the same grid in one process.

    python -m lowshot.benchmark.perf.launch_speed [--jobs 2] [--repeats 3] [--model dino-tiny --model mae-tiny]
        [--task embedded-lowshot --task embedded-transfer] [--setting 1img 1shot] [--classifier knn] [--small]

Each timed run is a whole `lowshot bench` process started from nothing, with a fresh results directory and
feature cache (so both compute every feature and record); the two commands alternate (one process, then the
jobs) and the medians and the median of the pairwise ratios are printed. Both runs must write the same records.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lowshot.benchmark.records import load_records


def _run(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lowshot", *command], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _scores(results: Path) -> dict:
    """{identity: main score} of the records under `results`."""
    return {r["identity"]: r["metrics"][r["main_score"]] for r in load_records(results)[0]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", action="append")
    p.add_argument("--task", action="append")
    p.add_argument("--setting", nargs="+", default=["1img", "1shot"])
    p.add_argument("--classifier", nargs="+", default=["knn"])
    p.add_argument("--small", action="store_true", help="CI size: one repeat, embedded-transfer only")
    a = p.parse_args(argv)
    if a.small:
        a.repeats, a.task, a.setting = 1, a.task or ["embedded-transfer"], ["1shot"]
    grid = [part for m in a.model or ["dino-tiny", "mae-tiny"] for part in ("--model", m)]
    grid += [part for t in a.task or ["embedded-lowshot", "embedded-transfer"] for part in ("--task", t)]
    grid += ["--setting", *a.setting, "--classifier", *a.classifier, "--quiet"]
    single, jobs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            one, many = Path(tmp) / f"one{i}", Path(tmp) / f"jobs{i}"
            single.append(_run(["bench", *grid, "--results", str(one / "r"), "--cache", str(one / "c")]))
            jobs.append(_run(["bench", *grid, "--launcher", "local", "--jobs", str(a.jobs),
                              "--results", str(many / "r"), "--cache", str(many / "c")]))
            same = _scores(one / "r") == _scores(many / "r") and len(_scores(one / "r")) > 0
            if not same:
                raise SystemExit("the two runs wrote different records")
    ratios = [j / s for s, j in zip(single, jobs)]
    print(f"one process: median {statistics.median(single):.1f}s ({', '.join(f'{t:.1f}' for t in single)}); "
          f"--jobs {a.jobs}: median {statistics.median(jobs):.1f}s ({', '.join(f'{t:.1f}' for t in jobs)})")
    print(f"ratio --jobs {a.jobs} / one process: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); the same records: yes")
    return {"single": single, "jobs": jobs, "ratios": ratios}


if __name__ == "__main__":
    main()

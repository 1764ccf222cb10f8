"""benchmark/launch: the (model x task) grid as jobs -- on a real single-node SLURM (`.ci/start-slurm`), as local
jobs, and in shards -- gives the records of one run, each computed once; failures are named with their logs; a
rerun runs only what is missing."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lowshot.benchmark.cli import build_parser, main
from lowshot.benchmark.launch.grid import Shard, build_grid, parse_shard, shard_from_environment, shard_units
from lowshot.benchmark.launch.slurm import read_scontrol
from lowshot.benchmark.records import load_records, safe_name
from lowshot.model_zoo.errors import BadInputError

WEIGHTS = Path(__file__).resolve().parents[1] / "model_zoo" / "weights"
# 2 models x 2 embedded tasks, one cheap setting each, k-NN only: a unit takes seconds
GRID = ["--model", "dino-tiny", "--model", "mae-tiny", "--task", "embedded-lowshot", "--task", "embedded-transfer",
        "--setting", "1img", "1shot", "--classifier", "knn"]
WRITTEN = re.compile(r"(\d+) record\(s\) written")


def records(results) -> dict:
    """{(model, task, setting, seed, classifier): (identity, main score)} of every record under `results`."""
    found, problems = load_records(results)
    assert not problems
    return {(r["model"], r["task"], r["setting"], r["seed"], r["classifier"]): (r["identity"],
                                                                                 r["metrics"][r["main_score"]])
            for r in found}


def written_by_jobs(results) -> int:
    """Records the jobs of a launch say they wrote (their logs' `N record(s) written` lines)."""
    return sum(int(n) for log in (Path(results) / "launch" / "logs").glob("*.out")
               for n in WRITTEN.findall(log.read_text()))


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """The grid run in one process: the records every launcher must reproduce, and its feature cache."""
    tmp = tmp_path_factory.mktemp("one-run")
    assert main(["bench", *GRID, "--results", str(tmp / "r"), "--cache", str(tmp / "c"), "--quiet"]) == 0
    found = records(tmp / "r")
    assert len(found) == 2 * 2 * 3  # 2 models x 2 tasks x 3 seeds of one setting and classifier
    return found, tmp / "c"


def _args(*extra):
    return build_parser().parse_args(["bench", *GRID, *extra])


# -- the grid and its shards (names only: no model is loaded) --------------------------------------------------

def test_the_grid_needs_names_only_and_narrows_settings_per_task():
    units, skipped, tasks = build_grid(["dino-tiny", "/no/such/file.pth"], _args(), "label-free")
    assert [(u.model, u.task, u.settings) for u in units] == [
        ("dino-tiny", "embedded-lowshot", ("1img",)), ("dino-tiny", "embedded-transfer", ("1shot",)),
        ("/no/such/file.pth", "embedded-lowshot", ("1img",)), ("/no/such/file.pth", "embedded-transfer", ("1shot",))]
    assert skipped == [] and tasks == ["embedded-lowshot", "embedded-transfer"]
    # a default or group task whose data is not found is left out, saying why (as `lowshot bench` skips it)
    args = build_parser().parse_args(["bench", "--model", "x", "--task", "transfer", "--data-root", "/nowhere"])
    units, skipped, _ = build_grid(["x"], args, "label-free")
    from lowshot.tasks.transfer import TRANSFER_DATASETS

    assert units == [] and len(skipped) == len(TRANSFER_DATASETS) > 1
    assert all(line.startswith("skipping transfer-") and "/nowhere" in line for line in skipped)


def test_shards_are_disjoint_and_their_union_is_the_grid():
    units, _, _ = build_grid(["a", "b", "c"], _args(), "label-free")
    parts = [shard_units(units, Shard(i, 3)) for i in range(3)]
    assert sorted(map(repr, sum(parts, []))) == sorted(map(repr, units))  # every unit once
    assert [len(p) for p in parts] == [2, 2, 2]
    assert parts == [shard_units(units, Shard(i, 3)) for i in range(3)]  # deterministic
    assert parse_shard("2/3") == Shard(2, 3) and parse_shard("auto") == "auto"
    for bad in ("3/3", "1/0", "x", "-1/2"):
        with pytest.raises(Exception, match="shard|neither"):
            parse_shard(bad)


def test_shard_auto_reads_slurm_or_a_launchers_rank():
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10",
                                   "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == Shard(2, 4)
    assert shard_from_environment({"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}) == Shard(3, 8)
    assert shard_from_environment({"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    with pytest.raises(BadInputError, match="none of SLURM_ARRAY_TASK_ID"):
        shard_from_environment({})
    with pytest.raises(BadInputError, match="RANK/WORLD_SIZE gives shard 2 of 2"):
        shard_from_environment({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_units_command_line_is_the_runs_own_options(tmp_path):
    from lowshot.benchmark.launch.folder import LaunchFolder

    args = _args("--results", "rel/results", "--cache", "rel/cache", "--batch-size", "8", "--bf16", "--overwrite",
                 "--lambd", "cv", "--launcher", "slurm", "--partition", "gpu")
    units, _, _ = build_grid(["dino-tiny"], args, "label-free")
    job = LaunchFolder(tmp_path).unit_job(args, units[1])
    again = build_parser().parse_args(list(job.argv))
    assert (again.model, again.task, again.setting) == (["dino-tiny"], ["embedded-transfer"], ["1shot"])
    assert again.results == str(Path("rel/results").absolute()) and again.cache == str(Path("rel/cache").absolute())
    for same in ("batch_size", "bf16", "overwrite", "lambd", "classifier", "device", "weights"):
        assert getattr(again, same) == getattr(args, same), same
    assert again.launcher == "none" and again.partition is None  # a job never launches again


def test_launch_options_that_mean_nothing_here_are_one_line_errors(tmp_path, capsys):
    for extra, message in ((["--jobs", "2"], "--jobs: only with --launcher local"),
                           (["--launcher", "local", "--partition", "gpu"], "--partition: only with --launcher slurm"),
                           (["--launcher", "local", "--shard", "0/2"], "--shard runs one part of the grid"),
                           (["--shard", "auto"], "--shard auto: none of")):
        assert main(["bench", *GRID, "--results", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lowshot bench: error: ") and message in err and err.count("\n") == 1, err


def test_status_without_a_launch_says_so(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"lowshot status: error: {tmp_path}/launch/jobs.jsonl: no SLURM launch in "
                                       f"{tmp_path} (`lowshot bench --launcher slurm --results {tmp_path} ...` "
                                       "writes it)\n")


def test_local_slots_pin_one_gpu_or_a_share_of_the_cores(monkeypatch):
    from lowshot.benchmark.launch import local

    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    cpu = local.slots(2, "cpu")
    assert [s.cores for s in cpu] == [(0, 1), (2, 3)] and cpu[0].env["OMP_NUM_THREADS"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in cpu[0].env
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpu = local.slots(None, "cuda")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["3", "5"]
    with pytest.raises(BadInputError, match="--jobs 3: 2 GPU"):
        local.slots(3, "cuda:1")


def test_job_states_from_scontrol_without_accounting():
    text = ("JobId=40 ArrayJobId=40 ArrayTaskId=2-4%2 ArrayTaskThrottle=2 JobState=PENDING Reason=JobArrayTaskLimit "
            "NodeList=(null)\n"
            "JobId=41 ArrayJobId=40 ArrayTaskId=0 JobState=RUNNING Reason=None NodeList=vm\n"
            "JobId=42 ArrayJobId=40 ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode NodeList=vm\n"
            "JobId=50 JobName=wrap JobState=COMPLETED NodeList=vm\n")
    states = {k: v["State"] for k, v in read_scontrol(text).items()}
    assert states == {"40_2": "PENDING", "40_3": "PENDING", "40_4": "PENDING", "40_0": "RUNNING",
                      "40_1": "FAILED", "50": "COMPLETED"}


# -- end to end: the same records as one run, none computed twice ----------------------------------------------

@pytest.mark.slow
def test_local_jobs_give_the_records_of_one_run(one_run, tmp_path, capsys):
    expected, _ = one_run
    results = tmp_path / "r"
    assert main(["bench", *GRID, "--launcher", "local", "--jobs", "2", "--results", str(results),
                 "--cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "2 job(s) at once" in out and "job done: mae-tiny x embedded-transfer" in out
    assert records(results) == expected  # same identities, same scores
    assert written_by_jobs(results) == len(expected)  # each record computed by one job only
    assert (results / "leaderboard.csv").is_file() and "mae-tiny" in (results / "report.html").read_text()
    # a rerun finds every unit done and starts no job
    assert main(["bench", *GRID, "--launcher", "local", "--jobs", "2", "--results", str(results),
                 "--cache", str(tmp_path / "c")]) == 0
    assert "4 unit(s) (model x task), 0 to run, 4 done" in capsys.readouterr().out


@pytest.mark.slow
def test_three_shards_give_the_records_of_one_run_each_once(one_run, tmp_path, capsys):
    expected, cache = one_run
    parts = []
    for i in range(3):  # each shard into its own results: a unit in two shards would show as a record twice
        assert main(["bench", *GRID, "--shard", f"{i}/3", "--results", str(tmp_path / str(i)), "--cache",
                     str(cache), "--quiet"]) == 0
        assert f"shard {i}/3: " in capsys.readouterr().out
        parts.append(records(tmp_path / str(i)))
    assert sum(len(p) for p in parts) == len(expected)
    assert {k: v for p in parts for k, v in p.items()} == expected


# -- a real SLURM ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm():
    """The single-node cluster of `.ci/start-slurm` (which `.ci/run` starts); skip, saying why, without it."""
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here (sbatch not found): `.ci/start-slurm` installs and starts a single-node cluster")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        pytest.skip(f"no SLURM controller answers (scontrol ping: {' '.join((ping.stdout + ping.stderr).split())}): "
                    "`.ci/start-slurm` starts one")
    idle = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
    if not any(s.startswith(("idle", "mixed")) for s in idle):
        pytest.skip(f"the SLURM node is not available (sinfo: {' '.join(idle) or 'nothing'})")


@pytest.mark.slow
def test_a_slurm_job_array_gives_the_records_of_one_run_and_a_rerun_runs_only_the_failed_job(
        one_run, slurm, tmp_path, capsys, monkeypatch):
    expected, _ = one_run
    monkeypatch.setenv("LOWSHOT_POLL_INTERVAL", "1")
    checkpoint = tmp_path / "broken.safetensors"  # a corrupt checkpoint among the models
    checkpoint.write_bytes((WEIGHTS / "dino-tiny.safetensors").read_bytes()[:20000])
    results = tmp_path / "r"
    command = ["bench", *GRID, "--model", str(checkpoint), "--launcher", "slurm", "--array-parallelism", "2",
               "--cpus-per-job", "1", "--time-limit", "20", "--results", str(results), "--cache", str(tmp_path / "c")]
    assert main(command) == 1
    out = capsys.readouterr().out
    assert "plan: 6 unit(s) (model x task), 6 to run, 0 done" in out and "at most 2 at once" in out
    assert "2 job(s) failed" in out
    for task in ("embedded-lowshot", "embedded-transfer"):  # named with its log and the error's last line
        log = results / "launch" / "logs" / f"{safe_name(str(checkpoint))}__{task}.err"
        assert f"{checkpoint} x {task} (job " in out and f"log {log}" in out
    assert "is not a readable safetensors file" in out
    assert records(results) == expected  # the others' records: those of one run
    assert written_by_jobs(results) == len(expected)
    assert (results / "leaderboard.csv").is_file() and "mae-tiny" in (results / "report.html").read_text()

    # `lowshot status` reports the ended launch from its manifest
    assert main(["status", str(results)]) == 1
    assert "jobs: 4 done, 0 running, 0 pending, 2 failed" in capsys.readouterr().out

    # the checkpoint repaired: a rerun submits only the failed units, the others' records are not touched
    kept = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    shutil.copyfile(WEIGHTS / "dino-tiny.safetensors", checkpoint)
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "plan: 6 unit(s) (model x task), 2 to run, 4 done" in out and "submitted job array" in out
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    after = records(results)
    new = {k: v for k, v in after.items() if k[0] == checkpoint.name}
    assert len(after) == len(expected) + len(new) and len(new) == 6
    manifest = [json.loads(line) for line in (results / "launch" / "jobs.jsonl").read_text().splitlines()[1:]]
    assert sorted(row["model"] for row in manifest if row["job_id"]) == [str(checkpoint)] * 2

"""The machine's limits: DataLoader workers capped at the cores this process has; a full disk or a read-only directory
under the feature cache, the results or a table's output is one line naming the path and what was being written,
exit code 2, and nothing half-written is left.

Full and read-only disks are small tmpfs mounts (root only: skipped elsewhere, with the reason); root ignores
file permissions, so a read-only directory is a read-only mount, not a chmod.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


from .test_faults import lowshot

BENCH = ["bench", "--model", "dino-tiny", "--task", "embedded-lowshot", "--setting", "1percent", "--workers", "0",
         "--quiet"]


@contextlib.contextmanager
def mounted(directory: Path, size: str = "64k", read_only: bool = False):
    """A tmpfs of `size` at `directory` (read-only: an empty file system that refuses every write)."""
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs at {directory} ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> None:
    """Use every byte of the file system under `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def bench_process(results: Path, cache: Path) -> subprocess.CompletedProcess:
    """`lowshot bench` in its own process: a bus error (a memory map over a full disk) must not end the tests."""
    return subprocess.run([sys.executable, "-m", "lowshot", *BENCH, "--results", str(results), "--cache", str(cache)],
                          capture_output=True, text=True, timeout=600)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lowshot") and "warning:" not in line]


def leftovers(directory: Path) -> list[Path]:
    """Data files under `directory`: arrays, records, temporary files (lock files are not data)."""
    return [p for p in directory.rglob("*") if p.is_file() and p.suffix != ".lock" and p.name != "filler"]


def test_full_disk_under_the_feature_cache_is_one_line_and_leaves_nothing(tmp_path):
    with mounted(tmp_path / "cache") as cache:
        done = bench_process(tmp_path / "results", cache)
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # not 135, a bus error
        [line] = error_lines(done.stderr)
        assert str(cache) in line and "feature cache" in line and "No space left on device" in line
        assert "Traceback" not in done.stderr and leftovers(cache) == []
    assert not list((tmp_path / "results").rglob("*.json"))


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A feature cache that holds the features BENCH needs, so that the runs below only write records."""
    cache = tmp_path_factory.mktemp("warm") / "cache"
    code, _, err = lowshot([*BENCH, "--results", str(cache.parent / "results"), "--cache", str(cache)])
    assert code == 0, err
    return cache


def test_full_disk_under_the_results_is_one_line_and_leaves_no_record(tmp_path, warm_cache):
    with mounted(tmp_path / "results") as results:
        fill(results)
        done = bench_process(results, warm_cache)
        assert done.returncode == 2, done.stderr[-2000:]
        [line] = error_lines(done.stderr)
        assert str(results) in line and "No space left on device" in line and "Traceback" not in done.stderr
        assert leftovers(results) == []


@pytest.mark.parametrize("where", ["results", "cache"])
def test_read_only_results_or_cache_is_one_line(tmp_path, where):
    directories = {"results": tmp_path / "results", "cache": tmp_path / "cache"}
    with mounted(directories[where], read_only=True):
        code, _, err = lowshot([*BENCH, "--results", str(directories["results"]), "--cache",
                                str(directories["cache"])])
    assert code == 2 and "Traceback" not in err
    [line] = error_lines(err)
    assert str(directories[where]) in line and "Read-only file system" in line


@pytest.mark.parametrize("verb", ["leaderboard", "report"])
def test_read_only_output_of_tables_and_report_is_one_line(tmp_path, warm_cache, verb):
    results = warm_cache.parent / "results"
    with mounted(tmp_path / "out", read_only=True) as out:
        code, _, err = lowshot([verb, str(results), "--out", str(out / ("report.html" if verb == "report" else ""))])
    assert code == 2 and "Traceback" not in err
    [line] = error_lines(err)
    assert str(out) in line and "Read-only file system" in line


def test_workers_are_capped_at_the_cores_of_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # a 2-core allocation
    made = []
    loader = torch.utils.data.DataLoader

    def spy(*args, **kwargs):
        made.append(kwargs.get("num_workers"))
        assert made[-1] <= 2, f"{made[-1]} DataLoader workers on 2 cores"  # never start them: they would fill RAM
        return loader(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", spy)
    argv = [a if a != "0" else "10000" for a in BENCH]  # --workers 10000
    code, _, err = lowshot([*argv, "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])
    assert code == 0, err
    assert made and max(made) == 2
    warned = [line for line in err.splitlines() if "--workers 10000" in line]
    assert len(warned) == 1 and "2 CPU core(s)" in warned[0] and warned[0].startswith("lowshot: warning:")


def test_extract_features_caps_workers_for_library_callers(monkeypatch):
    from lowshot.benchmark.features import capped_workers
    from lowshot.model_zoo.errors import LowshotWarning

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    with pytest.warns(LowshotWarning, match="workers 64: this process has 3 CPU core"):
        assert capped_workers(64) == 3
    assert capped_workers(3) == 3 and capped_workers(0) == 0

"""The feature cache: time of a repeated `lowshot bench` run / the first (goal <= 5 %).

    python -m lowshot.benchmark.perf.cache_speed [--model PATH_OR_NAME --method M --num-heads H --task embedded-lowshot]

Runs the same command twice with a fresh results directory and feature cache; the second run finds every
record done. Then `--overwrite` recomputes all records from cached features (classifier cost only).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
import time

from lowshot.benchmark.cli import main as lowshot

SUMMARY = re.compile(r"(\d+) record\(s\) written .*feature cache: (\d+) hit\(s\), (\d+) computed")


def _timed(args: list[str]) -> tuple[float, dict]:
    """(seconds, {"written", "hits", "computed"} from the run's summary line)."""
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        lowshot(args)
    seconds = time.perf_counter() - t0
    written, hits, computed = map(int, SUMMARY.search(out.getvalue()).groups())
    return seconds, {"written": written, "hits": hits, "computed": computed}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="maskcluster-tiny")
    p.add_argument("--method")
    p.add_argument("--num-heads")
    p.add_argument("--task", default="embedded-lowshot")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args = ["bench", "--model", a.model, "--task", a.task, "--results", f"{tmp}/r", "--cache", f"{tmp}/c", "--quiet"]
        args += ["--method", a.method] if a.method else []
        args += ["--num-heads", a.num_heads] if a.num_heads else []
        (first, c1), (second, c2) = _timed(args), _timed(args)
        overwrite, c3 = _timed(args + ["--overwrite"])
    print(f"bench {a.model} on {a.task}: first {first:.1f}s, repeat {second:.1f}s (ratio {second / first:.3f}), "
          f"--overwrite from cached features {overwrite:.1f}s (ratio {overwrite / first:.3f})")
    print(f"  first: {c1}; repeat: {c2}; --overwrite: {c3}")
    return {"first": first, "repeat": second, "overwrite": overwrite, "counts": {"first": c1, "repeat": c2,
                                                                                  "overwrite": c3}}


if __name__ == "__main__":
    main()

"""The suite under a faulty environment and a careless user: it never reports a stale or silently wrong number.

One test per probe of the fault list: stale records, a damaged feature cache, concurrent runs, silently accepted
mistakes, user errors (one line, exit code 2, no traceback) and fits whose numbers depend on where the solver
stopped.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowshot.benchmark.cli import main
from lowshot.benchmark.leaderboard import load_summary
from lowshot.benchmark.records import load_records

from .conftest import (DINO_FIXTURE, FIXTURES, ROOT, fixture_heads, require, write_imagefolder,
                       write_imagenet_splits)

ONE_SPLIT = ["--task", "embedded-lowshot", "--setting", "1percent", "--workers", "0", "--quiet"]


def bench(tmp_path, *args, model=None, results="results", cache="cache"):
    """`lowshot bench` on the embedded 1 % split; returns (exit code, stdout, stderr)."""
    model = model or ["--model", str(require(DINO_FIXTURE)), "--method", "dino", "--num-heads", str(fixture_heads())]
    return lowshot(["bench", *model, *ONE_SPLIT, "--results", str(tmp_path / results), "--cache",
                    str(tmp_path / cache), *args])


def lowshot(argv):
    """`lowshot ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def errors(stderr: str) -> list[str]:
    """The error lines of a run's stderr (the fixture checkpoints are 48 wide: their head_dim is warned about)."""
    return [line for line in stderr.splitlines() if "warning:" not in line]


def scores(results: Path) -> dict:
    records, problems = load_records(results)
    assert not problems, problems
    return {(r["model"], r["setting"], r["seed"], r["classifier"], r.get("config_digest")): r["metrics"]
            for r in records}


def written_by(run, directory: Path, pattern: str = "*.json"):
    """`run()`'s result and the files under `directory` it wrote (new or modified): what a run did, read from the
    disk rather than from what it printed."""
    def stamps():
        return {p: p.stat().st_mtime_ns for p in directory.rglob(pattern)} if directory.exists() else {}

    before = stamps()
    result = run()
    return result, {p for p, t in stamps().items() if before.get(p) != t}


def dino_copy(tmp_path, source=DINO_FIXTURE, name="model.pth") -> Path:
    target = tmp_path / "models" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(require(source), target)
    return target


# --------------------------------------------------------------------------- 1. stale records


@pytest.mark.slow
def test_other_heads_compute_new_records_never_the_old_numbers(tmp_path):
    path = dino_copy(tmp_path)
    assert bench(tmp_path, model=["--model", str(path), "--method", "dino", "--num-heads", "3"])[0] == 0
    first = scores(tmp_path / "results")
    (code, out, _), written = written_by(
        lambda: bench(tmp_path, model=["--model", str(path), "--method", "dino", "--num-heads", "4"]),
        tmp_path / "results")
    assert code == 0 and len(written) == 2  # logreg and k-NN, computed again, beside the first two
    assert {json.loads(p.read_text())["architecture"]["num_heads"] for p in written} == {4}
    assert "2 record(s) written" in out
    after = scores(tmp_path / "results")
    assert len(after) == 4 and set(first) < set(after)  # the first run's records are kept beside
    assert "[num_heads=4]" in out and "num_heads=3" not in out  # this run's numbers only
    _, summary = load_summary(tmp_path / "results", reference=None)
    assert sorted(set(summary["variant"])) == ["num_heads=3", "num_heads=4"]  # two rows, never one mean


@pytest.mark.slow
def test_another_method_or_lambda_rule_computes_new_records(tmp_path):
    path = dino_copy(tmp_path)
    assert bench(tmp_path, model=["--model", str(path), "--method", "dino", "--num-heads", "3"])[0] == 0
    (code, out, err), written = written_by(
        lambda: bench(tmp_path, model=["--model", str(path), "--method", "msn", "--num-heads", "3"]),
        tmp_path / "results")
    assert code == 0 and {json.loads(p.read_text())["method"] for p in written} == {"msn"} and len(written) == 2
    assert "2 record(s) written" in out
    assert "dino release format, but the msn evaluation rules" in err  # and it says the rules do not match
    (code, out, _), written = written_by(lambda: bench(tmp_path, "--lambd", "cv", model=[
        "--model", str(path), "--method", "dino", "--num-heads", "3"]), tmp_path / "results")
    assert code == 0 and [json.loads(p.read_text())["classifier"] for p in written] == ["logreg λ=cv"]  # not k-NN
    assert "1 record(s) written" in out and "logreg λ=cv" in out
    classifiers = {(k[3], k[4]) for k in scores(tmp_path / "results")}
    assert len(classifiers) == 5 and {c for c, _ in classifiers} == {"logreg", "knn", "logreg λ=cv"}


@pytest.mark.slow
def test_another_checkpoint_with_the_same_file_name(tmp_path):
    path = dino_copy(tmp_path)
    model = ["--model", str(path), "--method", "dino", "--num-heads", "3"]
    assert bench(tmp_path, model=model)[0] == 0
    shutil.copyfile(FIXTURES / "dino" / "dino_pretrain_full_checkpoint.pth", path)  # another file, same name
    first = set((tmp_path / "results").rglob("*.json"))
    (code, out, _), written = written_by(lambda: bench(tmp_path, model=model), tmp_path / "results")
    assert code == 0 and len(written) == 2 and not written & first  # two new records, the first two kept
    assert "2 record(s) written" in out
    _, summary = load_summary(tmp_path / "results", reference=None)
    assert len(set(summary["variant"])) == 2 and all(v.startswith("checkpoint_sha256=") or "layout" in v
                                                     for v in summary["variant"])


# --------------------------------------------------------------------------- 2. the feature cache


def _cache_files(cache: Path) -> dict:
    return {json.loads(p.with_suffix(".json").read_text())["dataset"].split("/")[-2]: p
            for p in cache.rglob("*.npy")}


@pytest.mark.parametrize("damage", ["random content", "test file over train file", "truncated"])
def test_a_damaged_cache_file_is_found_and_recomputed(tmp_path, damage):
    assert bench(tmp_path)[0] == 0
    reference = scores(tmp_path / "results")
    files = _cache_files(tmp_path / "cache")
    train = files["train"]
    if damage == "random content":
        array = np.load(train, mmap_mode="r+")
        array[:] = np.random.default_rng(0).standard_normal(array.shape)
        array.flush()
        del array
    elif damage == "test file over train file":
        shutil.copyfile(files["test"], train)
    else:
        train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    (code, out, err), recomputed = written_by(lambda: bench(tmp_path, "--overwrite"), tmp_path / "cache", "*.npy")
    assert code == 0 and f"cache file {train} is damaged" in err and "recomputing it" in err
    assert scores(tmp_path / "results") == reference  # the right numbers, from recomputed features
    assert recomputed == {train}  # the damaged file only
    assert "1 hit(s), 1 computed" in out


def test_images_replaced_in_place_are_new_images(tmp_path):
    data, splits = tmp_path / "imagenet", tmp_path / "splits"
    write_imagefolder(data)
    write_imagenet_splits(splits)
    args = ["bench", "--model", str(require(DINO_FIXTURE)), "--method", "dino", "--num-heads", str(fixture_heads()),
            "--task", "imagenet-lowshot", "--data-root", str(data), "--splits", str(splits), "--custom-splits",
            "--setting", "1percent", "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
            "--workers", "0", "--quiet"]
    assert lowshot(args)[0] == 0
    image = next((data / "val").rglob("*.JPEG"))
    Image.new("RGB", (48, 40), (255, 0, 0)).save(image)  # same name, other content
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.npy")}
    (code, out, _), written = written_by(lambda: lowshot(args), tmp_path / "r")
    assert code == 0 and len(written) == 2  # logreg and k-NN on the new evaluation images
    computed = [p for p in (tmp_path / "c").rglob("*.npy") if cached.get(p) != p.stat().st_mtime_ns]
    assert [json.loads(p.with_suffix(".json").read_text())["dataset"] for p in computed] == [
        f"imagefolder:{data}/val"]  # the validation features again, the training ones from the cache
    assert "2 record(s) written" in out and "1 hit(s), 1 computed" in out


# --------------------------------------------------------------------------- 3. interrupted and concurrent runs


def test_temporary_files_of_dead_processes_are_removed(tmp_path):
    from lowshot.benchmark.features import FeatureCache
    from lowshot.model_zoo.files import HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / "cache" / "ab" / f".abcd.npy.{HOST}-{pid}.x1y2z3.tmp.npy"
    alive = tmp_path / "cache" / "ab" / f".abcd.npy.{HOST}-{os.getpid()}.x1y2z3.tmp.npy"
    other_host = tmp_path / "cache" / "ab" / f".abcd.npy.otherhost-{pid}.x1y2z3.tmp.npy"
    for p in (stale, alive, other_host):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    FeatureCache(tmp_path / "cache")
    assert not stale.exists() and alive.exists() and other_host.exists()


@pytest.mark.slow
def test_two_concurrent_runs_on_one_results_directory(tmp_path):
    require(DINO_FIXTURE)
    args = [sys.executable, "-m", "lowshot", "bench", "--model", str(DINO_FIXTURE), "--method", "dino",
            "--num-heads", str(fixture_heads()), "--task", "embedded-lowshot", "--setting", "5img", "1percent",
            "--workers", "0", "--quiet"]
    shared = ["--results", str(tmp_path / "shared"), "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen(args + shared, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    alone = subprocess.run(args + ["--results", str(tmp_path / "alone"), "--cache", str(tmp_path / "cache2")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    assert scores(tmp_path / "shared") == scores(tmp_path / "alone")  # both runs: one run's records
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2  # each feature file once (train, test)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


# --------------------------------------------------------------------------- 4. silently accepted mistakes


def test_a_48_wide_model_with_4_heads_is_warned_about(tmp_path):
    code, _, err = bench(tmp_path, model=["--model", str(require(DINO_FIXTURE)), "--method", "dino",
                                          "--num-heads", "4"])
    assert code == 0 and "lowshot: warning:" in err and "num_heads=4 on embed_dim 48 gives head_dim 12" in err
    assert "public ViT has head_dim 64 (no head count gives it on this width)" in err


def test_a_non_finite_score_is_rejected_by_name(tmp_path):
    assert bench(tmp_path)[0] == 0
    record = next((tmp_path / "results").rglob("*logreg*.json"))
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "metrics": {"top1": float("inf")}}))
    code, _, err = lowshot(["leaderboard", str(tmp_path / "results")])
    assert code == 0 and f"skipped malformed record: {record}: main score 'top1' is inf" in err
    _, summary = load_summary(tmp_path / "results", reference=None)
    assert np.isfinite(summary["mean"]).all() and "logreg" not in set(summary["classifier"])


def test_odd_image_modes_are_converted(tmp_path):
    from lowshot.tasks.datasets import load_rgb

    grey16 = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    rgb = np.asarray(load_rgb(tmp_path / "grey16.png"))
    assert rgb.shape == (32, 32, 3) and rgb.min() == 0 and 250 <= rgb.max() <= 255  # not a white image
    np.testing.assert_allclose(rgb[..., 0].astype(float), grey16 / 257.0, atol=0.51)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert tuple(np.asarray(load_rgb(tmp_path / "palette.png"))[0, 0]) == (200, 10, 20)
    assert np.asarray(load_rgb(tmp_path / "cmyk.jpg"))[0, 0, 0] > 200  # red
    assert tuple(np.asarray(load_rgb(tmp_path / "rgba.png"))[0, 0]) == (10, 20, 30)  # alpha dropped


def test_hidden_and_appledouble_files_are_not_images(tmp_path):
    from lowshot.tasks.datasets.imagenet import ImageFolderSplit

    write_imagefolder(tmp_path)
    (tmp_path / "train" / "n01000001" / "._n01000001_0.JPEG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "n01000002" / ".DS_Store").write_bytes(b"")
    split = ImageFolderSplit(tmp_path, "train")
    assert split.classes == ["n01000001", "n01000002", "n01000003"] and len(split) == 3 * 14
    assert not [n for n in split.names if n.startswith(".")]


def test_an_unknown_setting_or_a_missing_results_directory_is_an_error(tmp_path):
    code, _, err = bench(tmp_path, "--setting", "10img")
    assert code == 2 and err.startswith("lowshot bench: error: --setting 10img: not a setting of embedded-lowshot "
                                        "(1img, 2img, 5img, 1percent)")
    code, _, err = lowshot(["leaderboard", str(tmp_path / "nowhere")])
    assert code == 2 and "results directory" in err and not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- 5. user errors: one line, exit 2


def _checkpoint_errors(tmp_path):
    garbage = tmp_path / "random.pth"
    garbage.write_bytes(np.random.default_rng(1).bytes(3000))
    return {"unknown model": (["--model", "dino-vits17"], "unknown model 'dino-vits17'"),
            "missing file": (["--model", str(tmp_path / "no" / "such.pth"), "--method", "dino", "--num-heads", "3"],
                             "checkpoint file"),
            "directory": (["--model", str(tmp_path), "--method", "dino", "--num-heads", "3"], "is a directory"),
            "random bytes": (["--model", str(garbage), "--method", "dino", "--num-heads", "3"],
                             "is not a readable torch checkpoint")}


@pytest.mark.parametrize("case", ["unknown model", "missing file", "directory", "random bytes"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, case):
    model, message = _checkpoint_errors(tmp_path)[case]
    code, _, err = bench(tmp_path, model=model)
    assert code == 2 and message in err and len(errors(err)) == 1
    assert "Traceback" not in err and "weights_only" not in err


@pytest.mark.parametrize("option,value", [("--lambd", "abc"), ("--batch-size", "0"), ("--device", "cuda:0"),
                                          ("--task", "imagenet-lowshot2"), ("--workers", "-1")])
def test_bad_options_are_refused_before_any_work(tmp_path, option, value, capsys):
    if option == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--model", "dino-tiny", option, value, "--results", str(tmp_path / "r")])
    assert exit_.value.code == 2 and option in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_unreadable_image_is_one_line_naming_it(tmp_path, workers):
    data, splits = tmp_path / "imagenet", tmp_path / "splits"
    write_imagefolder(data)
    write_imagenet_splits(splits)
    image = next((data / "val").rglob("*.JPEG"))
    image.write_bytes(image.read_bytes()[:100])  # truncated
    code, _, err = lowshot(["bench", "--model", str(require(DINO_FIXTURE)), "--method", "dino", "--num-heads",
                            str(fixture_heads()), "--task", "imagenet-lowshot", "--data-root", str(data),
                            "--splits", str(splits), "--custom-splits", "--setting", "1percent",
                            "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
                            "--workers", workers, "--quiet"])
    assert code == 2 and f"cannot read image {image}" in errors(err)[0] and len(errors(err)) == 1
    assert "Traceback" not in err


def test_a_missing_listed_image_is_named_before_any_model_runs(tmp_path):
    data, splits = tmp_path / "imagenet", tmp_path / "splits"
    write_imagefolder(data)
    write_imagenet_splits(splits)
    listed = (splits / "imagenet_subsets1" / "1percent.txt").read_text().split()[0]
    (data / "train" / listed.split("_")[0] / listed).unlink()
    code, _, err = lowshot(["bench", "--model", "no-model-needed", "--task", "imagenet-lowshot", "--data-root",
                            str(data), "--splits", str(splits), "--custom-splits", "--results", str(tmp_path / "r")])
    assert code == 2 and "missing under" in err and listed in err


def test_a_mis_shaped_tensor_is_reported_as_itself(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from lowshot.model_zoo import load_model
    from lowshot.model_zoo.safe_load import CheckpointError

    sd = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2, num_classes=0).state_dict()
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(100, 32)  # block 0 of six is wrong
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path / "odd.pth", method="dino", num_heads=2)
    message = str(error.value)
    assert "mis-shaped (1): ['blocks.0.mlp.fc1.weight: file (100, 32) vs model (128, 32)']" in message
    assert "blocks.1" not in message


def test_tables_are_readable_by_others(tmp_path):
    assert bench(tmp_path)[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    for name in ("records.csv", "summary.csv", "leaderboard.csv", "leaderboard.md"):
        assert (tmp_path / "results" / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


# --------------------------------------------------------------------------- 6. converged means converged


def test_a_fit_does_not_depend_on_where_the_solver_stopped():
    from lowshot.benchmark.perf.classifier_speed import make_features
    from lowshot.tasks.classifiers import LogisticRegression, preprocess

    Xtr, ytr, Xte, _ = make_features(200, 64, 100, 4000, 3.5, seed=2)  # nearly separable, like 2 img per class
    noisy = preprocess(Xtr + 1e-6 * np.random.default_rng(12).standard_normal(Xtr.shape).astype(np.float32))
    exact = LogisticRegression(tol=1e-10, dtype=torch.float64, max_iter=100_000).fit(Xtr, ytr).predict(Xte)
    for X in (Xtr, noisy):
        assert (LogisticRegression().fit(X, ytr).predict(Xte) != exact).sum() == 0  # tol 1e-4: 10 differed


def test_lambda_is_ranked_as_by_exact_fits():
    from lowshot.tasks.classifiers import choose_lambda, preprocess, select_lambda
    from lowshot.tasks.multilabel import LowShotMultiLabel

    rng = np.random.default_rng(5)
    means = rng.standard_normal((20, 64))
    y = (rng.random((60, 20)) < 0.15).astype(np.float32)
    y[np.arange(60), rng.integers(0, 20, 60)] = 1
    x = preprocess((y @ means + 2.0 * rng.standard_normal((60, 64))).astype(np.float32))
    policy = LowShotMultiLabel.lambda_policy
    lambd, _ = choose_lambda(policy, "shots", x, y, multilabel=True)
    _, suite = select_lambda(x, y, policy.grid, multilabel=True)  # the CV fits the suite runs
    best, exact = select_lambda(x, y, policy.grid, multilabel=True, tol=1e-10, dtype=torch.float64, max_iter=100_000)
    assert lambd == best == 0.00025  # CV fits stopped at 100 iterations chose 0.025
    assert sorted(suite, key=suite.get) == sorted(exact, key=exact.get)  # the same ranking of every λ

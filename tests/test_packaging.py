"""What `pip install .` installs: one top-level package, `lowshot` (the folders benchmark/, tasks/ and model_zoo/
mapped under it), its CLI and its bundled weights, and nothing that shadows a user's own `tasks.py`.

The install goes into a fresh virtual environment whose dependencies come from this interpreter's site-packages
through a .pth line (no download). A directory added by a .pth line is put on sys.path without processing the
.pth files inside it, so an editable install of lowshot living there stays inactive: checked before the install."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from lowshot.benchmark.records import load_records

from .conftest import ROOT

PACKAGE_DIRS = {"lowshot": "lowshot", "benchmark": "lowshot.benchmark", "tasks": "lowshot.tasks",
                "model_zoo": "lowshot.model_zoo"}
CHECKOUT = ["README.md", "pyproject.toml", *PACKAGE_DIRS]  # what the build reads


def test_every_package_folder_is_listed_in_pyproject():
    """A folder with an __init__.py missing from `[tool.setuptools] packages` would be left out of the wheel (an
    editable install still finds it, so only an installed copy would break)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder for folder, name in PACKAGE_DIRS.items()}
    folders = set()
    for folder, name in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            folders.add(".".join([name, *parts]))
    assert "lowshot.tasks.classifiers" in folders and "lowshot.model_zoo.pretrain" in folders
    assert sorted(config["packages"]) == sorted(folders)


def _run(python, *args, cwd, env=None, timeout=300):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with lowshot installed from a copy of this checkout, its site-packages, a neutral
    working directory)."""
    import torch

    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "checkout"
    source.mkdir()
    for name in CHECKOUT:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")} if (ROOT / name).is_dir() else {}
        copy(ROOT / name, source / name, **kwargs)
    venv, neutral = tmp / "venv", tmp / "elsewhere"
    neutral.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=neutral).stdout.strip())
    dependencies = Path(torch.__file__).resolve().parents[1]  # where this interpreter's torch, timm, ... live
    (site / "_dependencies.pth").write_text(f"{dependencies}\n")
    before = _run(python, "-c", "import torch, timm; import lowshot", cwd=neutral)
    assert "No module named 'lowshot'" in before.stderr, before.stderr  # no other lowshot install is active here
    pip = _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation",
               "--no-index", str(source), cwd=neutral, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return python, site, neutral


@pytest.mark.slow
def test_one_top_level_package_is_installed(installed):
    python, site, neutral = installed
    (dist,) = site.glob("lowshot_bench-*.dist-info")
    files = [line.rsplit(",", 2)[0] for line in (dist / "RECORD").read_text().splitlines()]
    top = {Path(f).parts[0] for f in files if not f.startswith("..") and not Path(f).parts[0].endswith(".dist-info")}
    assert top == {"lowshot"}, top
    if (dist / "top_level.txt").exists():
        assert (dist / "top_level.txt").read_text().split() == ["lowshot"]
    assert not [name for name in ("tasks", "benchmark", "model_zoo") if (site / name).exists()]
    assert {"lowshot/tasks/classifiers/knn.py", "lowshot/benchmark/perf/__init__.py",
            "lowshot/model_zoo/pretrain/__init__.py"} <= set(files)  # the sub-packages are in


@pytest.mark.slow
def test_the_generic_names_are_free_and_the_cli_and_weights_work(installed):
    python, site, neutral = installed
    probe = _run(python, "-c", textwrap.dedent("""
        import json, importlib
        failed = {}
        for name in ("tasks", "benchmark", "model_zoo"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                failed[name] = e.name
        import lowshot, lowshot.tasks.base
        print(json.dumps({"failed": failed, "lowshot": lowshot.__file__, "tasks": lowshot.tasks.base.__file__}))
    """), cwd=neutral)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["failed"] == {"tasks": "tasks", "benchmark": "benchmark", "model_zoo": "model_zoo"}
    assert Path(found["lowshot"]).is_relative_to(site) and Path(found["tasks"]).is_relative_to(site)  # not the checkout
    help_ = _run(python, "-m", "lowshot", "--help", cwd=neutral)
    assert help_.returncode == 0 and "bench" in help_.stdout, help_.stderr
    weights = _run(python, "-c", textwrap.dedent("""
        import json, torch
        from lowshot import load_model
        model = load_model("dino-tiny")
        feats = model.extract(torch.zeros(1, 3, 64, 64), ["cls"])["cls"]
        print(json.dumps({"checkpoint": model.info.checkpoint, "shape": list(feats.shape)}))
    """), cwd=neutral)
    assert weights.returncode == 0, weights.stderr
    loaded = json.loads(weights.stdout.strip().splitlines()[-1])
    assert Path(loaded["checkpoint"]).is_relative_to(site / "lowshot" / "model_zoo" / "weights")  # package data
    assert loaded["shape"][0] == 1


USER_TASKS = '''
"""A user's own tasks.py (the invoke / celery convention)."""

def build():
    return "the user's build"
'''

USER_MODEL = '''
import timm

def factory():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)
'''


@pytest.mark.slow
def test_a_users_tasks_py_beside_a_py_model(installed, tmp_path):
    python, site, _ = installed
    work = tmp_path / "project"
    work.mkdir()
    (work / "tasks.py").write_text(USER_TASKS)
    (work / "mymodel.py").write_text(USER_MODEL)
    env = {"PYTHONPATH": str(work)}
    own = _run(python, "-c", "import tasks; print(tasks.build())", cwd=work, env=env)
    assert own.stdout.strip() == "the user's build", own.stderr
    run = _run(python.parent / "lowshot", "bench", "--model", "py:mymodel:factory", "--task", "embedded-lowshot",
               "--setting", "1img", "--classifier", "knn", "--results", "results", "--cache", "cache",
               "--workers", "0", "--quiet", cwd=work, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records, problems = load_records(work / "results")
    knn = [r for r in records if r["classifier"] == "knn"]
    assert not problems and sorted(r["seed"] for r in knn) == [1, 2, 3]
    assert {(r["model"], r["model_source"], r["task"], r["setting"]) for r in knn} == {
        ("py:mymodel:factory", "py", "embedded-lowshot", "1img")}

"""Result records: one JSON file per (model, task, setting, seed, classifier), written atomically.

Layout: `<results>/<model>/<task>/<setting>-seed<seed>__<classifier>__<config>.json`, `<config>` the first 8 hex
digits of the record's `config_digest`: the digest of everything that decides its number except the labelled
images (the model's weights and rules, the task's protocol version, data sets, feature, transform, classifier and
its hyper-parameter rule). Its `identity` adds the setting, the seed and the fingerprints of the labelled images
and the evaluation set. A rerun skips a record whose identity is unchanged; another configuration is another
file, kept beside; another identity of the same configuration (e.g. images replaced) replaces it. Records carry
their provenance (checkpoint sha256, versions, device, time).
"""
from __future__ import annotations

import functools
import json
import math
import platform
import re
from importlib import metadata
from pathlib import Path

from lowshot.model_zoo.errors import BadInputError
from lowshot.model_zoo.files import atomic_write_text

SCHEMA = 1
REQUIRED = ("model", "task", "setting", "seed", "classifier", "metrics", "main_score")
_PACKAGES = ("lowshot-bench", "torch", "torchvision", "timm", "numpy", "scikit-learn", "faiss-cpu", "faiss-gpu-cu12")


def safe_name(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(part))


def record_path(results: str | Path, model: str, task: str, setting: str, seed: int, classifier: str,
                config_digest: str | None = None) -> Path:
    config = f"__{config_digest[:8]}" if config_digest else ""
    return Path(results) / safe_name(model) / safe_name(task) / f"{safe_name(setting)}-seed{seed}__{safe_name(classifier)}{config}.json"


def environment(device: str) -> dict:
    return {"python": platform.python_version(), "packages": dict(_package_versions()), "device": device,
            "machine": platform.machine()}


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    """The installed versions of _PACKAGES, read once per process (reading a package's metadata parses its files:
    ~1 ms each, which a run writing hundreds of records paid for every one)."""
    versions = []
    for name in _PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(versions)


def write_record(path: Path, record: dict) -> Path:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record for {path} lacks {missing}")
    atomic_write_text(Path(path), json.dumps({"schema": SCHEMA, **record}, indent=1, sort_keys=True) + "\n",
                      what="the result record")
    return Path(path)


class MalformedRecord(BadInputError):
    pass


def read_record(path: Path) -> dict:
    """A record file, checked field by field (`check_fields`) before any table, figure or report reads it."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedRecord(f"{path}: not a readable JSON record ({e})") from None
    if not isinstance(record, dict):
        raise MalformedRecord(f"{path}: a record must be a JSON object")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise MalformedRecord(f"{path}: missing field(s) {missing}")
    main_score, metrics = record["main_score"], record["metrics"]
    score = metrics.get(main_score) if isinstance(metrics, dict) and isinstance(main_score, str) else None
    if not _is_number(score):
        raise MalformedRecord(f"{path}: main score {record['main_score']!r} is missing or not a number")
    if not math.isfinite(score):
        raise MalformedRecord(f"{path}: main score {record['main_score']!r} is {score}, not a finite number")
    problem = check_fields(record)
    if problem:
        raise MalformedRecord(f"{path}: {problem}")
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number_or_none(value) -> bool:
    return value is None or _is_number(value)


def _text(value) -> bool:
    return isinstance(value, str) and value != ""


def _text_or_none(value) -> bool:
    return value is None or isinstance(value, str)


def _numbers(value) -> bool:
    return isinstance(value, list) and all(_number_or_none(v) for v in value)


def _mapping(value) -> bool:
    return value is None or isinstance(value, dict)


# What the tables, figures, report and paired tests read from a record, and what each must be. Other fields
# (provenance: environment, timing, transform...) are shown as they are and never computed with.
FIELDS = {
    "model": (_text, "a non-empty string"), "task": (_text, "a non-empty string"),
    "setting": (_text, "a non-empty string"), "classifier": (_text, "a non-empty string"),
    "main_score": (_text, "a non-empty string"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "metrics": (lambda v: isinstance(v, dict) and all(_number_or_none(x) for x in v.values()),
                "an object of numbers"),
    "num_train": (lambda v: v is None or _is_count(v), "a whole number >= 0"),
    "num_classes": (lambda v: v is None or _is_count(v), "a whole number >= 0"),
    "num_test": (lambda v: v is None or _is_count(v), "a whole number >= 0"),
    "chance": (lambda v: v is None or (isinstance(v, dict) and _number_or_none(v.get("value"))),
               "an object whose value is a number"),
    "convergence": (lambda v: v is None or (isinstance(v, dict) and v.get("converged") in (None, True, False)),
                    "an object whose converged is true or false"),
    "method": (_text_or_none, "a string"), "family": (_text_or_none, "a string"),
    "feature": (_text_or_none, "a string"), "split_source": (_text_or_none, "a string"),
    "dataset": (_text_or_none, "a string"), "checkpoint_sha256": (_text_or_none, "a string"),
    "config_digest": (_text, "a non-empty string"), "finished": (_text_or_none, "a string"),
    "identity": (_text_or_none, "a string"), "hyperparameters_chosen_by": (_text_or_none, "a string"),
    "preprocessing": (_text_or_none, "a string"),
    "config": (_mapping, "an object"), "hyperparameters": (_mapping, "an object"),
    "per_class_acc": (_numbers, "a list of numbers"), "per_class_ap": (_numbers, "a list of numbers"),
    "per_class_iou": (_numbers, "a list of numbers"),
}


def check_fields(record: dict) -> str | None:
    """What is wrong with the first field of `record` that has the wrong type (`FIELDS`), else None."""
    for name, (valid, expected) in FIELDS.items():
        if name in record and not valid(record[name]):
            shown = json.dumps(record[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"field {name!r} is {shown}, not {expected}"
    return None


def load_records(results: str | Path) -> tuple[list[dict], list[str]]:
    """All records under `results`, and one message per malformed file (reported, never averaged in)."""
    records, problems = [], []
    for path in sorted(Path(results).rglob("*.json")):
        try:
            records.append({**read_record(path), "path": str(path)})
        except MalformedRecord as e:
            problems.append(str(e))
    return records, problems

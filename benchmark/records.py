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
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "packages": versions, "device": device,
            "machine": platform.machine()}


def write_record(path: Path, record: dict) -> Path:
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record for {path} lacks {missing}")
    atomic_write_text(Path(path), json.dumps({"schema": SCHEMA, **record}, indent=1, sort_keys=True) + "\n")
    return Path(path)


class MalformedRecord(BadInputError):
    pass


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MalformedRecord(f"{path}: not a readable JSON record ({e})") from None
    if not isinstance(record, dict):
        raise MalformedRecord(f"{path}: a record must be a JSON object")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise MalformedRecord(f"{path}: missing field(s) {missing}")
    score = record["metrics"].get(record["main_score"]) if isinstance(record["metrics"], dict) else None
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        raise MalformedRecord(f"{path}: main score {record['main_score']!r} is missing or not a number")
    if not math.isfinite(score):
        raise MalformedRecord(f"{path}: main score {record['main_score']!r} is {score}, not a finite number")
    return record


def load_records(results: str | Path) -> tuple[list[dict], list[str]]:
    """All records under `results`, and one message per malformed file (reported, never averaged in)."""
    records, problems = [], []
    for path in sorted(Path(results).rglob("*.json")):
        try:
            records.append({**read_record(path), "path": str(path)})
        except MalformedRecord as e:
            problems.append(str(e))
    return records, problems

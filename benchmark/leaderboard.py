"""Records -> tables.

- `records.csv`: long format, one row per record (per seed), with every value the tables are made of: score,
  labelled images, classes, convergence, chance level, checkpoint sha256, split source, record path.
- `summary.csv`: one row per model x task setting x classifier x configuration: mean, sample std over seeds
  (ddof=1; blank with one seed), number of seeds, labelled images (per class), records that did not converge,
  the chance level and `source` (`ours`, or `published: ...` for reference numbers). Records of different
  configurations (their `config_digest`) are never averaged together. When one model name has records of several
  model configurations (another checkpoint of the same file name, other heads, another method's rules...), each
  gets a `variant` label saying what differs, and its own row in the leaderboard.
- `leaderboard.csv`: one row per model and source, two columns (mean, std) per task setting.
- `leaderboard.md`: one table per task (`benchmark.task_tables`): rows models, columns the task's settings in the
  order of their labelled images, cells `mean ± std (n=seeds)`.

Commands read the records once (`load_summary`) and write every output from that one summary. Settings are
ordered by their labelled images per class (`benchmark.task_tables.setting_positions`); the family and main score
of a published reference row come from its task's declaration.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lowshot.model_zoo.errors import BadInputError, UnknownNameError
from lowshot.model_zoo.files import atomic_write_text, digest
from lowshot.tasks.registry import declaration

from .positions import setting_ranks
from .escaping import csv_text
from .records import load_records
from .task_tables import markdown, task_tables
from .verdicts import ranks_markdown, with_verdicts

KEYS = ["model", "method", "task", "family", "setting", "classifier", "main_score"]
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "published.csv"


LEGACY = "record without identity (older version)"


def _flat(config, prefix: str = "") -> dict:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    out = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _short(value) -> str:
    text = str(value)
    return text[:8] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def variants(records: list[dict]) -> list[str]:
    """Per record: "" when its model name has one model configuration in `records`, else what differs
    (e.g. "num_heads=4", "checkpoint_sha256=1a2b3c4d")."""
    configs: dict[str, dict] = {}
    for r in records:
        model = (r.get("config") or {}).get("model")
        configs.setdefault(r["model"], {})[digest(model)] = model
    labels = {}
    for name, by_digest in configs.items():
        flat = {d: _flat(c) for d, c in by_digest.items() if c is not None}
        keys = {k for f in flat.values() for k in f}
        differing = sorted(k for k in keys if len({str(f.get(k)) for f in flat.values()}) > 1)
        for d, c in by_digest.items():
            if len(by_digest) == 1:
                labels[(name, d)] = ""
            elif c is None:
                labels[(name, d)] = LEGACY
            else:
                labels[(name, d)] = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(flat[d].get(k))}" for k in differing)
    return [labels[(r["model"], digest((r.get("config") or {}).get("model")))] for r in records]


def converged(record: dict) -> bool | None:
    """False when the record's solver says it stopped before converging, True when it says it converged, None when
    its classifier has no convergence criterion (k-NN, the segmentation head's fixed step budget)."""
    value = (record.get("convergence") or {}).get("converged")
    return None if value is None else bool(value)


def chance(record: dict) -> float | None:
    """The chance level of the record's main score on its evaluation set (`tasks.base.LowShotTask.chance_level`)."""
    value = (record.get("chance") or {}).get("value")
    return None if value is None else float(value)


RECORD_COLUMNS = KEYS + ["variant", "config_digest", "seed", "score", "num_train", "num_classes", "converged",
                         "chance", "feature", "split_source", "dataset", "checkpoint_sha256", "run", "training_step",
                         "step_unit", "finished", "path"]


def _family(record: dict) -> str:
    """The record's family; for a record without one (hand-written), its task's declared family, else 'unknown'."""
    entry = declaration(record["task"])
    return record.get("family") or (entry.family if entry else "unknown")


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = [{**{k: r.get(k) for k in KEYS}, "family": _family(r), "variant": variant, "config_digest": r.get("config_digest", "legacy"),
             "seed": r["seed"], "score": float(r["metrics"][r["main_score"]]), "num_train": r.get("num_train"),
             "num_classes": r.get("num_classes"), "converged": converged(r), "chance": chance(r),
             "feature": r.get("feature"), "split_source": r.get("split_source"), "dataset": r.get("dataset"),
             "checkpoint_sha256": r.get("checkpoint_sha256"), "run": r.get("run") or None,
             "training_step": (r.get("training_step") or {}).get("value"),
             "step_unit": (r.get("training_step") or {}).get("unit"), "finished": r.get("finished", ""),
             "path": r.get("path")}
            for r, variant in zip(records, variants(records))]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


GROUP = KEYS + ["variant", "config_digest"]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per model x task setting x classifier x configuration (source `ours`)."""
    columns = GROUP + ["mean", "std", "n_seeds", "seeds", "num_train", "per_class", "not_converged",
                       "chance", "finished", "source"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(per_class=pd.to_numeric(frame["num_train"], errors="coerce")
                         / pd.to_numeric(frame["num_classes"], errors="coerce"),
                         not_converged=frame["converged"].map(lambda v: v is False))
    grouped = frame.groupby(GROUP, dropna=False)
    out = grouped["score"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["seeds"] = grouped["seed"].apply(lambda s: " ".join(map(str, sorted(s)))).values
    out["num_train"] = grouped["num_train"].apply(lambda v: pd.to_numeric(v, errors="coerce").mean()).values
    out["per_class"] = grouped["per_class"].mean().values
    out["not_converged"] = grouped["not_converged"].sum().astype(int).values
    out["chance"] = grouped["chance"].apply(lambda v: pd.to_numeric(v, errors="coerce").mean()).values
    out["finished"] = grouped["finished"].max().values
    out["source"] = "ours"
    return out[columns]


def load_reference(path: str | Path = REFERENCE) -> pd.DataFrame:
    ref = pd.read_csv(path)
    unknown = sorted(set(ref["task"]) - {t for t in ref["task"] if declaration(t)})
    if unknown:
        raise BadInputError(f"{path}: rows of unknown task(s) {unknown}")
    ref["family"] = ref["task"].map(lambda t: declaration(t).family)
    ref["main_score"] = ref["task"].map(lambda t: declaration(t).protocol.main_score)
    ref["seeds"] = ""
    ref["variant"], ref["config_digest"], ref["finished"], ref["not_converged"] = "", "published", "", 0
    ref["source"] = "published: " + ref["source"]
    return ref


def _order(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows by family, task, setting (in the order of their labelled images) and classifier."""
    if summary.empty:
        return summary
    return summary.assign(_r=setting_ranks(summary)).sort_values(
        ["family", "task", "_r", "classifier"], kind="stable").drop(columns=["_r"])


def wide(summary: pd.DataFrame, sort_by: str | None = None) -> pd.DataFrame:
    """One row per (model, variant, method, source), columns `<task> <setting> <classifier> mean|std`. A cell that
    two configurations of one row claim (e.g. records of an older protocol version beside new ones) shows the
    most recent one; the others stay in summary.csv, and a warning names them."""
    head = ["model", "variant", "method", "source"]
    if summary.empty:
        return pd.DataFrame(columns=head)
    s = _order(summary)
    s = s.assign(column=s["task"] + " " + s["setting"] + " " + s["classifier"],
                 kind=s["source"].map(lambda v: "published" if v.startswith("published") else "ours"))
    rows: dict[tuple, dict] = {}
    for _, r in s.iterrows():  # rows in reading order
        rows.setdefault((r["model"], r["variant"], r["method"], r["kind"]),
                        {"model": r["model"], "variant": r["variant"], "method": r["method"], "source": r["kind"]})
    shown: dict[tuple, str] = {}
    for _, r in s.sort_values("finished", kind="stable").iterrows():  # the most recent configuration last
        row = rows[(r["model"], r["variant"], r["method"], r["kind"])]
        cell = (r["model"], r["variant"], r["method"], r["kind"], r["column"])
        if cell in shown:
            print(f"leaderboard: {r['model']} {r['column']}: records of configurations {shown[cell]} and "
                  f"{r['config_digest'][:8]}; showing the most recent ({r['config_digest'][:8]}), both are in "
                  "summary.csv", file=sys.stderr)
        shown[cell] = r["config_digest"][:8]
        row[f"{r['column']} mean"], row[f"{r['column']} std"] = r["mean"], r["std"]
    columns = head + [f"{c} {v}" for c in dict.fromkeys(s["column"]) for v in ("mean", "std")]
    flat = pd.DataFrame(list(rows.values()), columns=columns)
    if sort_by:
        key = sort_by if sort_by in flat else f"{sort_by} mean"
        if key not in flat:
            raise UnknownNameError(f"cannot sort by {sort_by!r}: no such column")
        flat = flat.sort_values(key, ascending=False, na_position="last")
    return flat


def load_all(results: str | Path, reference: str | Path | None = REFERENCE):
    """Read every record under `results` once: (records, records frame, summary with the published reference
    rows)."""
    records, problems = load_records(results)
    for p in problems:
        print(f"skipped malformed record: {p}", file=sys.stderr)
    frame = records_frame(records)
    summary = with_verdicts(summarize(frame), frame, records, GROUP)
    if reference and Path(reference).exists():
        ref = load_reference(reference)
        summary = pd.concat([summary, ref], ignore_index=True) if not summary.empty else ref
    return records, frame, summary


def load_summary(results: str | Path, reference: str | Path | None = REFERENCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records frame, summary with the published reference rows) of every record under `results`."""
    return load_all(results, reference)[1:]


def write_tables(frame: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path, family: str | None = None,
                 sort_by: str | None = None) -> dict[str, Path]:
    """The four tables of `frame` / `summary` in `out_dir`."""
    out_dir = Path(out_dir)
    if family:
        summary = summary[summary["family"] == family]
        frame = frame[frame["family"] == family]
    summary = _order(summary)
    table = wide(summary, sort_by)
    paths = {"records": out_dir / "records.csv", "summary": out_dir / "summary.csv",
             "leaderboard": out_dir / "leaderboard.csv", "markdown": out_dir / "leaderboard.md"}
    atomic_write_text(paths["records"], csv_text(frame.drop(columns=["path"])))
    atomic_write_text(paths["summary"], csv_text(summary, float_format="%.3f"))
    atomic_write_text(paths["leaderboard"], csv_text(table, float_format="%.3f"))
    atomic_write_text(paths["markdown"], markdown(task_tables(summary)) + ranks_markdown(summary))
    return paths


def format_table(summary: pd.DataFrame) -> str:
    """The end-of-run table: one line per summary row; rows with records that did not converge are marked."""
    lines = []
    for _, r in _order(summary).iterrows():
        std = "" if pd.isna(r["std"]) else f" ± {r['std']:.2f}"
        model = f"{r['model']} [{r['variant']}]" if r["variant"] else r["model"]
        flag = f"  NOT CONVERGED: {int(r['not_converged'])} of {int(r['n_seeds'])}" if r.get("not_converged") else ""
        lines.append(f"{model:<18} {r['task']:<20} {r['setting']:<9} {r['classifier']:<7} "
                     f"{r['main_score']:>5} {r['mean']:6.2f}{std}  (seeds {r['seeds']}){flag}")
    return "\n".join(lines)


def not_converged(frame: pd.DataFrame) -> pd.DataFrame:
    """The records of `frame` whose solver stopped before converging."""
    return frame[frame["converged"].map(lambda v: v is False)]

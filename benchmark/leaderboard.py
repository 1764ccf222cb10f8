"""Records -> tables.

- `records.csv`: long format, one row per record (per seed).
- `summary.csv`: one row per model x task setting x classifier: mean, sample std over seeds (ddof=1; blank
  with one seed), number of seeds, and `source` (`ours`, or `published` for reference numbers).
- `leaderboard.csv`: one row per model and source, two columns (mean, std) per task setting.
- `leaderboard.md`: the same as a Markdown table, `mean ± std`.

Commands read the records once (`load_summary`) and write every output from that one summary. Settings are
ordered as their task declares them (`tasks.registry`); the family and main score of a published reference row
come from its task's declaration too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from model_zoo.files import atomic_write_text
from tasks.registry import declaration

from .records import load_records

KEYS = ["model", "method", "task", "family", "setting", "classifier", "main_score"]
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "published.csv"


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = [{**{k: r.get(k) for k in KEYS}, "seed": r["seed"], "score": float(r["metrics"][r["main_score"]]),
             "dataset": r.get("dataset"), "checkpoint_sha256": r.get("checkpoint_sha256"), "path": r.get("path")}
            for r in records]
    return pd.DataFrame(rows, columns=KEYS + ["seed", "score", "dataset", "checkpoint_sha256", "path"])


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per model x task setting x classifier (source `ours`)."""
    columns = KEYS + ["mean", "std", "n_seeds", "seeds", "source"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grouped = frame.groupby(KEYS, dropna=False)
    out = grouped["score"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["seeds"] = grouped["seed"].apply(lambda s: " ".join(map(str, sorted(s)))).values
    out["source"] = "ours"
    return out[columns]


def load_reference(path: str | Path = REFERENCE) -> pd.DataFrame:
    ref = pd.read_csv(path)
    unknown = sorted(set(ref["task"]) - {t for t in ref["task"] if declaration(t)})
    if unknown:
        raise ValueError(f"{path}: rows of unknown task(s) {unknown}")
    ref["family"] = ref["task"].map(lambda t: declaration(t).family)
    ref["main_score"] = ref["task"].map(lambda t: declaration(t).protocol.main_score)
    ref["seeds"] = ""
    ref["source"] = "published: " + ref["source"]
    return ref


def setting_rank(task: str, setting: str) -> tuple[int, str]:
    """Where a setting stands in its task's declared reading order (undeclared settings last, by name)."""
    entry = declaration(task)
    names = [s.name for s in entry.declared_settings] if entry else []
    return (names.index(setting), "") if setting in names else (len(names), setting)


def _order(summary: pd.DataFrame) -> pd.DataFrame:
    rank = [setting_rank(t, s) for t, s in zip(summary["task"], summary["setting"])]
    return summary.assign(_r=[r[0] for r in rank], _n=[r[1] for r in rank]).sort_values(
        ["family", "task", "_r", "_n", "classifier"]).drop(columns=["_r", "_n"])


def wide(summary: pd.DataFrame, sort_by: str | None = None) -> pd.DataFrame:
    """One row per (model, method, source), columns `<task> <setting> <classifier> mean|std`."""
    if summary.empty:
        return pd.DataFrame(columns=["model", "method", "source"])
    s = _order(summary)
    s = s.assign(column=s["task"] + " " + s["setting"] + " " + s["classifier"],
                 kind=s["source"].map(lambda v: "published" if v.startswith("published") else "ours"))
    rows: dict[tuple, dict] = {}
    for _, r in s.iterrows():
        row = rows.setdefault((r["model"], r["method"], r["kind"]),
                              {"model": r["model"], "method": r["method"], "source": r["kind"]})
        row[f"{r['column']} mean"], row[f"{r['column']} std"] = r["mean"], r["std"]
    columns = ["model", "method", "source"] + [f"{c} {v}" for c in dict.fromkeys(s["column"]) for v in ("mean", "std")]
    flat = pd.DataFrame(list(rows.values()), columns=columns)
    if sort_by:
        key = sort_by if sort_by in flat else f"{sort_by} mean"
        if key not in flat:
            raise KeyError(f"cannot sort by {sort_by!r}: no such column")
        flat = flat.sort_values(key, ascending=False, na_position="last")
    return flat


def markdown(table: pd.DataFrame) -> str:
    settings = [c[:-5] for c in table.columns if c.endswith(" mean")]
    header = ["model", "method", "source"] + settings
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["model"]), str(r["method"]), str(r["source"])]
        for c in settings:
            m, sd = r[f"{c} mean"], r[f"{c} std"]
            cells.append("–" if pd.isna(m) else f"{m:.1f}" + ("" if pd.isna(sd) else f" ± {sd:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_summary(results: str | Path, reference: str | Path | None = REFERENCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every record under `results` once: (records frame, summary with the published reference rows)."""
    records, problems = load_records(results)
    for p in problems:
        print(f"skipped malformed record: {p}", file=sys.stderr)
    frame = records_frame(records)
    summary = summarize(frame)
    if reference and Path(reference).exists():
        ref = load_reference(reference)
        summary = pd.concat([summary, ref], ignore_index=True) if not summary.empty else ref
    return frame, summary


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
    atomic_write_text(paths["records"], frame.drop(columns=["path"]).to_csv(index=False))
    atomic_write_text(paths["summary"], summary.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(paths["leaderboard"], table.to_csv(index=False, float_format="%.3f"))
    atomic_write_text(paths["markdown"], markdown(table))
    return paths


def build(results: str | Path, out_dir: str | Path | None = None, family: str | None = None,
          sort_by: str | None = None, reference: str | Path | None = REFERENCE) -> dict[str, Path]:
    """Read every record under `results`, write the four tables to `out_dir` (default: `results`)."""
    frame, summary = load_summary(results, reference)
    return write_tables(frame, summary, out_dir or results, family, sort_by)


def format_table(summary: pd.DataFrame) -> str:
    lines = []
    for _, r in _order(summary).iterrows():
        std = "" if pd.isna(r["std"]) else f" ± {r['std']:.2f}"
        lines.append(f"{r['model']:<18} {r['task']:<20} {r['setting']:<9} {r['classifier']:<7} "
                     f"{r['main_score']:>5} {r['mean']:6.2f}{std}  (seeds {r['seeds']})")
    return "\n".join(lines)

"""`lowshot compare RESULTS A B`: model A against model B, cell by cell (`benchmark.statistics.compare_models`),
as a text table or as CSV (one row per cell, `statistics.COMPARISON_COLUMNS`)."""
from __future__ import annotations

import csv
import io

from .statistics import COMPARISON_COLUMNS, CONFIDENCE, TEST_PAIRED


def _number(value, digits: int = 2) -> str:
    return "" if value != value else f"{value:.{digits}f}"  # NaN: blank


def comparison_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COMPARISON_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, **{k: repr(float(r[k])) for k in COMPARISON_COLUMNS if isinstance(r[k], float)}})
    return out.getvalue()


def comparison_text(rows: list[dict], a: str, b: str) -> str:
    """An aligned table, one line per cell, and what the columns mean."""
    head = ["task", "setting", "classifier", a, b, "difference", f"{CONFIDENCE:.0%} interval", "p", "p (Holm)", ""]
    body = [[r["task"], r["setting"], r["classifier"], _number(r["mean_a"]), _number(r["mean_b"]),
             f"{r['difference']:+.2f}", f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]",
             _number(r["p_value"], 4), _number(r["p_holm"], 4),
             "significant" if r["significant"] else ("n.s." if r["p_holm"] == r["p_holm"] else "no test")]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head] + body]
    methods = sorted({r["method"] for r in rows})
    seeds = sorted({r["seeds"] for r in rows})
    significant = sum(r["significant"] for r in rows)
    return "\n".join(lines + [
        "",
        f"{a} - {b} per cell: mean over the seeds both have ({'/'.join(map(str, seeds))}), paired by labelled subset "
        f"and by evaluation image; test: {', '.join(methods) or TEST_PAIRED}; p (Holm): corrected across the cells "
        f"of each task; significant: p (Holm) < {1 - CONFIDENCE:.2f}.",
        f"{significant} of {len(rows)} cell(s) significant."])

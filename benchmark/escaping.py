"""Escaping of what the suite did not make (model, task, setting, classifier names, variants, sources: they come
from records, which anyone can write) in everything it writes. One module, used by every writer:

- Markdown table cells and headings (`markdown_text`): HTML special characters as entities (`<` -> `&lt;`, `&`,
  `>`, `"`, `'`), so that raw HTML never reaches a renderer that allows it; `|` as `\\|` (a pipe would split the
  row), a backslash as `\\\\`, line breaks as spaces (one would end the row).
- CSV cells (`csv_text`): a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
  leading single quote (`'=1+1`), as OWASP recommends against formula injection; numbers stay numbers (a score of
  -1.5 is written as -1.5), and the cell is then quoted by the CSV writer as usual (a carriage return inside text
  is written as a line feed, so that the cell is quoted and the row stays one row).
- JSON inside an HTML `<script>` element (`script_json`): `<`, `>` and `&` as `\\u003c`, `\\u003e`, `\\u0026`, so
  that no `</script>` or `<!--` in a name can end or change the element (JSON.parse gives the same strings back).
- Figure text (`figure_text`): `$` as `\\$`, so that matplotlib never reads a name as mathtext (an unbalanced or
  invalid expression would stop the figure); a leading `_` gets a space before it (matplotlib leaves labels that
  start with `_` out of legends).
"""
from __future__ import annotations

import html
import json

import pandas as pd

CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def markdown_text(value) -> str:
    """`value` as the text of a Markdown table cell or heading: rendered as the same characters, never as HTML,
    a link break or another cell."""
    text = html.escape(str(value), quote=True).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.splitlines())


def csv_cell(value):
    """A CSV cell: text starting with a formula character gets a leading `'`; a carriage return in text becomes a
    line feed (Python's CSV writer before 3.12 leaves a lone CR unquoted, which readers take for the end of the
    row; a line feed makes it quote the cell); anything else as it is."""
    if not isinstance(value, str):
        return value
    if value.startswith(CSV_FORMULA_STARTS):
        value = "'" + value
    return value.replace("\r\n", "\n").replace("\r", "\n")


def csv_text(frame: pd.DataFrame, **to_csv) -> str:
    """`frame.to_csv(index=False, **to_csv)` with every text cell (and column name) neutralised by `csv_cell`;
    numeric columns are written as pandas writes them."""
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    safe = frame.assign(**{c: frame[c].map(csv_cell) for c in text_columns}) if text_columns else frame
    safe = safe.rename(columns={c: csv_cell(c) for c in safe.columns})
    return safe.to_csv(index=False, **to_csv)


def script_json(value) -> str:
    """`value` as JSON that is safe as the content of an HTML `<script>` element."""
    return (json.dumps(value, sort_keys=True)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def figure_text(value) -> str:
    """`value` as a matplotlib text or legend label shown literally."""
    text = str(value).replace("$", "\\$")
    return " " + text if text.startswith("_") else text

"""Progress of a run: a tqdm bar when the output is a terminal, plain periodic log lines when it is not (a file,
a pipe, CI), so that a redirected run never becomes one huge carriage-return line.

`Progress(total, desc, unit)` is a context manager with `update(n)`. On a terminal it is a tqdm bar on stderr; on
anything else it prints `desc: n/total units (p %), elapsed, ~left` every `interval` seconds (default 30,
`$LOWSHOT_LOG_INTERVAL`) and once when it closes. `$LOWSHOT_PROGRESS` = `bars`, `log` or `off` forces a mode.
`note(text)` shows a short status beside the count (a bar's postfix; appended to the log lines).
`write(line)` prints a line without breaking a bar that is being drawn.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from tqdm import tqdm

MODES = ("bars", "log", "off")


def mode(stream=None) -> str:
    """`bars` on a terminal, else `log`; `$LOWSHOT_PROGRESS` overrides."""
    forced = os.environ.get("LOWSHOT_PROGRESS", "")
    if forced in MODES:
        return forced
    stream = stream or sys.stderr
    return "bars" if getattr(stream, "isatty", lambda: False)() else "log"


def log_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("LOWSHOT_LOG_INTERVAL", "30")))
    except ValueError:
        return 30.0


def _size() -> dict:
    """The terminal's columns and rows for tqdm; 100 x 40 where it reports none (tqdm hides every bar of a
    pseudo-terminal that says it has 0 rows, e.g. under `script` or an IDE's console)."""
    size = shutil.get_terminal_size((100, 40))
    return {"ncols": size.columns if size.columns >= 40 else 100, "nrows": size.lines if size.lines >= 5 else 40}


def fitted(desc: str, columns: int) -> str:
    """`desc` shortened so that a bar keeps about 52 columns for itself (its counts take ~40): what precedes its
    first `: ` (the model) is kept, then `…` and the end of the rest (the images it reads); unchanged if it fits."""
    room = max(24, columns - 52)
    if len(desc) <= room:
        return desc
    head, _, rest = desc.partition(": ")
    head = head + ": " if rest and len(head) + 3 < room // 2 else ""
    rest = rest or desc
    return head + "…" + rest[len(rest) - (room - len(head) - 1):]


def _seconds(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"


def write(line: str, stream=None) -> None:
    """Print `line` (on stdout by default) without tearing a progress bar that is being drawn."""
    tqdm.write(line, file=stream or sys.stdout)
    (stream or sys.stdout).flush()


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True, stream=None,
                 how: str | None = None, interval: float | None = None, leave: bool = True):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream or sys.stderr
        self.how = "off" if not enabled else (how or mode(self.stream))
        self.interval = log_interval() if interval is None else interval
        self.n, self.start, self.last = 0, time.time(), time.time()
        self.text = ""
        size = _size()  # a bar's description is shortened to fit the terminal; a log line says it whole
        self.bar = tqdm(total=self.total, desc=fitted(desc, size["ncols"]), unit=unit, file=self.stream, leave=leave,
                        **size) if self.how == "bars" else None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.how == "log" and time.time() - self.last >= self.interval and self.n < self.total:
            self._line()

    def note(self, text: str) -> None:
        self.text = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def _line(self, done: bool = False) -> None:
        elapsed = time.time() - self.start
        self.last = time.time()
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        if done:
            text = f"{self.desc}: {self.n}/{self.total} {self.unit}, done in {_seconds(elapsed)}"
        else:
            left = elapsed / self.n * (self.total - self.n) if self.n else None
            text = (f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {_seconds(elapsed)}"
                    + (f", ~{_seconds(left)} left" if left is not None else ""))
        print(text + (f"; {self.text}" if self.text else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.how == "log" and self.total:
            self._line(done=True)
        self.how = "off"  # closing twice says nothing more

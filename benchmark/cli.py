"""The `lowshot` command line: models, tasks, bench (its options and run in `benchmark.bench_command`), leaderboard,
plot, report, compare, status, pretrain."""
from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import time
import warnings
from pathlib import Path

from lowshot.model_zoo.errors import BadInputError, LowshotError, MissingFileError, one_line
from lowshot.model_zoo.files import WRITE_ERRNOS

from .bench_command import at_least, bench_arguments

def cmd_models(args) -> int:
    from lowshot.model_zoo import REGISTRY
    from lowshot.model_zoo.download import is_cached

    rows = [(e.name, e.method, f"{e.arch}/{e.patch_size}", f"{e.num_params / 1e6:.1f}M", e.lowshot_feature,
             e.eval_config.knn_feature, "bundled" if e.bundled else ("yes" if is_cached(e.file_name) else "no"),
             e.url or e.bundled or f"after a licence form: {e.get_it}") for e in REGISTRY.values()]
    header = ("name", "method", "arch", "params", "lowshot feature", "k-NN feature", "cached", "source")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]))
    from lowshot.model_zoo.registry import FAMILY_SOURCES
    print("\nfamilies and their sources (release files: the official features to 1e-5; timm: / hf: the library's "
          "own forward; py:<module>:<factory> takes any module)")
    header = ("family", "release file", "timm:", "hf:")
    rows = [(family, s["release file"], s["timm"], s["hf"]) for family, s in FAMILY_SOURCES.items()]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _existing_results(path: str) -> str:
    if not Path(path).is_dir():
        raise MissingFileError(f"results directory {path} does not exist (run `lowshot bench --results {path}` first)")
    return path


def cmd_leaderboard(args) -> int:
    from .leaderboard import load_summary, write_tables
    from .transfer_report import write_transfer_tables

    _existing_results(args.results)
    frame, summary = load_summary(args.results)
    paths = write_tables(frame, summary, args.out or args.results, family=args.family, sort_by=args.sort)
    if args.family in (None, "transfer"):
        paths.update(write_transfer_tables(summary, args.out or args.results))
    print((Path(paths["markdown"])).read_text())
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_tasks(args) -> int:
    """Every registered task: its settings, classifiers, metric, the folder it expects and whether it is found."""
    from lowshot.tasks.registry import TASKS

    for entry in TASKS.values():
        protocol = entry.protocol
        if entry.embedded:
            where = "generated offline (embedded); found"
        elif entry.locate is None:
            where = "expects: not declared; found: unknown"
        elif args.data_root is None:
            where = f"expects {entry.folder} under --data-root; found: not looked for (no --data-root given)"
        else:
            try:
                where = f"expects {entry.folder}; found: {entry.locate(args.data_root)}"
            except FileNotFoundError as e:
                where = f"expects {entry.folder}; found: no ({one_line(e)})"
        settings = ", ".join(f"{s.name} ({s.label}, {len(s.seeds)} seed{'s' if len(s.seeds) > 1 else ''})"
                             for s in entry.declared_settings)
        print(f"{entry.name}  [{entry.family}] {entry.description}\n"
              f"  settings:    {settings}\n"
              f"  classifiers: {', '.join(protocol.classifiers)}\n"
              f"  metric:      {protocol.main_score} ({protocol.metric_label})\n"
              f"  data:        {where}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    _existing_results(args.results)
    print(write_report(args.results, args.out, args.bands))
    return 0


def cmd_compare(args) -> int:
    from .comparison import comparison_csv, comparison_text
    from .records import load_records
    from .statistics import compare_models

    _existing_results(args.results)
    records, _ = load_records(args.results)
    rows = compare_models(records, args.model_a, args.model_b, args.task)
    if not rows:
        raise BadInputError(f"{args.results}: {args.model_a} and {args.model_b} have no (task, setting, classifier) "
                            "in common" + (f" on {args.task}" if args.task else ""))
    print(comparison_csv(rows) if args.csv else comparison_text(rows, args.model_a, args.model_b), end="" if args.csv
          else "\n")
    return 0


def cmd_status(args) -> int:
    from .launch import report_status

    _existing_results(args.results)
    return report_status(args.results)


def cmd_plot(args) -> int:
    from .leaderboard import load_summary
    from .plots import family_plots, figure1, series_figure

    _existing_results(args.results)
    frame, summary = load_summary(args.results)
    out = args.out or args.results
    if args.figure == "series":
        paths = series_figure(frame, out, args.bands, summary)
    elif args.figure == "figure1":
        paths = figure1(summary, out, args.task, args.bands)
    else:
        paths = family_plots(summary, out, args.bands)
    for p in paths:
        print(p)
    return 0


def cmd_pretrain(args) -> int:
    from lowshot.model_zoo.pretrain import config_from_args, train

    cfg = config_from_args(args)
    source = None
    if cfg.data == "embedded":  # the model zoo knows no dataset: the embedded scenes are passed in from here
        from lowshot.tasks.datasets.synthetic import SyntheticScenes
        source = SyntheticScenes(cfg.embedded_task, "train", cfg.img_size)
    evaluations = None
    if args.eval_every:  # low-shot scores of the EMA teacher while it trains (benchmark.pretrain_evaluations)
        from .pretrain_evaluations import start_evaluations
        evaluations = start_evaluations(args, cfg)
    t0 = time.perf_counter()
    result = train(cfg, args.out, resume=args.resume, device=args.device, name=args.name, source=source,
                   bf16=args.bf16, on_step=evaluations)
    if evaluations:
        print(evaluations.report(args.out, time.perf_counter() - t0))
    return 0 if result["step"] >= cfg.steps else 1


class OneLineErrors(argparse.ArgumentParser):
    """An option error is one line first (`lowshot bench: error: argument --workers: ...`), then where the options
    are listed; never the usage block before it. Subcommands' parsers are of this class too (argparse makes them
    with the class of their parent)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


VERBS = {  # verb -> its help line (ARGUMENTS: the function that declares its options)
    "models": "list the model zoo",
    "tasks": "list the tasks: settings, classifiers, metric, expected folder, found or not",
    "bench": "run low-shot tasks for models and write result records",
    "leaderboard": "flatten result records into CSV and Markdown tables",
    "pretrain": "pretrain a ViT (DINO, iBOT, MSN, MAE, MaskCluster recipes)",
    "plot": "figures from the records: figure1, every family, or checkpoint series (score vs. training step)",
    "report": "one self-contained HTML page: sortable tables, figures, provenance per cell",
    "status": "the jobs of a `lowshot bench --launcher slurm` run: done, running, pending, failed (with their logs); "
              "the leaderboard and report once all have ended",
    "compare": "model A against model B, cell by cell: difference, 95 %% interval, paired test, Holm",
}


def build_parser(verb: str | None = "*") -> argparse.ArgumentParser:
    """The command line. Only `verb`'s options are declared ("*": every verb's; None: none, for `lowshot --help`),
    so that the help and the light verbs import no heavy library."""
    parser = OneLineErrors(prog="lowshot", description="Low-shot benchmark of self-supervised ViTs: "
                                     "run the protocols, flatten the records into tables, figures and a report.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB",
                                title="verbs (`lowshot VERB --help` for each one's options)")
    for name, help_line in VERBS.items():
        p = sub.add_parser(name, help=help_line, parents=[common])
        if verb in ("*", name):
            ARGUMENTS[name](p)
    return parser


def _models_arguments(p) -> None:
    p.set_defaults(func=cmd_models)


def _tasks_arguments(p) -> None:
    p.add_argument("--data-root", help="where to look for the real datasets (as `lowshot bench --data-root`)")
    p.set_defaults(func=cmd_tasks)


def _leaderboard_arguments(lb) -> None:
    from lowshot.tasks.registry import TASKS

    lb.add_argument("results", nargs="?", default="results/runs",
                    help="results directory of `lowshot bench` (default: results/runs)")
    lb.add_argument("--out", help="output directory (default: the results directory)")
    lb.add_argument("--family", choices=sorted({t.family for t in TASKS.values()} | {"label-free"}),
                    help="only the tasks of this family")
    lb.add_argument("--sort", help="sort rows by this column, e.g. 'imagenet-lowshot 1img logreg'")
    lb.set_defaults(func=cmd_leaderboard)


def _pretrain_arguments(pt) -> None:
    from lowshot.model_zoo.pretrain.cli import add_pretrain_arguments

    from lowshot.tasks.classifiers import CLASSIFIERS
    from lowshot.tasks.registry import TASKS

    add_pretrain_arguments(pt).set_defaults(func=cmd_pretrain)
    ev = pt.add_argument_group("low-shot scores while training (of the EMA teacher, as `lowshot bench` reads it)")
    ev.add_argument("--eval-every", type=at_least(1), metavar="N",
                    help="evaluate every N steps (and at step 0); writes OUT/evaluations.csv and the curve")
    ev.add_argument("--eval-task", action="append", choices=list(TASKS), metavar="TASK",
                    help="task to evaluate on (repeatable; default: embedded-lowshot)")
    ev.add_argument("--eval-setting", nargs="+", help="settings (default: 1img 5img; `lowshot tasks` lists them)")
    ev.add_argument("--eval-classifier", nargs="+", choices=list(CLASSIFIERS),
                    help="classifiers (default: knn logreg)")
    ev.add_argument("--eval-images", type=at_least(1), metavar="N",
                    help="score on N evenly spaced evaluation images, the same at every step (default: all)")
    ev.add_argument("--eval-data-root", help="root of the real datasets of --eval-task (as bench --data-root)")


def _plot_arguments(pl) -> None:
    pl.add_argument("figure", choices=["figure1", "families", "series"],
                    help="figure1: the paper's Figure 1 (logistic regression); families: one figure per task; "
                    "series: score vs. training step of checkpoint series, a panel per task setting, a line per run")
    pl.add_argument("results", nargs="?", default="results/runs",
                    help="results directory of `lowshot bench` (default: results/runs)")
    pl.add_argument("--out", help="output directory (default: the results directory)")
    pl.add_argument("--task", help="figure1: which classification task (default: imagenet-lowshot if run)")
    pl.add_argument("--bands", choices=["std", "ci"], default="std",
                    help="error bars: ± sample std over seeds (default) or each cell's 95 %% interval (ci)")
    pl.set_defaults(func=cmd_plot)


def _report_arguments(rp) -> None:
    rp.add_argument("results", nargs="?", default="results/runs",
                    help="results directory of `lowshot bench` (default: results/runs)")
    rp.add_argument("--out", help="the HTML file to write (default: RESULTS/report.html)")
    rp.add_argument("--bands", choices=["std", "ci"], default="std",
                    help="the figures' error bars: ± sample std over seeds (default) or each cell's 95 %% interval")
    rp.set_defaults(func=cmd_report)



def _status_arguments(st) -> None:
    st.add_argument("results", nargs="?", default="results/runs",
                    help="results directory of `lowshot bench` (default: results/runs)")
    st.set_defaults(func=cmd_status)


def _compare_arguments(cp) -> None:
    cp.add_argument("results", help="results directory of `lowshot bench` holding both models' records")
    cp.add_argument("model_a", metavar="A", help="model name (as in the records)")
    cp.add_argument("model_b", metavar="B", help="the model A is compared with")
    cp.add_argument("--task", help="only this task")
    from .statistics import COMPARISON_COLUMNS

    cp.add_argument("--csv", action="store_true", help="CSV, one row per cell: " + ", ".join(COMPARISON_COLUMNS))
    cp.set_defaults(func=cmd_compare)


ARGUMENTS = {"models": _models_arguments, "tasks": _tasks_arguments, "bench": bench_arguments,
             "leaderboard": _leaderboard_arguments, "pretrain": _pretrain_arguments, "plot": _plot_arguments,
             "report": _report_arguments, "status": _status_arguments,
             "compare": _compare_arguments}


@contextlib.contextmanager
def _warnings_on_stderr():
    """The suite's own warnings as one line each on this command's stderr (`lowshot: warning: ...`), even
    where a caller (pytest, a notebook) records or hides warnings; other warnings go where they went."""
    from lowshot.model_zoo.errors import LowshotWarning

    with warnings.catch_warnings():
        others = warnings.showwarning
        warnings.simplefilter("default", LowshotWarning)

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, LowshotWarning):  # one line, without tearing a progress bar
                from .progress import write
                write(f"lowshot: warning: {message}", sys.stderr)
            else:
                others(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Run a verb. An error in what the user gave is one line on stderr and exit code 2 (`--debug`: the
    traceback); finished records are kept on any error or interruption."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    with _warnings_on_stderr():  # also the warnings of option values (--workers capped)
        args = build_parser(verb if verb in VERBS else None).parse_args(argv)
        return _run(args)


def _run(args) -> int:
    try:
        return args.func(args)
    except LowshotError as e:
        if args.debug:
            raise
        print(f"lowshot {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or read-only directory met where no writer named it (a lock file, ...)
        if args.debug or e.errno not in WRITE_ERRNOS + (errno.EACCES, errno.EPERM) or not e.filename:
            raise
        verb = "write" if e.errno in WRITE_ERRNOS else "access"
        print(f"lowshot {args.command}: error: cannot {verb} {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowshot {args.command}: interrupted; finished records are kept and a rerun continues from them",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

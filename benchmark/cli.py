"""The `lowshot` command line: models, tasks, bench, leaderboard, plot, report, status, pretrain."""
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

# `make bench MODEL=<method>`: the method's model on the embedded data, or its ViT-S/16 release on real data.
METHOD_ALIASES = {
    "dino": ("dino-tiny", "dino-vits16"),
    "ibot": ("ibot-tiny", "ibot-vits16"),
    "mae": ("mae-tiny", "mae-vitb16"),  # MAE released no ViT-S
    "msn": ("msn-tiny", "msn-vits16"),
    "maskcluster": ("maskcluster-tiny", None),  # no public MaskCluster checkpoint: pretrain one (lowshot pretrain)
}


def resolve_models(names: list[str], embedded: bool) -> list[str]:
    out = []
    for name in names:
        if name == "all":
            out += resolve_models(list(METHOD_ALIASES), embedded)
        elif name in METHOD_ALIASES:
            tiny, real = METHOD_ALIASES[name]
            if not embedded and real is None:
                raise BadInputError(f"no public {name} checkpoint exists: pass --model /path/to/checkpoint "
                                    "(e.g. one written by `lowshot pretrain`)")
            out.append(tiny if embedded else real)
        else:
            out.append(name)
    return out


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


def cmd_bench(args) -> int:
    from . import distributed
    from .launch import launch, launcher_requested

    if launcher_requested(args):  # the grid as jobs (or one shard of it); each unit is a `_bench` of its own
        return launch(args, resolve_models(args.model, args.data_root is None), _check_settings, _bench)
    if not distributed.launched_by_torchrun():
        return _bench(args)
    if not args.extract_only:
        raise BadInputError("lowshot bench under torchrun only extracts features: add --extract-only, then run "
                            "`lowshot bench` again with the same options, without torchrun and --extract-only, to "
                            "fit the classifiers and write the records from the cached features")
    args.device = distributed.init(args.device)
    try:
        return _bench(args)
    finally:
        distributed.shutdown()


def _device(value: str) -> str:
    """--device: a torch device that exists on this machine; 'auto' resolves here, before anything uses it, to cuda
    when CUDA is available, else cpu (records carry the concrete device)."""
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{value}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{value}: only cpu and cuda devices are supported")
    return value


def _at_least(minimum: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return number
    return parse


def _workers(value: str) -> int:
    """--workers: a whole number >= 0, capped at the cores this process has (with a warning)."""
    from .features import capped_workers

    return capped_workers(_at_least(0)(value), "--workers")


def _lambd(value: str) -> float | str:
    """--lambd: 'cv' or a non-negative number."""
    if value == "cv":
        return value
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor 'cv'") from None
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: λ must be a finite number >= 0")
    return number


def _check_settings(asked: list[str] | None, task_names: list[str]) -> None:
    """Every --setting must be a setting of at least one task of the run (else nothing would run); `label-free`
    asks for the label-free scores."""
    from lowshot.tasks.registry import get_task
    from lowshot.tasks.spectrum import LABEL_FREE as SETTING

    if not asked:
        return
    declared = {t: [s.name for s in get_task(t).declared_settings] for t in task_names}
    unknown = sorted(set(asked) - {s for names in declared.values() for s in names} - {SETTING})
    if unknown:
        raise BadInputError(f"--setting {' '.join(unknown)}: not a setting of "
                            + "; ".join(f"{t} ({', '.join(names)})" for t, names in declared.items()))


def _bench(args) -> int:
    from lowshot.tasks.registry import TaskOptions, embedded_tasks, expand, get_task, real_tasks

    from . import distributed
    from .features import FeatureCache
    from .leaderboard import format_table, load_summary, not_converged, write_tables
    from .model_specs import expand_models, load_spec
    from .planning import plan_task
    from .plots import family_plots
    from .runner import RunContext, run_task
    from .transfer_report import write_transfer_tables

    embedded = args.data_root is None
    rank, sharded = distributed.rank(), distributed.active()
    cache = FeatureCache(args.cache, sharded=sharded)
    if sharded:
        distributed.check_shared_directory(cache.root)
    ctx = RunContext(Path(args.results), cache, overwrite=args.overwrite, lambd=args.lambd,
                     classifiers=tuple(args.classifier) if args.classifier else None,
                     settings=tuple(args.setting) if args.setting else None, feature=args.feature,
                     device=args.device, batch_size=args.batch_size, workers=args.workers,
                     progress=not args.quiet and rank == 0, extract_only=args.extract_only)
    t0 = time.time()
    opts = TaskOptions(args.data_root, args.splits, args.custom_splits)
    asked = expand(args.task) if args.task else [(n, False) for n in (embedded_tasks() if embedded else real_tasks())]
    _check_settings(args.setting, [n for n, _ in asked])  # the declarations need no data: before anything is read
    built = []  # datasets are read and checked before any model runs
    for name, by_name in asked:
        entry = get_task(name)
        try:
            built.append((entry, entry.build(opts)))
        except FileNotFoundError as e:
            if by_name:  # asked for by name: its data must be there
                raise MissingFileError(f"{name}: {one_line(e)}") from None
            print(f"skipping {name}: {one_line(e)}")
    if not built:
        raise MissingFileError(f"no task to run: no dataset found under {args.data_root}")
    planned = []  # before any work: every model x task's records and feature sets
    load = dict(method=args.method, num_heads=args.num_heads, layout=args.layout, weights=args.weights,
                device=args.device, bf16=args.bf16, trust=args.trust_checkpoint, weights_file=args.weights_file)
    for spec in expand_models(resolve_models(args.model, embedded)):  # one model in memory at a time
        model = load_spec(spec, **load)
        planned.append((spec, [(entry, task, plan_task(task, model, ctx)) for entry, task in built]))
        del model
    if rank == 0:
        print(plan_text([plan for _, plans in planned for _, _, plan in plans]), flush=True)
    written = []
    for spec, plans in planned:
        model = load_spec(spec, again=True, **load) if any(plan.todo for _, _, plan in plans) else None
        for entry, task, plan in plans:
            if rank == 0:
                print(f"== {plan.model} on {entry.name}", flush=True)
            written += run_task(task, model, ctx, plan)
        del model
    if args.extract_only:
        if rank == 0:
            ranks = f" over {distributed.world_size()} ranks" if sharded else ""
            print(f"\nfeatures extracted{ranks} into {ctx.cache.root}: {ctx.cache.hits} already cached, "
                  f"{ctx.cache.misses} computed, {time.time() - t0:.1f}s; no record written (--extract-only): run "
                  "`lowshot bench` again without --extract-only to fit the classifiers")
        return 0
    repaired = f", {ctx.cache.store.repaired} damaged file(s) recomputed" if ctx.cache.store.repaired else ""
    print(f"\n{len(written)} record(s) written to {args.results}, feature cache: {ctx.cache.hits} hit(s), "
          f"{ctx.cache.misses} computed{repaired}, {time.time() - t0:.1f}s")
    frame, summary = load_summary(args.results)  # every record, read once, for the tables and the figures
    paths = write_tables(frame, summary, args.results)
    paths.update(write_transfer_tables(summary, args.results))
    this_run = summary[summary["config_digest"].isin(ctx.configs)]  # this run's configurations, no other
    print(format_table(this_run))
    print(f"\nleaderboard: {paths['leaderboard']} and {paths['markdown']}"
          + (f"; transfer mean: {paths['transfer_mean_md']}" if "transfer_mean_md" in paths else ""))
    for p in family_plots(summary, args.results):
        print(f"figure: {p}")
    print(not_converged_text(not_converged(frame[frame["config_digest"].isin(ctx.configs)])))
    return 0


def plan_text(plans) -> str:
    """The plan lines printed before any work, and their total."""
    lines = ["plan (per model x task: records to compute and already done; feature sets cached and to extract):"]
    lines += [f"  {p.line()}" for p in plans]
    todo, done = sum(p.todo for p in plans), sum(p.done for p in plans)
    sets = [c for p in plans for _, c in p.feature_sets]
    lines.append(f"  total: {todo} record(s) to compute, {done} done; feature sets: {sum(sets)} cached, "
                 f"{len(sets) - sum(sets)} to extract")
    return "\n".join(lines)


def not_converged_text(records) -> str:
    """The list a run ends with: its records whose solver stopped before converging (or that there are none)."""
    if records.empty:
        return "\nnon-converged records: none"
    lines = [f"\nnon-converged records ({len(records)}): the solver stopped before its tolerance; the tables mark "
             "their cells with †, records.csv says converged=False:"]
    for _, r in records.iterrows():
        lines.append(f"  {r['model']} {r['task']} {r['setting']} seed {r['seed']} {r['classifier']}: {r['path']}")
    return "\n".join(lines)


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
    print(write_report(args.results, args.out))
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
        paths = series_figure(frame, out)
    else:
        paths = figure1(summary, out, args.task, args.bands) if args.figure == "figure1" else family_plots(summary, out)
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
    "compare": "model A against model B, cell by cell: difference, 95 % interval, paired test, Holm",
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


def _bench_arguments(b) -> None:
    from lowshot.model_zoo import FEATURES, METHODS
    from lowshot.model_zoo.formats import LAYOUTS
    from lowshot.tasks.classifiers import CLASSIFIERS
    from lowshot.tasks.registry import TASK_GROUPS, TASKS

    b.add_argument("--model", action="append", required=True,
                   help="registry name, checkpoint path, timm:<name>, hf:<repo or directory>, py:<module>:<factory>, a method "
                   "(dino|ibot|mae|msn|maskcluster) or 'all'; repeatable. Options after it: ':name=NAME' records it "
                   "as NAME; a quoted glob of checkpoint files ('runs/a/ckpt*.pth:name=run-a') is a series, each "
                   "recorded as run-a@step<N> with the step its file (or file name; ':step=from-name') gives")
    b.add_argument("--task", action="append", choices=list(TASKS) + list(TASK_GROUPS), metavar="TASK",
                   help=f"task name (repeatable; {', '.join(TASKS)}), or 'transfer': every transfer dataset found "
                   "under --data-root; default: all embedded tasks, or all real tasks when --data-root is given")
    b.add_argument("--data-root", help="root of the real dataset; without it the embedded dataset is used")
    b.add_argument("--splits", help="local directory of split files (default: download and verify)")
    b.add_argument("--custom-splits", action="store_true",
                   help="accept split files that are not the official ones (sha256 differs); recorded as custom")
    b.add_argument("--results", default="results/runs", help="directory of result records")
    b.add_argument("--cache", help="feature cache directory (default: $LOWSHOT_CACHE/features)")
    b.add_argument("--overwrite", action="store_true", help="recompute records that exist")
    b.add_argument("--classifier", nargs="+", choices=list(CLASSIFIERS),
                   help="run only these classifiers (default: every classifier of each task)")
    b.add_argument("--setting", nargs="+", help="run only these settings (e.g. 5img 1percent 4shot, or label-free "
                   "for the label-free scores; default: all; `lowshot tasks` lists each task's settings)")
    b.add_argument("--lambd", type=_lambd, help="logistic-regression λ, or 'cv' to choose it on the labelled subset "
                   "(default: literature values)")
    b.add_argument("--feature", choices=FEATURES,
                   help="feature every classifier reads (default: each classifier's own feature of the model)")
    b.add_argument("--method", choices=sorted(METHODS), help="evaluation rules for a checkpoint file")
    b.add_argument("--num-heads", type=_at_least(1), help="attention heads of a checkpoint file (not inferable)")
    b.add_argument("--layout", choices=sorted(LAYOUTS), help="force the checkpoint layout instead of detecting it")
    b.add_argument("--weights", default="teacher", choices=["teacher", "student"],
                   help="which network of a DINO/iBOT/MSN checkpoint to evaluate (default: teacher, as the official "
                   "evaluation code)")
    b.add_argument("--weights-file", help="local weights for a timm:<name> model (instead of the hub), or the "
                   "downloaded file of a registry entry without a URL (DINOv3; its release-name hash is checked)")
    b.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary pickled objects (unsafe)")
    b.add_argument("--device", default="auto", type=_device,
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda when CUDA is available, else cpu)")
    b.add_argument("--bf16", action="store_true", help="bf16 autocast for extraction, on CUDA or CPU (the features "
                   "differ from fp32 ones by up to 3 %% per image; recorded as precision bf16 in the identity)")
    b.add_argument("--batch-size", type=_at_least(1), default=64, help="images per extraction batch (default 64)")
    b.add_argument("--workers", type=_workers, help="DataLoader workers (default: from the machine; at most its "
                   "CPU cores)")
    b.add_argument("--extract-only", action="store_true",
                   help="only compute and cache the features the missing records need (no fitting, no record); "
                   "required under torchrun, which shards the extraction over its processes")
    b.add_argument("--quiet", action="store_true", help="no progress bars or progress lines (the plan, warnings and "
                   "the results table are still printed)")
    from .launch import add_launch_arguments

    add_launch_arguments(b)
    b.set_defaults(func=cmd_bench, bench_parser=b)  # a launcher writes these options back for each job


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
    ev.add_argument("--eval-every", type=_at_least(1), metavar="N",
                    help="evaluate every N steps (and at step 0); writes OUT/evaluations.csv and the curve")
    ev.add_argument("--eval-task", action="append", choices=list(TASKS), metavar="TASK",
                    help="task to evaluate on (repeatable; default: embedded-lowshot)")
    ev.add_argument("--eval-setting", nargs="+", help="settings (default: 1img 5img; `lowshot tasks` lists them)")
    ev.add_argument("--eval-classifier", nargs="+", choices=list(CLASSIFIERS),
                    help="classifiers (default: knn logreg)")
    ev.add_argument("--eval-images", type=_at_least(1), metavar="N",
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
                    help="figure1: ± std bars over seeds (default) or shaded 95 %% intervals of the cells")
    pl.set_defaults(func=cmd_plot)


def _report_arguments(rp) -> None:
    rp.add_argument("results", nargs="?", default="results/runs",
                    help="results directory of `lowshot bench` (default: results/runs)")
    rp.add_argument("--out", help="the HTML file to write (default: RESULTS/report.html)")
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


ARGUMENTS = {"models": _models_arguments, "tasks": _tasks_arguments, "bench": _bench_arguments,
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

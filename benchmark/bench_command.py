"""`lowshot bench`: its options and the run of models x tasks -- datasets read and checked, the plan of every
(model, task) printed before any work, then the runner (`benchmark.runner.run_task`) on each, the end-of-run table,
leaderboard and figures. With --launcher / --shard the grid goes to `benchmark.launch` instead."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowshot.model_zoo.errors import BadInputError, MissingFileError, one_line

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


def cmd_bench(args) -> int:
    from . import distributed
    from .launch import launch, launcher_requested

    if launcher_requested(args):  # the grid as jobs (or one shard of it); each unit is a `_bench` of its own
        return launch(args, resolve_models(args.model, args.data_root is None), check_settings, _bench)
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


def parse_device(value: str) -> str:
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


def at_least(minimum: int):
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

    return capped_workers(at_least(0)(value), "--workers")


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


def check_settings(asked: list[str] | None, task_names: list[str]) -> None:
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
    from lowshot.tasks.registry import TaskOptions, embedded_tasks, expand, real_tasks

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
    asked = expand(args.task) if args.task else [(n, False) for n in (embedded_tasks() if embedded else real_tasks())]
    built = build_tasks(asked, TaskOptions(args.data_root, args.splits, args.custom_splits), args.setting)
    planned = []  # before any work: every model x task's records and feature sets
    load = dict(method=args.method, num_heads=args.num_heads, layout=args.layout, weights=args.weights,
                device=args.device, bf16=args.bf16, trust=args.trust_checkpoint, weights_file=args.weights_file,
                arch=args.arch)
    for spec in expand_models(resolve_models(args.model, embedded)):  # one model in memory at a time
        model = load_spec(spec, **load)
        planned.append((spec, [(task, plan_task(task, model, ctx)) for task in built]))
        del model
    if rank == 0:
        print(plan_text([plan for _, plans in planned for _, plan in plans]), flush=True)
    written = []
    for spec, plans in planned:
        model = load_spec(spec, again=True, **load) if any(plan.todo for _, plan in plans) else None
        for task, plan in plans:
            if rank == 0:
                print(f"== {plan.model} on {task.name}", flush=True)
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


def build_tasks(asked: list[tuple[str, bool]], opts, settings=None, skipped=print) -> list:
    """The runnable tasks of `asked` ((task, asked for by name), `tasks.registry.expand`), their data read and checked
    before any model runs: a task asked for by name must have its data; a group's member without it is skipped
    (`skipped(line)` says so). `settings` (--setting) are checked against the declarations first, reading no data."""
    from lowshot.tasks.registry import get_task

    check_settings(settings, [n for n, _ in asked])
    built = []
    for name, by_name in asked:
        try:
            built.append(get_task(name).build(opts))
        except FileNotFoundError as e:
            if by_name:
                raise MissingFileError(f"{name}: {one_line(e)}") from None
            skipped(f"skipping {name}: {one_line(e)}")
    if not built:
        raise MissingFileError(f"no task to run: no dataset found under {opts.data_root}")
    return built


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


def bench_arguments(b) -> None:
    from lowshot.model_zoo import FEATURES, METHODS
    from lowshot.model_zoo.formats import LAYOUTS
    from lowshot.model_zoo.registry import GENERIC_METHOD
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
    b.add_argument("--method", choices=sorted([*METHODS, GENERIC_METHOD]),
                   help=f"evaluation rules for a checkpoint file; {GENERIC_METHOD}: a plain timm state dict, read as "
                   "the timm architecture --arch names, with that architecture's own data config and feature")
    b.add_argument("--arch", help="the timm architecture of plain timm state-dict checkpoint files (the generic method "
                   f"{GENERIC_METHOD}; implies --method {GENERIC_METHOD}), with its pretrained tag and build options: "
                   "vit_small_patch16_224, vit_small_patch16_224.dino:img_size=64")
    b.add_argument("--num-heads", type=at_least(1), help="attention heads of a checkpoint file (not inferable)")
    b.add_argument("--layout", choices=sorted(LAYOUTS), help="force the checkpoint layout instead of detecting it")
    b.add_argument("--weights", default="teacher", choices=["teacher", "student"],
                   help="which network of a DINO/iBOT/MSN checkpoint to evaluate (default: teacher, as the official "
                   "evaluation code)")
    b.add_argument("--weights-file", help="local weights for a timm:<name> model (instead of the hub), or the "
                   "downloaded file of a registry entry without a URL (DINOv3; its release-name hash is checked)")
    b.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary pickled objects (unsafe)")
    b.add_argument("--device", default="auto", type=parse_device,
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda when CUDA is available, else cpu)")
    b.add_argument("--bf16", action="store_true", help="bf16 autocast for extraction, on CUDA or CPU (the features "
                   "differ from fp32 ones by up to 3 %% per image; recorded as precision bf16 in the identity)")
    b.add_argument("--batch-size", type=at_least(1), default=64, help="images per extraction batch (default 64)")
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

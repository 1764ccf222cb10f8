"""What one `--model` value means: a model, or a series of checkpoints, with a name and its training step.

    --model dino-tiny                                   a registry name (or path, timm:, hf:, py:) as before
    --model runs/a/backbone.safetensors:name=mc-a       the model, recorded as `mc-a`
    --model 'runs/a/ckpt-*.pth:name=mc-a'               every matching file (quote the glob for the shell): a
                                                        series of run `mc-a`, each checkpoint recorded as
                                                        `mc-a@step<N>` (or `mc-a@epoch<N>`) with its step
    --model 'runs/a/ckpt-*.pth:name=mc-a:step=from-name' the step read from the file name even where the file
                                                        stores one
    --model timm:vit_small_patch16_224:img_size=64:name=s64  timm build options (`timm.create_model` keyword
                                                        arguments; model_zoo/timm_models.py), part of the identity
    --model 'runs/a/ckpt-*.pth:name=a' --arch vit_small_patch16_224   plain timm state dicts: the generic method

Options follow the model after `:`, each `key=value`: name and step are the model's, any other key is a build
option of a `timm:` name (kept with it, in any order); a model's own colons (`timm:`, `py:m:f`) stay its own.
The step of a checkpoint comes from the file where its layout stores one (`lowshot pretrain` backbones: steps
done; DINO / iBOT full checkpoints and MSN's: the epoch; see `model_zoo.loading.training_step`), else from the file
name (`step1000`, `ep30`, `epoch_0030`, `checkpoint0040`); it is recorded in every record with where it
came from. Models are loaded one at a time, when their turn comes (`load_spec`).
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass, replace
from pathlib import Path

from lowshot.model_zoo.errors import BadInputError, MissingFileError

OPTIONS = ("name", "step")
GLOB_CHARS = set("*?[")
OPTION_KEY = re.compile(r"[a-z_][a-z0-9_]*")
STEP_IN_NAME = re.compile(r"(?:^|[^a-z])(step|steps|it|iter|ep|epoch|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSpec:
    source: str  # what `load_model` takes
    name: str | None = None  # the name records carry (None: the loader's)
    run: str = ""  # the series it belongs to
    step: dict | None = None  # {"value", "unit", "from"} read from the file name, when asked or needed


def split_options(value: str) -> tuple[str, dict]:
    """`path:name=x:step=from-name` -> ("path", {"name": "x", "step": "from-name"}); other `key=value` options are
    build options of a `timm:` name and stay with it: `timm:a:name=x:img_size=64` -> ("timm:a:img_size=64", ...)."""
    options, build, given = {}, [], value
    while True:
        head, sep, tail = value.rpartition(":")
        key, eq, option = tail.partition("=")
        if not sep or not eq or not OPTION_KEY.fullmatch(key):
            break
        if key in options:
            raise BadInputError(f"--model {given}: option {key}= given twice")
        if key in OPTIONS:
            options[key] = option
        else:
            build.insert(0, tail)
        value = head
    if build and not value.startswith("timm:"):
        raise BadInputError(f"--model {given}: {', '.join(build)}: build options go with a timm:<name> model; for "
                            "checkpoint files of a timm architecture give them with it: --arch ARCH:img_size=64")
    value = ":".join([value, *build])
    if "step" in options and options["step"] != "from-name":
        raise BadInputError(f"--model ...:step={options['step']}: the only choice is step=from-name (the step "
                            "is otherwise read from the file, or from its name when the file stores none)")
    if "name" in options and not options["name"]:
        raise BadInputError(f"--model {value}:name=: give the name after name=")
    return value, options


def step_from_name(path: str | Path) -> dict | None:
    """{"value", "unit", "from": "file name"} of the last step / epoch number in a checkpoint's file name, or None."""
    matches = list(STEP_IN_NAME.finditer(Path(path).name))
    if not matches:
        return None
    word, number = matches[-1].group(1).lower(), int(matches[-1].group(2))
    return {"value": number, "unit": "epoch" if word.startswith("ep") else "step", "from": "file name"}


def expand_model(value: str) -> list[ModelSpec]:
    """The models one `--model` value means (several for a glob)."""
    source, options = split_options(value)
    name = options.get("name")
    if not GLOB_CHARS & set(source):
        step = step_from_name(source) if options.get("step") else None
        return [ModelSpec(source, name, name or "", step)]
    files = sorted(glob.glob(str(Path(source).expanduser())))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise MissingFileError(f"--model {value}: no file matches {source}")
    run = name or Path(source).parent.name or "series"
    specs = [ModelSpec(f, None, run, step_from_name(f) if options.get("step") else None) for f in files]
    if len(specs) == 1:
        return [replace(specs[0], name=name)]
    return specs


def series_name(run: str, step: dict | None, path: str) -> str:
    """`run@step1000` (or `run@epoch30`); `run/<file name>` when the step is not known."""
    return f"{run}@{step['unit']}{step['value']}" if step else f"{run}/{Path(path).name}"


def series_of(name: str) -> tuple[str, float] | None:
    """(run, step) of a model named by `series_name` (`run@step1000`), else None."""
    match = re.fullmatch(r"(.+)@(?:step|epoch)(\d+)", name)
    return (match.group(1), float(match.group(2))) if match else None


def load_spec(spec: ModelSpec, again: bool = False, **load_kwargs):
    """Load one model of a spec (`model_zoo.load_model` arguments), named and with its training step. `again`: it
    was loaded before in this run (to plan it), and its warnings were shown then."""
    import warnings

    from lowshot.model_zoo import load_model
    from lowshot.model_zoo.errors import LowshotWarning

    with warnings.catch_warnings():
        if again:
            warnings.simplefilter("ignore", LowshotWarning)
        model = load_model(spec.source, **load_kwargs)
    step = spec.step or model.info.training_step or (step_from_name(spec.source) if Path(spec.source).is_file()
                                                     else None)
    if spec.name:
        name = spec.name
    elif spec.run:  # a checkpoint of a series
        name = series_name(spec.run, step, spec.source)
    else:
        name = model.info.name
    model.info = replace(model.info, name=name, run=spec.run, training_step=step)
    return model


def expand_models(values: list[str]) -> list[ModelSpec]:
    """The models of every `--model` value, in order; names given twice are refused before anything loads."""
    specs = [spec for value in values for spec in expand_model(value)]
    check_unique_names(specs)
    return specs


def check_unique_names(specs: list[ModelSpec]) -> None:
    """Two models of one run must not share a name (their records would be mixed): said before anything loads."""
    named = [s.name for s in specs if s.name]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise BadInputError(f"--model: the name(s) {twice} are given to several models; give each its own")

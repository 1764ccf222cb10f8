"""Models from other sources: `timm:<name>`, `hf:<repo or directory>`, `py:<module>:<factory>`.

Each gives a token backbone (model_zoo/backbones.py), its evaluation config (normalisation and interpolation from
the source's own data config) and provenance: the sha256 of the weights file actually loaded and the hub revision
when known (`py:` models: a digest of the module's weights and of its source file), so two sources of "the same"
model never share cached features or records.

`py:` contract: `factory()` returns a timm token model (used as `timm:` models are), or `(module, TokenAdapter)`.
A module held in memory (`lowshot.evaluate(module)`) is read the same way (`in_memory_source`); its identity is
the digest of its weights and adapter. A `py:` module without a source file (defined in a notebook) is identified
by its weights alone, and its provenance says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import download
from .backbones import Backbone, TimmBackbone
from .errors import BadInputError, MissingFileError, UnknownNameError
from .errors import first_line as _first_line
from .extractor import ModelInfo
from .formats import Architecture
from .registry import IMAGENET_MEAN, IMAGENET_STD, EvalConfig
from .safe_load import load_checkpoint
from .timm_models import build_record, check_known, data_config, parse_arch, timm_backbone

SOURCE_PREFIXES = ("timm:", "hf:", "py:")


@dataclass(frozen=True)
class TokenAdapter:
    """How the suite reads tokens from your own module (`py:` models). `block_outputs(model, images, k)` returns
    the token sequences [B, P + N, D] after each of the last k blocks (k <= depth), oldest first, before the
    final norm; the first `num_prefix_tokens` tokens are the CLS token (when `has_class_token`) and registers."""
    block_outputs: Callable[[torch.nn.Module, torch.Tensor, int], list]
    embed_dim: int
    depth: int
    norm: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None  # final norm; None: identity
    num_prefix_tokens: int = 1
    has_class_token: bool = True
    patch_size: int | None = None  # input sizes must be multiples of it (None: not checked)
    interpolation: str = "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


class AdaptedBackbone(Backbone):
    def __init__(self, module: torch.nn.Module, adapter: TokenAdapter):
        super().__init__()
        self.module, self.adapter = module, adapter
        self.num_prefix_tokens, self.has_class_token = adapter.num_prefix_tokens, adapter.has_class_token
        self.patch_size, self.embed_dim, self.depth = adapter.patch_size, adapter.embed_dim, adapter.depth

    @property
    def device(self):
        return next(self.module.parameters(), torch.empty(0)).device

    def block_outputs(self, x, keep_last):
        self.check_size(*x.shape[-2:])
        outs = list(self.adapter.block_outputs(self.module, x, keep_last))
        if len(outs) != keep_last or any(o.ndim != 3 or o.shape[-1] != self.embed_dim for o in outs):
            raise BadInputError(f"TokenAdapter.block_outputs returned {[tuple(o.shape) for o in outs]}; expected "
                                f"{keep_last} tensors [B, tokens, {self.embed_dim}]")
        return outs

    def norm(self, tokens):
        return tokens if self.adapter.norm is None else self.adapter.norm(self.module, tokens)


class HFBackbone(Backbone):
    """A Hugging Face vision transformer (AutoModel): hidden states are the block outputs before the final norm."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        config = model.config
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.patch_size = int(config.patch_size)
        self.embed_dim = int(config.hidden_size)
        self.depth = int(config.num_hidden_layers)
        self._norm = getattr(model, "layernorm", None) or getattr(model, "norm", None)
        if self._norm is None:
            raise BadInputError(f"{type(model).__name__} has no final norm (layernorm / norm): not a ViT backbone")
        params = inspect.signature(model.forward).parameters
        self._kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in params else {}
        self._mae = "noise" in params  # ViTMAE: keep every patch, in order (mask_ratio 0, increasing noise)
        if self._mae:
            config.mask_ratio = 0.0

    def block_outputs(self, x, keep_last):
        self.check_size(*x.shape[-2:])
        kwargs = dict(self._kwargs)
        if self._mae:
            n = (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)
            kwargs["noise"] = torch.arange(n, dtype=torch.float32, device=x.device).expand(x.shape[0], -1)
        out = self.model(pixel_values=x, output_hidden_states=True, **kwargs)
        return list(out.hidden_states[-keep_last:])

    def norm(self, tokens):
        return self._norm(tokens)

    def pooled(self, last_normed):
        pooler = getattr(self.model, "pooler", None)
        return pooler(last_normed) if pooler is not None else last_normed[:, 0]


def load_source(name: str, weights_file=None, progress: bool = True, trust: bool = False):
    """`timm:` / `hf:` / `py:` name -> (backbone, EvalConfig, ModelInfo). `trust` (CLI `--trust-checkpoint`) lets
    an `hf:` directory run its own code (`auto_map`) and unpickle more than tensors; without it neither happens.
    A `timm:` name may carry build options (`timm:vit_small_patch16_224:img_size=64`; model_zoo/timm_models.py)."""
    kind, _, rest = name.partition(":")
    if not rest:
        raise BadInputError(f"--model {name}: name the model after the prefix ({kind}:<name>)")
    if weights_file and kind != "timm":
        raise BadInputError(f"--weights-file goes with timm:<name>; {kind}: models bring their own weights")
    build = ()
    if kind == "timm":
        arch, options = parse_arch(rest, f"--model {name}")
        build = build_record(arch, options)
        made = _timm(arch, options, f"timm:{rest}", weights_file, trust)
    else:
        made = {"hf": _hf, "py": _py}[kind](rest, weights_file, progress, trust)
    backbone, interpolation, mean, std, checkpoint, digest, revision = made
    config, info = _describe(backbone, kind, name, interpolation, mean, std, checkpoint, digest, revision, kind,
                             build)
    return backbone, config, info


def timm_file_source(path: Path, spec: str, digest: str, trust: bool = False):
    """A plain timm state dict file read as architecture `spec` (`--arch`; the generic method `timm`) ->
    (backbone, EvalConfig, ModelInfo): the architecture's own data config and feature, as `timm:<spec>`."""
    arch, options = parse_arch(spec, f"--arch {spec}")
    backbone, interpolation, mean, std = timm_backbone(arch, options, path, trust, f"--arch {spec}")
    config, info = _describe(backbone, "timm", path.name, interpolation, mean, std, str(path), digest, "", "file",
                             build_record(arch, options), layout="timm")
    return backbone, config, info


def in_memory_source(module: torch.nn.Module, adapter: TokenAdapter | None = None, name: str | None = None):
    """A module held in memory (a notebook's, a training loop's) -> (backbone, EvalConfig, ModelInfo), read as a
    `py:` factory's module is (a timm token model as timm runs it, or any module through its `TokenAdapter`). Its
    identity is a digest of its weights and of its adapter: the same module after a training step is another
    model, and never shares cached features or records with what it was."""
    backbone, interpolation, mean, std = _module_backbone(module, adapter, "the module")
    weights = state_digest(module)
    identity = hashlib.sha256(f"{weights}:{adapter_digest(adapter)}".encode()).hexdigest() if adapter else weights
    name = name or f"{type(module).__name__}-{identity[:8]}"
    revision = "in memory: weights digest" + (" + adapter digest" if adapter else "")
    config, info = _describe(backbone, "py", name, interpolation, mean, std, f"<in memory: {type(module).__name__}>",
                             identity, revision, "memory")
    return backbone, config, info


def adapter_digest(adapter: TokenAdapter) -> str:
    """What decides a TokenAdapter's tokens: its numbers and, for each function, its qualified name and source (when
    Python can read it; a function typed into an interpreter has none, then only its name counts)."""
    parts = []
    for key, value in sorted(vars(adapter).items()):
        if callable(value):
            try:
                code = inspect.getsource(value)
            except (OSError, TypeError):
                code = ""
            parts.append(f"{key}={getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}:{code}")
        else:
            parts.append(f"{key}={value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _describe(backbone, method: str, name: str, interpolation, mean, std, checkpoint: str, digest: str, revision: str,
              source: str, build: tuple = (), layout: str | None = None):
    """The evaluation config (the model's own feature, normalisation and interpolation) and provenance of a
    backbone from another source; `build`: the timm architecture and build options, part of its identity."""
    feature = backbone.own_feature
    config = EvalConfig(method, feature, "model", interpolation, "concat" if backbone.has_class_token else None,
                        eval_weights="model", knn_feature=feature, mean=tuple(mean), std=tuple(std))
    arch = Architecture(backbone.embed_dim, backbone.depth, backbone.patch_size or 0, 0, 0.0, False,
                        num_registers=backbone.num_prefix_tokens - int(backbone.has_class_token), position="model")
    info = ModelInfo(name, method, checkpoint, digest, layout or method, "model", arch, 0, source=source,
                     revision=revision, build=build)
    return config, info


def _timm(arch: str, options: dict, what: str, weights_file, trust: bool = False):
    revision = ""
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise MissingFileError(f"--weights-file {path}: no such file")
    else:
        check_known(arch, what)  # before the hub is asked
        path, revision = _timm_weights(arch)
    backbone, interpolation, mean, std = timm_backbone(arch, options, path, trust, what)
    return backbone, interpolation, mean, std, str(path), download.sha256_file(path), revision


def _timm_weights(name: str) -> tuple[Path, str]:
    """The weights file of a pretrained timm model from the Hugging Face hub (or its local cache)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        raise MissingFileError(f"timm:{name} has no weights on the Hugging Face hub; pass --weights-file FILE")
    hub_id = hub_id.removeprefix("hf-hub:")
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    path = _hub_file(hub_id, filename, f"timm:{name}", "--weights-file FILE")
    return path, _revision(path)


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (one TCP connection, `timeout` seconds), or None. Without it, an
    offline machine waits for the hub client's retries (about 28 s) before the same error."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as e:
        return f"{url.hostname}: {e.strerror or type(e).__name__}"
    return None


def _hub_file(repo: str, filename: str, what: str, instead: str) -> Path:
    from huggingface_hub import hf_hub_download

    offline = _hub_unreachable()
    try:  # offline: the local cache only, at once
        return Path(hf_hub_download(repo, filename, local_files_only=offline is not None))
    except Exception as e:  # offline, unknown repo, gated: the hub raises many kinds
        if offline:
            raise MissingFileError(f"{what}: could not fetch {filename} of {repo} from the Hugging Face hub (offline: "
                                   f"{offline}; not in the local cache); download it on a machine with network and "
                                   f"pass {instead}") from e
        raise MissingFileError(f"{what}: could not fetch {filename} of {repo} from the Hugging Face hub "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); "
                               f"download it on a machine with network and pass {instead}") from None


def _revision(path: Path) -> str:
    """The commit of a hub cache snapshot (`.../snapshots/<commit>/file`), else ''."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else ""


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _hf(repo: str, weights_file, progress: bool, trust: bool = False):
    try:
        import transformers
    except ImportError:
        raise MissingFileError("hf: models need the transformers package: pip install 'lowshot-bench[hf]'") from None
    directory = Path(repo).expanduser()
    if not directory.is_dir():
        if repo.startswith((".", "/", "~")) or repo.count("/") != 1:
            raise MissingFileError(f"hf:{repo}: no such directory (a hub name is <owner>/<name>)")
        config = _hub_file(repo, "config.json", f"hf:{repo}", "hf:DIRECTORY (huggingface-cli download "
                           f"{repo} --local-dir DIRECTORY)")
        directory = config.parent
        for i, name in enumerate(HF_WEIGHTS):  # the first weights file the repository has
            try:
                _hub_file(repo, name, f"hf:{repo}", "hf:DIRECTORY")
                break
            except MissingFileError:
                if i == len(HF_WEIGHTS) - 1:
                    raise
        with contextlib.suppress(MissingFileError):  # optional: without it, ImageNet normalisation
            _hub_file(repo, "preprocessor_config.json", f"hf:{repo}", "hf:DIRECTORY")
    weights = next((directory / n for n in HF_WEIGHTS if (directory / n).exists()), None)
    if weights is None:
        raise MissingFileError(f"hf:{repo}: no {' or '.join(HF_WEIGHTS)} in {directory}")
    has_processor = (directory / "preprocessor_config.json").exists()
    for name in ("config.json", "preprocessor_config.json") if has_processor else ("config.json",):
        _refuse_custom_code(directory / name, repo, trust)
    # trust_remote_code is always given: transformers would otherwise ask on the terminal (and run the code on 'y')
    options = dict(trust_remote_code=trust)
    # a pickle is read by the suite's own safe loader (refused unless trusted), never by transformers' torch.load
    state = None if weights.suffix == ".safetensors" else _pickled_state(weights, trust)
    try:
        if state is None:
            model = transformers.AutoModel.from_pretrained(str(directory), **options)
        else:
            config = transformers.AutoConfig.from_pretrained(str(directory), **options)
            with torch.device("meta"):  # only its class: which AutoModel the config maps to
                model_class = type(transformers.AutoModel.from_config(config, **options))
            model = model_class.from_pretrained(None, config=config, state_dict=state)
        backbone = HFBackbone(model)
    except Exception as e:  # the directory's files decide what transformers raises (SafetensorError, ValueError...)
        raise BadInputError(f"hf:{repo}: transformers cannot load {directory} as a vision transformer "
                            f"({type(e).__name__}: {_first_line(e)})") from e
    mean, std, interpolation = IMAGENET_MEAN, IMAGENET_STD, "bicubic"
    if has_processor:
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(str(directory), **options)
            mean, std = tuple(map(float, processor.image_mean)), tuple(map(float, processor.image_std))
            resample = int(getattr(processor, "resample", 3))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInputError(f"hf:{repo}: {directory / 'preprocessor_config.json'} is not an image processor "
                                f"config with image_mean, image_std ({type(e).__name__}: {_first_line(e)})") from e
        interpolation = {2: "bilinear", 3: "bicubic", 0: "nearest"}.get(resample, "bicubic")
    return backbone, interpolation, mean, std, str(weights), download.sha256_file(weights), _revision(weights)


def _pickled_state(weights: Path, trust: bool) -> dict:
    state = load_checkpoint(weights, trust=trust)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(f"{weights}: not a state dict (a mapping of names to tensors)")
    return state


def _refuse_custom_code(config_file: Path, repo: str, trust: bool) -> None:
    """A config with an `auto_map` names Python files of the directory that transformers would import: refused
    unless the user trusts the directory."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"hf:{repo}: {config_file} is not a JSON file ({_first_line(e)})") from e
    if isinstance(config, dict) and config.get("auto_map") and not trust:
        raise BadInputError(f"hf:{repo}: {config_file} has an auto_map: loading it runs Python code of "
                            f"{config_file.parent}; refused. If you trust that directory, pass --trust-checkpoint")


def _kinds(made) -> str:
    return f"({', '.join(type(m).__name__ for m in made)})" if isinstance(made, tuple) else type(made).__name__


def _py(target: str, weights_file, progress: bool, trust: bool = False):
    module_name, _, factory_name = target.partition(":")
    if not factory_name:
        raise BadInputError(f"py:{target}: name the factory, py:<module>:<function>")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` does: a module beside the user's shell
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingFileError(f"py:{target}: cannot import {module_name}: {e}") from e
    except Exception as e:  # a syntax error, or the module's own code failing on import
        raise BadInputError(f"py:{target}: importing {module_name} raised {type(e).__name__}: {_first_line(e)}") \
            from e
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UnknownNameError(f"py:{target}: {module_name} has no callable {factory_name!r}")
    try:
        made = factory()
    except Exception as e:
        raise BadInputError(f"py:{target}: the factory raised {type(e).__name__}: {_first_line(e)}") from e
    module_obj, adapter = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(module_obj, torch.nn.Module) or not isinstance(adapter, (TokenAdapter, type(None))):
        raise BadInputError(f"py:{target}: the factory returned {_kinds(made)}, not a torch.nn.Module "
                            "or a (torch.nn.Module, TokenAdapter) pair")
    backbone, interpolation, mean, std = _module_backbone(module_obj, adapter, f"py:{target}")
    source = _source_file(module)
    if source is None:  # defined in a notebook or an interpreter: no file to digest
        return (backbone, interpolation, mean, std, f"<module {module_name} without a file>", state_digest(module_obj),
                "module without a source file: identity from its weights only")
    return (backbone, interpolation, mean, std, str(source), state_digest(module_obj),
            f"module sha256 {download.sha256_file(source)[:16]}")


def _source_file(module) -> Path | None:
    """The file a Python module was read from, or None (a module made in a notebook: `inspect` raises TypeError
    "is a built-in module" for it)."""
    try:
        name = inspect.getsourcefile(module)
    except TypeError:
        return None
    return Path(name) if name and Path(name).is_file() else None


def _module_backbone(module_obj: torch.nn.Module, adapter, what: str):
    """(backbone, interpolation, mean, std) of a module: a timm token model as timm runs it (its own data config),
    any other module through its TokenAdapter."""
    if adapter is not None:
        if not isinstance(adapter, TokenAdapter):
            raise BadInputError(f"{what}: the second item of (module, adapter) is {type(adapter).__name__}, not a "
                                "lowshot.model_zoo.sources.TokenAdapter")
        return AdaptedBackbone(module_obj, adapter), adapter.interpolation, adapter.mean, adapter.std
    try:
        backbone = TimmBackbone(module_obj)  # a timm token model needs no adapter
    except (TypeError, AttributeError) as e:
        raise BadInputError(f"{what}: a {type(module_obj).__name__}, not a timm token model ({_first_line(e)}); pass "
                            "(module, TokenAdapter(...)) to say how to read its tokens") from e
    return (backbone, *data_config(module_obj))


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): its weights' identity without a file."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

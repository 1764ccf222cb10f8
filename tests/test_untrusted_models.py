"""Untrusted model directories and files stay data: no code of an `hf:` directory runs and no pickled object is
built unless the user passes `--trust-checkpoint`; every `hf:` / `py:` mistake is one line naming the directory or
module (exit code 2 from the CLI), never a prompt, never torch's advice to load with weights_only=False."""
from __future__ import annotations

import builtins
import json
import shutil
import textwrap

import pytest
import torch

from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import BadInputError, LowshotError
from lowshot.model_zoo.safe_load import CheckpointError, UnsafeCheckpointError, load_checkpoint

from .test_faults import lowshot

transformers = pytest.importorskip("transformers", reason="hf: models need the [hf] extra (transformers)")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
             image_size=32)

CONFIGURATION = '''
import pathlib
from transformers import Dinov2Config
pathlib.Path({marker!r}).touch()  # the directory's own code ran

class CustomConfig(Dinov2Config):
    model_type = "custom-dinov2"
'''
MODELING = '''
from transformers import Dinov2Model
from .configuration_custom import CustomConfig

class CustomModel(Dinov2Model):
    config_class = CustomConfig
'''


def errors(stderr: str) -> list[str]:
    """The suite's error lines (transformers draws its own progress bars on stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("lowshot") and "warning:" not in line]


def _dinov2_dir(directory):
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(**SMALL)).save_pretrained(directory)
    return directory


@pytest.fixture
def custom_code_dir(tmp_path, monkeypatch):
    """An hf: directory whose config.json has an auto_map: its Python files would touch `ran` when imported."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where transformers copies it
    directory = _dinov2_dir(tmp_path / "custom")
    marker = tmp_path / "ran"
    (directory / "configuration_custom.py").write_text(CONFIGURATION.format(marker=str(marker)))
    (directory / "modeling_custom.py").write_text(MODELING)
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="custom-dinov2", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                        "AutoModel": "modeling_custom.CustomModel"})
    (directory / "config.json").write_text(json.dumps(config))
    return directory, marker


def _answer(monkeypatch, answer: str) -> list:
    """Answer any terminal prompt with `answer`; returns the prompts asked."""
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or answer)
    return asked


def test_hf_custom_code_never_runs_without_trust_even_if_a_prompt_is_answered_yes(custom_code_dir, monkeypatch):
    directory, marker = custom_code_dir
    asked = _answer(monkeypatch, "y")
    with pytest.raises(BadInputError, match=f"{directory}.*auto_map.*--trust-checkpoint"):
        load_model(f"hf:{directory}")
    assert not marker.exists() and not asked
    code, _, err = lowshot(["bench", "--model", f"hf:{directory}", "--task", "embedded-lowshot", "--quiet",
                            "--results", str(directory.parent / "results"), "--cache", str(directory.parent / "c")])
    assert code == 2 and len(errors(err)) == 1 and "--trust-checkpoint" in err and str(directory) in err
    assert not marker.exists() and not asked and not (directory.parent / "results").exists()


def test_hf_custom_code_runs_with_trust_and_without_a_prompt(custom_code_dir, monkeypatch):
    directory, marker = custom_code_dir
    asked = _answer(monkeypatch, "n")  # a prompt answered 'no' would refuse: trust must decide, not the prompt
    model = load_model(f"hf:{directory}", trust=True)
    assert marker.exists() and not asked
    assert type(model.backbone.model).__name__ == "CustomModel"
    assert model.extract(torch.randn(1, 3, 32, 32), ["cls"])["cls"].shape == (1, 32)


class Touch:
    """Unpickling this creates a file (as os.system would run a command), then stands for a tensor."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({self.marker!r}).touch() or __import__('torch').zeros(1)",))


def test_hf_pickled_weights_refused_with_the_global_and_the_flag_never_torchs_advice(tmp_path):
    directory = _dinov2_dir(tmp_path / "pickled")
    state = transformers.Dinov2Model(transformers.Dinov2Config(**SMALL)).state_dict()
    (directory / "model.safetensors").unlink()
    torch.save({**state, "extra": Touch(tmp_path / "ran")}, directory / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_model(f"hf:{directory}")
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "eval" in message and "--trust-checkpoint" in message
    assert "weights_only" not in message and "\n" not in message and not (tmp_path / "ran").exists()
    load_model(f"hf:{directory}", trust=True)  # the opt-in: the object is built
    assert (tmp_path / "ran").exists()


def test_refused_release_pickle_names_the_global_and_the_flag(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Touch(tmp_path / "ran")}, path)
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "eval" in message and "--trust-checkpoint" in message and "weights_only" not in message
    assert not (tmp_path / "ran").exists()


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage", ["unknown model_type", "not a vision transformer", "config not JSON",
                                    "corrupt weights"])
def test_hf_load_failures_are_one_line_naming_the_directory(tmp_path, damage):
    directory = _dinov2_dir(tmp_path / "model")
    if damage == "unknown model_type":
        _edit_config(directory, model_type="nonesuch")
    elif damage == "not a vision transformer":
        shutil.rmtree(directory)
        transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=32)).save_pretrained(directory)
    elif damage == "config not JSON":
        (directory / "config.json").write_text("{not json")
    else:
        (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(LowshotError) as caught:
        load_model(f"hf:{directory}")
    assert str(directory) in str(caught.value) and "\n" not in str(caught.value)
    code, _, err = lowshot(["bench", "--model", f"hf:{directory}", "--task", "embedded-lowshot", "--quiet",
                            "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])
    assert code == 2 and len(errors(err)) == 1 and "Traceback" not in err
    with pytest.raises(LowshotError) as debug:  # --debug: the traceback, with the cause kept
        lowshot(["bench", "--debug", "--model", f"hf:{directory}", "--task", "embedded-lowshot", "--quiet",
                 "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])
    assert debug.value.__cause__ is not None


def test_safetensors_whose_config_metadata_is_not_json_is_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "mine.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"config": "{method: dino"})
    with pytest.raises(CheckpointError, match=f"{path}: its 'config' metadata is not JSON"):
        load_checkpoint(path)
    code, _, err = lowshot(["bench", "--model", str(path), "--task", "embedded-lowshot", "--quiet",
                            "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])
    assert code == 2 and len(errors(err)) == 1 and "metadata is not JSON" in err


PY_MODULE = '''
import torch

def raises():
    raise RuntimeError("no GPU here")

def wrong_pair():
    return torch.nn.Linear(2, 2), "not an adapter"

def plain_module():
    return torch.nn.Linear(2, 2)

def needs_an_argument(depth):
    return None
'''


@pytest.fixture
def py_module(tmp_path, monkeypatch):
    (tmp_path / "hostile_models.py").write_text(textwrap.dedent(PY_MODULE))
    (tmp_path / "broken_syntax.py").write_text("def make(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("target, says", [
    ("hostile_models:raises", "raised RuntimeError: no GPU here"),
    ("hostile_models:wrong_pair", "TokenAdapter"),
    ("hostile_models:needs_an_argument", "raised TypeError"),
    ("hostile_models:plain_module", "not a timm token model"),
    ("broken_syntax:make", "SyntaxError"),
])
def test_py_factory_mistakes_are_one_line_naming_the_module(py_module, target, says):
    with pytest.raises(LowshotError) as caught:
        load_model(f"py:{target}")
    message = str(caught.value)
    assert message.startswith(f"py:{target}") and says in message and "\n" not in message
    code, _, err = lowshot(["bench", "--model", f"py:{target}", "--task", "embedded-lowshot", "--quiet",
                            "--results", str(py_module / "results"), "--cache", str(py_module / "cache")])
    assert code == 2 and len(errors(err)) == 1 and "Traceback" not in err

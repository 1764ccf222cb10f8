"""Every reference tensor of every official-layout fixture, from every checkpoint file, at every input, to 1e-5.

The references were computed by each method's official code; see ../shared/fixtures/official_checkpoints.
Nothing here depends on the fixtures' sizes: dims are inferred from the files, num_heads read from config.json.
"""
from __future__ import annotations

import json

import pytest
import torch

from lowshot.model_zoo import METHODS, load_model
from lowshot.model_zoo.formats import detect_layout
from lowshot.model_zoo.safe_load import load_checkpoint

from .conftest import FIXTURES

TOL = 1e-5
# expected.pt key -> (feature name(s) of the interface, which encoder of the file)
KEY_MAP = {
    "cls_norm": ("cls", "teacher"),
    # DINOv2 / DINOv3 (create_linear_input: n1 = last-block CLS, avgpool = [cls, mean patch] concatenated)
    "reg_norm": ("registers", "teacher"),
    "cls_prenorm": ("cls_prenorm", "teacher"),
    "linear_n1": ("cls", "teacher"),
    "linear_n1_avgpool": (("cls_avgpool", "linear_avgpool"), "teacher"),
    "linear_n4_avgpool": ("cls_last4_avgpool", "teacher"),
    "patch_norm": ("patch", "teacher"),
    "cls_last4_norm": ("cls_last4", "teacher"),
    "dino_linear_n1_avgpool": ("linear_avgpool", "teacher"),
    "ibot_linear_n1_avgpool2": ("linear_avgpool", "teacher"),
    "mae_avgpool": ("linear_avgpool", "teacher"),
    "mae_cls_norm": ("cls", "teacher"),
    "msn_forward_blocks1": ("cls_prenorm", "teacher"),
    "student_cls_norm": ("cls", "student"),
    "student_patch_norm": ("patch", "student"),
    "encoder_cls_norm": ("cls", "student"),
}
EXPECTED_LAYOUT = {
    "dino_pretrain.pth": "dino_backbone", "dino_pretrain_full_checkpoint.pth": "dino_full",
    "checkpoint_teacher.pth": "ibot_teacher", "checkpoint_teacher_with_head.pth": "ibot_teacher_with_head",
    "checkpoint.pth": "ibot_full", "mae_pretrain.pth": "mae_encoder", "mae_pretrain_full.pth": "mae_full",
    "msn_pretrain.pth.tar": "msn",
}
FULL = {"dino_full", "ibot_full", "msn"}


def _cases():
    if not FIXTURES.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"official fixtures not found at {FIXTURES} (../shared beside the checkout)"))]
    cases = []
    for method_dir in sorted(p for p in FIXTURES.iterdir() if (p / "expected.pt").exists()):
        # A family the zoo does not know yet is skipped by name: never failed, never passed silently.
        unknown = [] if method_dir.name in METHODS else [pytest.mark.skip(
            reason=f"the model zoo has no {method_dir.name!r} family yet (fixture folder {method_dir})")]
        for f in sorted(method_dir.glob("*.pth*")):
            cases.append(pytest.param(method_dir.name, f.name, id=f"{method_dir.name}/{f.name}", marks=unknown))
    return cases


SUFFIXES = {"input": "", "input_interp": "_interp", "input_rect": "_rect"}  # config.json key -> expected.pt suffix


def _key_prefix(config: dict, file_name: str) -> str:
    """DINOv2's register file has its keys prefixed 'reg_' (its config.json says so for that file)."""
    return "reg_" if "with prefix 'reg_'" in config.get("files", {}).get(file_name, "") else ""


@pytest.mark.parametrize("method,file_name", _cases())
def test_every_reference_tensor(method, file_name):
    directory = FIXTURES / method
    config = json.loads((directory / "config.json").read_text())
    expected = torch.load(directory / "expected.pt")
    inputs = {suffix: torch.load(FIXTURES / config[key]) for key, suffix in SUFFIXES.items() if key in config}
    path = directory / file_name
    layout = detect_layout(load_checkpoint(path))
    if file_name in EXPECTED_LAYOUT:
        assert layout == EXPECTED_LAYOUT[file_name]
    prefix, others = _key_prefix(config, file_name), {_key_prefix(config, f) for f in config.get("files", {})}
    models = {}
    checked = set()
    for key, reference in expected.items():
        if not key.startswith(prefix) or (not prefix and any(p and key.startswith(p) for p in others)):
            continue  # another file's reference
        base = key.removeprefix(prefix)
        suffix = next((s for s in ("_interp", "_rect") if base.endswith(s)), "")
        features, weights = KEY_MAP[base.removesuffix(suffix)]
        if weights == "student" and layout not in FULL:
            continue  # student references come from full checkpoints only
        if weights not in models:
            models[weights] = load_model(path, method=method, num_heads=config["num_heads"], weights=weights)
        for feature in (features,) if isinstance(features, str) else features:
            out = models[weights].extract(inputs[suffix], [feature])[feature]
            assert out.shape == reference.shape, key
            err = (out - reference).abs().max().item()
            assert err <= TOL, f"{file_name} {key} ({feature}): max abs error {err:.2e}"
        checked.add(key)
    assert len(checked) >= 6
    if "input_rect" in config:  # every key of this file, at all three inputs
        assert {k.removeprefix(prefix) for k in checked} >= {k + s for k in ("cls_norm", "patch_norm")
                                                              for s in SUFFIXES.values()}


@pytest.mark.parametrize("method", ["dino", "ibot", "mae", "msn", "dinov2", "dinov3"])
def test_lowshot_feature_is_the_methods_own(method):
    directory = FIXTURES / method
    if not directory.exists():
        pytest.skip(f"official fixtures not found at {FIXTURES}")
    config = json.loads((directory / "config.json").read_text())
    path = next(directory.glob("*.pth*"))
    model = load_model(path, method=method, num_heads=config["num_heads"])
    expected = torch.load(directory / "expected.pt")
    x = torch.load(FIXTURES / config["input"])
    want = expected["msn_forward_blocks1"] if method == "msn" else expected["cls_norm"]
    assert model.eval_config.knn_feature == "cls"
    got = model.extract(x, [model.lowshot_feature])[model.lowshot_feature]
    assert (got - want).abs().max() <= TOL

"""`lowshot.evaluate` on a model held in memory: the CLI's numbers, the caller's state untouched, records kept only
when asked for; a `py:` module defined without a file (a notebook's)."""
from __future__ import annotations

import sys
import textwrap
import types
import warnings

import matplotlib
import pandas as pd
import pytest
import scipy.stats  # noqa: F401  (scipy adds a warnings filter of its own when first imported: done here)
import timm
import torch
from safetensors.torch import save_file

import lowshot
from lowshot.benchmark.cli import main
from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import BadInputError
from lowshot.model_zoo.sources import TokenAdapter, in_memory_source

RUN = dict(settings=["1img"], classifiers=["knn"])
TINY = dict(pretrained=False, img_size=64, num_classes=0, depth=2, dynamic_img_size=True)


def _training_vit():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", drop_rate=0.1, **TINY)
    vit.train()
    vit.blocks[0].eval()  # a loop may keep part of its model in eval mode ...
    vit.cls_token.requires_grad_(False)  # ... and some parameters frozen
    return vit


def test_evaluate_in_memory_gives_the_cli_scores_of_the_saved_model_and_leaves_the_caller_as_it_was(
        tmp_path, monkeypatch, capsys):
    vit = _training_vit()
    save_file(vit.state_dict(), str(tmp_path / "tiny.safetensors"))
    (tmp_path / "lowshot_saved_tiny_vit.py").write_text(textwrap.dedent(f"""
        import timm
        from safetensors.torch import load_file

        def make():
            vit = timm.create_model("vit_tiny_patch16_224", **{TINY!r})
            vit.load_state_dict(load_file({str(tmp_path / "tiny.safetensors")!r}))
            return vit
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    modes = {n: m.training for n, m in vit.named_modules()}
    grads = {n: p.requires_grad for n, p in vit.named_parameters()}
    backend, threads, filters = matplotlib.get_backend(), torch.get_num_threads(), list(warnings.filters)

    frame = lowshot.evaluate(vit, "embedded-lowshot", name="tiny", **RUN)

    assert capsys.readouterr() == ("", "")  # nothing printed without progress=True
    assert (matplotlib.get_backend(), torch.get_num_threads(), warnings.filters) == (backend, threads, filters)
    assert {n: m.training for n, m in vit.named_modules()} == modes
    assert {n: p.requires_grad for n, p in vit.named_parameters()} == grads
    vit(torch.randn(2, 3, 64, 64)).sum().backward()  # it still trains
    assert vit.cls_token.grad is None and vit.blocks[1].mlp.fc1.weight.grad is not None

    assert main(["bench", "--model", "py:lowshot_saved_tiny_vit:make", "--task", "embedded-lowshot", "--setting",
                 "1img", "--classifier", "knn", "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
                 "--workers", "0", "--quiet"]) == 0
    cli = pd.read_csv(tmp_path / "r" / "records.csv")
    assert list(frame.columns) == list(cli.columns)
    assert set(frame["model"]) == {"tiny"} and len(frame) == 3  # one record per seed of 1img
    key = ["task", "setting", "seed", "classifier"]
    ours, theirs = frame.set_index(key)["score"].sort_index(), cli.set_index(key)["score"].sort_index()
    assert ours.index.equals(theirs.index)
    assert (ours.values == theirs.values).all(), (ours, theirs)


def test_evaluate_keeps_records_only_in_a_results_directory_and_a_rerun_computes_nothing(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    vit = _training_vit()
    lowshot.evaluate(vit, ["embedded-lowshot"], **RUN)
    assert list(scratch.iterdir()) == []  # records and features were temporary

    first = lowshot.evaluate(vit, "embedded-lowshot", results=tmp_path / "r", cache=tmp_path / "c", **RUN)
    records = sorted((tmp_path / "r").rglob("*.json"))
    assert len(records) == 3 and any((tmp_path / "c").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in records]
    again = lowshot.evaluate(vit, "embedded-lowshot", results=tmp_path / "r", cache=tmp_path / "c", **RUN)
    assert [p.stat().st_mtime_ns for p in records] == stamps  # found done, not written again
    pd.testing.assert_frame_equal(first, again)

    with torch.no_grad():  # another step of training: another model, its records beside the first ones
        vit.blocks[1].mlp.fc2.bias.add_(0.5)
    lowshot.evaluate(vit, "embedded-lowshot", results=tmp_path / "r", **RUN)
    assert len(list((tmp_path / "r").rglob("*.json"))) == 6


def test_an_in_memory_identity_is_a_digest_of_weights_and_adapter():
    vit = _training_vit()

    def tokens(module, images, k):
        return module.forward_intermediates(images, indices=k, norm=False, output_fmt="NLC", intermediates_only=True)

    adapter = TokenAdapter(tokens, embed_dim=192, depth=2, num_prefix_tokens=0, has_class_token=False)
    plain = in_memory_source(vit)[2].sha256
    adapted = in_memory_source(vit, adapter)[2].sha256
    other_adapter = in_memory_source(vit, TokenAdapter(tokens, embed_dim=192, depth=2, num_prefix_tokens=0,
                                                       has_class_token=False, interpolation="bilinear"))[2].sha256
    assert len({plain, adapted, other_adapter}) == 3
    assert in_memory_source(vit, adapter)[2].sha256 == adapted  # a digest, not a random id
    with torch.no_grad():
        vit.norm.weight.mul_(2)
    assert in_memory_source(vit)[2].sha256 != plain


def test_evaluate_refuses_what_is_not_a_model():
    with pytest.raises(BadInputError, match="torch.nn.Module"):
        lowshot.evaluate(42, "embedded-lowshot", **RUN)
    with pytest.raises(BadInputError, match="TokenAdapter"):
        lowshot.evaluate(torch.nn.Linear(2, 2), "embedded-lowshot", **RUN)


def test_a_py_module_without_a_file_loads_with_its_weights_as_identity(monkeypatch):
    """A module defined in a notebook has no source file (`inspect` raises "is a built-in module")."""
    notebook = types.ModuleType("lowshot_notebook_models")
    exec(textwrap.dedent(f"""
        import timm
        def make():
            return timm.create_model("vit_tiny_patch16_224", **{TINY!r})
    """), notebook.__dict__)
    monkeypatch.setitem(sys.modules, notebook.__name__, notebook)
    model = load_model("py:lowshot_notebook_models:make")
    assert "without a source file" in model.info.revision and "without a file" in model.info.checkpoint
    assert len(model.info.sha256) == 64


def test_a_models_transform_is_callable_and_feeds_extract():
    from PIL import Image

    model = load_model("dino-tiny", progress=False)
    transform = model.transform(72, 64)
    image = Image.new("RGB", (100, 80), (200, 30, 90))
    x = transform(image)
    assert x.shape == (3, 64, 64) and torch.equal(x, transform.build()(image))
    assert model.extract(x.unsqueeze(0), ["cls"])["cls"].shape == (1, model.embed_dim)


def test_an_offline_hub_name_fails_at_once_without_trying_the_network(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from lowshot.model_zoo.errors import MissingFileError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    calls = []
    real = huggingface_hub.hf_hub_download

    def recording(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
    with pytest.raises(MissingFileError, match="offline: HF_HUB_OFFLINE is set; not in the local cache.*--weights-file"):
        load_model("timm:vit_small_patch16_224.dino")
    assert calls == [True]  # the local cache was looked at, the network never

"""What the user reads first: an option error is one line before anything else; messages name the CLI's flags
(`--layout`, `--num-heads`, `--method`), not Python arguments alone; an offline hub name fails at once."""
from __future__ import annotations

import errno
import socket

import pytest
import torch

from lowshot.benchmark.cli import main
from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import LowshotError, MissingFileError


@pytest.mark.parametrize("argv, says", [
    (["bench", "--model", "dino-tiny", "--workers", "many"], "lowshot bench: error: argument --workers: 'many'"),
    (["bench", "--model", "dino-tiny", "--task", "nope"], "lowshot bench: error: argument --task: invalid choice"),
    (["bench"], "lowshot bench: error: the following arguments are required: --model"),
    (["benc"], "lowshot: error: argument VERB: invalid choice: 'benc'"),
])
def test_option_errors_put_the_one_line_first(capsys, argv, says):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err.splitlines()
    assert caught.value.code == 2 and err[0].startswith(says) and len(err) <= 2
    assert not any(line.startswith("usage:") for line in err)


def _vit_file(tmp_path, **extra):
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=48,
                              depth=2, num_heads=3)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), **extra}, path)
    return path


@pytest.mark.parametrize("kwargs, flag", [
    (dict(method="dino"), "--num-heads"),
    (dict(num_heads=3), "--method"),
])
def test_messages_name_flags(tmp_path, kwargs, flag):
    path = _vit_file(tmp_path)
    with pytest.raises(LowshotError) as caught:
        load_model(path, **kwargs)
    assert flag in str(caught.value)


def test_unrecognised_layout_names_the_layout_flag(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights_of_something": {"a": torch.zeros(1)}}, path)
    with pytest.raises(LowshotError) as caught:
        load_model(path, method="dino", num_heads=3)
    assert "--layout" in str(caught.value)


def test_an_offline_hub_name_fails_at_once_without_the_clients_retries(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    asked, download = [], huggingface_hub.hf_hub_download

    def spy(*args, **kwargs):
        asked.append(bool(kwargs.get("local_files_only")))
        if not kwargs.get("local_files_only"):
            raise AssertionError("went to the network (the client retries for about 28 s offline)")
        return download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(MissingFileError, match="hf:facebook/dinov2-small: .*offline: .*Network is unreachable.*"
                                               "hf:DIRECTORY"):
        load_model("hf:facebook/dinov2-small")
    assert asked == [True]

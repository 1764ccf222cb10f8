"""The training-loop probe (`lowshot.LowShotProbe`) and `lowshot pretrain --eval-every`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch

import lowshot
from lowshot.benchmark.cli import main
from lowshot.model_zoo.errors import BadInputError
from lowshot.tasks.datasets import EvenlySpacedImages

RUN = dict(settings=["1img"], classifiers=["knn"])
# the smallest MaskCluster recipe that trains: a 1-block, 32-wide ViT on 32 px crops of 16 images
TINY_PRETRAIN = ["--steps", "2", "--batch-size", "8", "--img-size", "32", "--set", "embed_dim=32", "--set", "depth=1",
                 "--set", "num_heads=2", "--set", "max_images=16", "--log-every", "10"]


def test_a_probe_evaluates_only_on_due_steps_with_the_scores_evaluate_gives(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0, depth=2,
                            dynamic_img_size=True)
    probe = lowshot.LowShotProbe(tasks="embedded-lowshot", every=2, **RUN)
    optimizer = torch.optim.SGD(vit.parameters(), lr=0.5)
    for step in range(4):  # a plain loop: the probe is called every step and evaluates at steps 0 and 2
        frame = probe(vit, step)
        assert (frame is None) == (step % 2 == 1)
        if step == 2:
            expected = lowshot.evaluate(vit, "embedded-lowshot", **RUN)
        vit.train()
        optimizer.zero_grad()
        vit(torch.randn(4, 3, 64, 64)).pow(2).mean().backward()
        optimizer.step()
    assert list(scratch.iterdir()) == []  # no feature, no record kept
    history = probe.history
    assert sorted(set(history["step"])) == [0, 2] and len(history) == 6  # 3 seeds x 2 steps
    at2 = history[history["step"] == 2].set_index("seed")["score"].sort_index()
    assert np.array_equal(at2.values, expected.set_index("seed")["score"].sort_index().values)
    assert history[history["step"] == 0]["score"].tolist() != at2.tolist()  # the weights changed
    curve = probe.curve()
    assert curve["n_seeds"].tolist() == [3, 3]
    assert curve.loc[curve["step"] == 2, "score"].item() == pytest.approx(at2.mean())


def test_evenly_spaced_images_keep_every_class_of_a_folder_sorted_by_class():
    class Sorted:  # 10 classes x 50 images, sorted by class as an ImageFolder is
        names = [f"c{c}/{i}.jpg" for c in range(10) for i in range(50)]
        targets = np.repeat(np.arange(10), 50)
        identity, classes = "sorted", [str(c) for c in range(10)]

        def __len__(self):
            return 500

        def fingerprint(self, indices, masks=False):
            return ",".join(map(str, indices))

        def load_image(self, i):
            return self.names[i]

    subset = EvenlySpacedImages(Sorted(), 40)
    assert len(subset) == 40 and set(subset.targets) == set(range(10))
    assert subset.load_image(1) == subset.names[1] == Sorted.names[int(subset.taken[1])]
    assert subset.fingerprint([0, 1]) == f"0,{subset.taken[1]}"


def test_a_probe_refuses_a_bad_every():
    with pytest.raises(BadInputError, match="every"):
        lowshot.LowShotProbe(tasks="embedded-lowshot", every=0, **RUN)


def test_pretrain_eval_every_writes_the_curve_of_the_teacher_and_trains_the_same_weights(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "plain"), *TINY_PRETRAIN]) == 0
    assert main(["pretrain", "--out", str(tmp_path / "probed"), *TINY_PRETRAIN, "--eval-every", "2",
                 "--eval-setting", "1img", "--eval-classifier", "knn"]) == 0
    printed = capsys.readouterr().out
    assert "% of the training time" in printed
    # the probe changes nothing of the run: the same final weights, byte for byte
    assert (tmp_path / "plain" / "backbone.safetensors").read_bytes() == \
        (tmp_path / "probed" / "backbone.safetensors").read_bytes()
    curve = pd.read_csv(tmp_path / "probed" / "evaluations.csv")
    assert list(curve.columns) == ["step", "task", "setting", "classifier", "score", "n_seeds"]
    assert curve["step"].tolist() == [0, 2] and set(curve["task"]) == {"embedded-lowshot"}
    # the score at the last step is the one `lowshot bench` gives the saved teacher
    saved = lowshot.evaluate(str(tmp_path / "probed" / "backbone.safetensors"), "embedded-lowshot", **RUN)
    assert curve.loc[curve["step"] == 2, "score"].item() == pytest.approx(saved["score"].mean(), abs=5e-5)
    assert (tmp_path / "probed" / "evaluations.png").stat().st_size > 0

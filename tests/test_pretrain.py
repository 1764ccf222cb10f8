"""Pre-training (model_zoo/pretrain): masking, collapse avoidance, EMA, the five recipes, bit-identical resume,
the lowshot .safetensors layout, and the shipped tiny models."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from lowshot.model_zoo import load_model
from lowshot.model_zoo.pretrain import RECIPES, add_pretrain_arguments, config_from_args, make_config, train
from lowshot.model_zoo.pretrain.augment import MultiCrop
from lowshot.model_zoo.pretrain.backbone import encode
from lowshot.model_zoo.pretrain.checkpoint import load_training_checkpoint
from lowshot.model_zoo.pretrain.collapse import Centering, me_max, sinkhorn_knopp, teacher_targets
from lowshot.model_zoo.pretrain.masking import block_mask, corrupt, patchify, random_mask, unpatchify
from lowshot.model_zoo.pretrain.model import PretrainModel
from lowshot.model_zoo.pretrain.schedules import cosine, ema_update, step_values
from lowshot.model_zoo.pretrain.train import build_optimizer
from lowshot.model_zoo.safe_load import load_checkpoint

TINY_TEST = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, local_size=16, batch_size=8,
                 max_images=48, num_prototypes=64, patch_prototypes=32, head_hidden=64, head_bottleneck=32,
                 decoder_dim=32, decoder_depth=1, decoder_heads=2, log_every=1000, ckpt_every=1000)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: faster for these tiny tensors on a shared machine, and a fixed thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(method, **kw):
    return make_config(method, **{**TINY_TEST, **kw})


def _scenes(cfg):
    """The embedded scenes, passed in as the benchmark layer does (the model zoo knows no dataset)."""
    from lowshot.tasks.datasets.synthetic import SyntheticScenes

    return SyntheticScenes(cfg.embedded_task, "train", cfg.img_size)


# --- masking

@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.75])
def test_block_mask_exact_ratio_and_blocks(ratio):
    g = torch.Generator().manual_seed(0)
    mask = block_mask(16, 8, 8, ratio, g)
    assert mask.shape == (16, 64) and mask.dtype == torch.bool
    assert (mask.sum(1) == round(ratio * 64)).all()
    if ratio > 0.5:
        return  # most patches masked: any mask is "blocky"
    # blocks, not scattered patches: masked patches have far more masked 4-neighbours than a random mask's
    grid = mask.view(16, 8, 8).float()
    neighbours = sum(torch.roll(grid, s, d) for s in (1, -1) for d in (1, 2)) * grid
    rand = random_mask(16, 64, ratio, torch.Generator().manual_seed(0))[0].view(16, 8, 8).float()
    rand_neighbours = sum(torch.roll(rand, s, d) for s in (1, -1) for d in (1, 2)) * rand
    assert neighbours.sum() > 1.2 * rand_neighbours.sum()


def test_random_mask_keep_is_complement():
    mask, keep = random_mask(4, 16, 0.75, torch.Generator().manual_seed(1))
    assert mask.shape == (4, 16) and keep.shape == (4, 4)
    assert (mask.sum(1) == 12).all()
    assert (keep.diff(dim=1) > 0).all()  # sorted, distinct
    assert not mask.gather(1, keep).any()


def test_patchify_roundtrip_and_corrupt_only_masked():
    x = torch.randn(3, 3, 32, 32)
    assert patchify(x, 8).shape == (3, 16, 192)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 32, 32), x)
    mask = block_mask(3, 4, 4, 0.5, torch.Generator().manual_seed(0))
    for mode in ("noise", "other_image", "noise+other_image"):
        y = patchify(corrupt(x, mask, 8, mode, torch.Generator().manual_seed(0)), 8)
        assert torch.equal(y[~mask], patchify(x, 8)[~mask])
        assert (y[mask] != patchify(x, 8)[mask]).all(-1).float().mean() > 0.9
    other = patchify(corrupt(x, mask, 8, "other_image", torch.Generator()), 8)
    assert torch.equal(other[1][mask[1]], patchify(x, 8)[0][mask[1]])


def test_multicrop_views_deterministic():
    mc = MultiCrop(2, 3, 32, 16, (0.4, 1.0), (0.1, 0.4), solarize_p=0.5, channel_shuffle_p=0.5)
    images = (torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    g1, l1 = mc(images, torch.Generator().manual_seed(3))
    g2, l2 = mc(images, torch.Generator().manual_seed(3))
    assert [v.shape for v in g1] == [(5, 3, 32, 32)] * 2 and [v.shape for v in l1] == [(5, 3, 16, 16)] * 3
    assert all(torch.equal(a, b) for a, b in zip(g1 + l1, g2 + l2))
    assert not torch.equal(g1[0], g1[1])
    # full-image crop, no colour change: roi_align resamples exactly (up to the flip)
    plain = MultiCrop(1, 0, 48, 16, (1.0, 1.0), (0.1, 0.4), jitter=0.0, grayscale_p=0.0)
    view = plain.view(images.float() / 255, 48, (1.0, 1.0), torch.Generator().manual_seed(0), normalise=False)
    x = images.float() / 255
    assert all(torch.allclose(v, x[i], atol=1e-5) or torch.allclose(v, x[i].flip(-1), atol=1e-5)
               for i, v in enumerate(view))


# --- collapse avoidance

def test_sinkhorn_rows_and_columns():
    scores = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) * 2
    imbalance = lambda q: float((q.sum(0) - 32 / 8).abs().sum())  # noqa: E731
    q = sinkhorn_knopp(scores, iters=3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)  # each sample a distribution
    assert imbalance(q) < 0.3 * imbalance(torch.softmax(scores, 1))  # columns pulled towards the equal partition
    q = sinkhorn_knopp(scores, iters=30)
    assert torch.allclose(q.sum(0), torch.full((8,), 32 / 8), atol=1e-4)  # each prototype B / K
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)
    assert (q.argmax(1) == scores.argmax(1)).float().mean() > 0.5  # still follows the scores


def test_me_max_increases_entropy_of_mean_prediction():
    torch.manual_seed(0)
    logits = torch.randn(64, 16) + torch.tensor([4.0] + [0.0] * 15)  # mostly on prototype 0
    logits.requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=50.0)

    @torch.no_grad()
    def entropy_of_mean():
        p = torch.softmax(logits, 1).mean(0)
        return float(-(p * p.log()).sum())

    entropies = [entropy_of_mean()]
    for _ in range(5):
        opt.zero_grad()
        me_max(torch.softmax(logits, 1)).backward()
        opt.step()
        entropies.append(entropy_of_mean())
    assert all(b > a for a, b in zip(entropies, entropies[1:]))
    assert entropies[-1] > entropies[0] + 0.5 and entropies[-1] <= math.log(16)
    assert float(me_max(torch.softmax(logits.detach(), 1))) == pytest.approx(math.log(16) - entropies[-1], abs=1e-5)


def test_centering_and_targets():
    center = Centering(4, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    center.update(logits)
    assert torch.allclose(center.center, 0.1 * logits.mean(0, keepdim=True))
    probs = teacher_targets(logits, 0.5, ("centering",), center)
    assert torch.allclose(probs, torch.softmax((logits - center.center) / 0.5, 1))
    both = teacher_targets(logits, 0.5, ("centering", "sinkhorn"), center, 3)
    assert torch.allclose(both.sum(1), torch.ones(2), atol=1e-5)


# --- EMA and schedules

def test_ema_update_formula():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s, atol=1e-7)
    after = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)  # momentum 1 (end of the schedule): frozen
    assert all(torch.equal(a, t) for a, t in zip(after, teacher.parameters()))
    assert not any(torch.equal(a, s) for a, s in zip(after, student.parameters()))  # so "frozen" is visible


def test_schedules():
    cfg = _cfg("dino", steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5, momentum_teacher=0.99)
    assert step_values(cfg, 0)["lr"] == 0 and step_values(cfg, 10)["lr"] == pytest.approx(1e-3)
    assert step_values(cfg, 100)["lr"] == pytest.approx(1e-5)
    assert step_values(cfg, 0)["momentum"] == pytest.approx(0.99) and step_values(cfg, 100)["momentum"] == 1.0
    assert cosine(1.0, 0.0, 50, 100) == pytest.approx(0.5)


# --- recipes

@pytest.mark.parametrize("method", sorted(RECIPES))
def test_recipe_loss_finite_and_decreasing(method):
    cfg = _cfg(method, lr=2e-3, warmup_steps=0, momentum_teacher=0.99, steps=10)
    torch.manual_seed(0)
    model = PretrainModel(cfg)
    opt = build_optimizer(model, cfg)
    images = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    multicrop = MultiCrop.from_config(cfg)
    losses = []
    for step in range(8):  # the same views and masks every step: the student can fit them
        batch = model.recipe.prepare(cfg, multicrop, images, torch.Generator().manual_seed(0))
        loss, logs = model(batch, step_values(cfg, step))
        assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_teacher(0.99)
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_maskcluster_parts_and_collapse_choices():
    cfg = _cfg("maskcluster", collapse=["sinkhorn", "memax"])
    model = PretrainModel(cfg)
    assert {"cls", "patch", "pixels"} <= set(model.heads) and set(model.teacher_heads) == {"cls", "patch"}
    assert len(model.centers) == 0
    batch = model.recipe.prepare(cfg, MultiCrop.from_config(cfg), torch.zeros(4, 3, 32, 32, dtype=torch.uint8) + 99,
                                 torch.Generator().manual_seed(0))
    assert batch["corrupted"].shape == batch["globals"].shape == (8, 3, 32, 32)
    assert (batch["mask"].sum(1) == round(cfg.mask_ratio * 16)).all()
    with torch.no_grad():
        _, logs = model(batch, step_values(cfg, 0))
    assert {"cls", "patch", "rec", "reg"} <= set(logs) and float(logs["reg"]) > 0
    with pytest.raises(ValueError):
        _cfg("maskcluster", collapse=["whitening"])


# --- training loop: checkpoint, resume, backbone file

def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["maskcluster", "msn"])
def test_resume_is_bit_identical(tmp_path, method):
    cfg = _cfg(method, steps=4, warmup_steps=1, drop_path=0.1)
    straight = train(cfg, tmp_path / "a", source=_scenes(cfg), log=lambda *_: None)
    first = train(cfg, tmp_path / "b", stop_at=2, source=_scenes(cfg), log=lambda *_: None)
    assert first["step"] == 2 and first["backbone"] is None
    resumed = train(cfg, tmp_path / "b", resume=True, source=_scenes(cfg), log=lambda *_: None)
    assert resumed["step"] == 4
    a, b = _params(straight["model"]), _params(resumed["model"])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    backbone = "backbone.safetensors"
    assert (tmp_path / "a" / backbone).read_bytes() == (tmp_path / "b" / backbone).read_bytes()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "b").iterdir())  # atomic writes leave nothing
    # the training checkpoint is plain tensors + containers, with every part the brief lists
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    parts = {"student", "teacher", "heads", "teacher_heads", "optimizer", "scheduler", "step", "rng", "config"}
    assert parts <= set(state)
    assert json.loads(state["config"])["method"] == method and state["step"] == 4
    fresh = PretrainModel(cfg)
    load_training_checkpoint(tmp_path / "b" / "checkpoint.pt", fresh)
    assert all(torch.equal(v, b[k]) for k, v in fresh.state_dict().items())


def test_backbone_file_loads_with_load_model(tmp_path):
    cfg = _cfg("msn", steps=1, warmup_steps=0)
    result = train(cfg, tmp_path, name="msn-test", source=_scenes(cfg), log=lambda *_: None)
    path = result["backbone"]
    assert path.name == "msn-test.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    config = json.loads(meta["config"])
    assert meta["format"] == "lowshot-v1"
    assert {k: config[k] for k in ("method", "num_heads", "embed_dim", "depth", "patch_size", "img_size")} == \
        dict(method="msn", num_heads=2, embed_dim=32, depth=2, patch_size=8, img_size=32)
    model = load_model(path)  # no extra arguments: method and heads come from the file
    assert model.lowshot_feature == "cls_prenorm" and model.info.layout == "lowshot"
    x = torch.randn(2, 3, 32, 32)
    feats = model.extract(x, ["cls", "patch", "cls_prenorm"])
    assert feats["cls"].shape == (2, 32) and feats["patch"].shape == (2, 16, 32)
    # the extractor runs the teacher exactly as training did (up to the float16 storage)
    teacher = result["model"].teacher.half().float()
    assert torch.allclose(feats["cls"], encode(teacher, x)[:, 0], atol=1e-4)
    assert torch.allclose(feats["cls_prenorm"], encode(teacher, x, prenorm=True)[:, 0], atol=1e-4)


def test_image_folder_data_and_cli_arguments(tmp_path):
    from PIL import Image

    for i in range(10):
        (tmp_path / "imgs" / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 30), (20 * i, 100, 50)).save(tmp_path / "imgs" / f"d{i % 2}" / f"{i}.png")
    parser = add_pretrain_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--method", "dino", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"),
                              "--img-size", "32", "--steps", "2", "--batch-size", "4", "--set", "n_local=1",
                              "--set", 'collapse=["centering","memax"]', "--set", "embed_dim=32",
                              "--set", "depth=1", "--set", "num_heads=2"])
    cfg = config_from_args(args)
    assert (cfg.method, cfg.img_size, cfg.patch_size, cfg.local_size, cfg.n_local) == ("dino", 32, 8, 16, 1)
    assert cfg.collapse == ("centering", "memax") and cfg.steps == 2
    result = train(cfg, args.out, log=lambda *_: None)
    config = load_checkpoint(result["backbone"])["config"]
    assert config["data_identity"].startswith("folder:") and config["data_identity"].endswith("[10 images]")
    assert load_model(result["backbone"]).info.method == "dino"


def test_embedded_data_comes_from_the_benchmark_layer(tmp_path, capsys):
    """`--data embedded` is resolved by `lowshot pretrain`; the model zoo alone refuses it with the way out."""
    from lowshot.benchmark.cli import main

    with pytest.raises(ValueError, match="--data embedded.*lowshot pretrain"):
        train(_cfg("mae", steps=1), tmp_path / "zoo", log=lambda *_: None)
    tiny = ["--set", "embed_dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "decoder_dim=32",
            "--set", "decoder_depth=1", "--set", "decoder_heads=2", "--set", "max_images=16"]
    assert main(["pretrain", "--method", "mae", "--steps", "1", "--batch-size", "8", "--img-size", "32",
                 "--out", str(tmp_path / "cli"), *tiny]) == 0
    config = load_checkpoint(tmp_path / "cli" / "backbone.safetensors")["config"]
    assert config["data_identity"] == "synthetic-scenes-v2/classification/train/32px[16 images]"


# --- the shipped tiny models

def test_tiny_registry_entries_load():
    from lowshot.model_zoo.registry import REGISTRY

    names = ["random-tiny", "dino-tiny", "ibot-tiny", "msn-tiny", "mae-tiny", "maskcluster-tiny"]
    for name in names:
        entry = REGISTRY[name]
        assert entry.bundled and entry.sha256 and entry.layout == "lowshot" and entry.url is None
        model = load_model(name)  # verifies the sha256
        assert model.info.method == entry.method and model.info.arch.embed_dim == entry.embed_dim
        feats = model.extract(torch.randn(1, 3, 64, 64), [model.lowshot_feature, "patch"])
        assert feats["patch"].shape == (1, 64, entry.embed_dim)


@pytest.mark.slow
def test_tiny_models_beat_random_init():
    """The shipped weights learned something: the linear probe of `make pretrain-tiny` (40 labelled images per
    class, 800 test images, 16 classes) puts every pretrained tiny model well above `random-tiny` (measured:
    random 9.4 %, the weakest pretrained model 15.9 %; one probe's standard error is ~1.4 points)."""
    from lowshot.benchmark.tiny_models import linear_probe

    random_init = linear_probe("random-tiny")
    for name in ["dino-tiny", "ibot-tiny", "msn-tiny", "mae-tiny", "maskcluster-tiny"]:
        assert linear_probe(name) >= random_init + 0.05, name


def test_bf16_training_on_cpu_returns_its_losses(tmp_path):
    """`train(bf16=True)` (`lowshot pretrain --bf16`) runs the forward pass under bf16 autocast, on CPU too: the
    losses are finite and not those of the float32 run, whose weights stay float32; the caller's autocast state is
    back afterwards."""
    cfg = _cfg("maskcluster", steps=3, warmup_steps=0)
    fp32 = train(cfg, tmp_path / "a", source=_scenes(cfg), log=lambda *_: None)
    bf16 = train(cfg, tmp_path / "b", source=_scenes(cfg), log=lambda *_: None, bf16=True)
    assert len(fp32["losses"]) == len(bf16["losses"]) == 3 and all(map(math.isfinite, bf16["losses"]))
    assert bf16["losses"] != fp32["losses"]
    assert max(abs(a - b) / abs(a) for a, b in zip(fp32["losses"], bf16["losses"])) < 0.05
    assert all(p.dtype == torch.float32 for p in bf16["model"].parameters())
    assert not torch.is_autocast_enabled("cpu")
    args = add_pretrain_arguments(argparse.ArgumentParser()).parse_args(["--out", "o", "--bf16"])
    assert args.bf16

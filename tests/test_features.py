"""benchmark/features.py: the feature cache's key, atomic writes, memory maps, hits and misses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowshot.benchmark.features import FeatureCache, extract_features
from lowshot.model_zoo import TransformSpec
from lowshot.tasks.datasets.synthetic import SyntheticScenes

from .conftest import FIXTURES, fixture_model

SOURCE = SyntheticScenes("classification", "test")


def _get(cache, model, indices, names=("cls",), transform=TransformSpec(64, 64)):
    return cache.get(model, SOURCE, np.asarray(indices), transform, list(names), batch_size=4, workers=0,
                     progress=False)


def test_key_separates_checkpoint_transform_images_feature_and_eval_config():
    from dataclasses import replace

    a = fixture_model()
    b = fixture_model(FIXTURES / "dino" / "dino_pretrain_full_checkpoint.pth")
    cache = FeatureCache("unused")
    t = TransformSpec(64, 64)
    key = lambda m, idx, tr, name: cache.key(m, SOURCE, np.arange(idx), tr, name)[0]  # noqa: E731
    base = key(a, 3, t, "cls")
    others = [key(b, 3, t, "cls"), key(a, 4, t, "cls"), key(a, 3, TransformSpec(72, 64), "cls"), key(a, 3, t, "patch"),
              key(a, 3, TransformSpec(64, 64, "bilinear"), "cls")]
    a.eval_config = replace(a.eval_config, pos_embed_rule="msn")  # another position rule: other features
    others.append(key(a, 3, t, "cls"))
    assert len({base, *others}) == len(others) + 1
    a.eval_config = replace(a.eval_config, pos_embed_rule="dino")
    assert key(a, 3, t, "cls") == base  # and the same inputs give the same key


def test_features_are_memory_mapped_equal_to_a_direct_extraction_and_reused(tmp_path, monkeypatch):
    model = fixture_model()
    cache = FeatureCache(tmp_path)
    got = _get(cache, model, range(6), ["cls", "patch"])
    assert isinstance(got["cls"], np.memmap) and not got["cls"].flags.writeable  # read-only views of the files
    assert got["patch"].dtype == np.float16 and got["cls"].dtype == np.float32  # patch tokens stored in half
    direct = extract_features(model, SOURCE, np.arange(6), TransformSpec(64, 64), ["cls"], batch_size=4, workers=0,
                              progress=False)
    np.testing.assert_array_equal(got["cls"], direct["cls"])
    assert (cache.hits, cache.misses) == (0, 2)
    (path,) = [p for p in tmp_path.rglob("*.npy") if cache.key(model, SOURCE, np.arange(6), TransformSpec(64, 64),
                                                                "cls")[0] in p.name]
    assert path.with_suffix(".json").is_file()  # the description of its key beside every array

    def no_model(*args, **kwargs):
        raise AssertionError("a cache hit ran the model")

    monkeypatch.setattr(model, "extract", no_model)
    again = _get(cache, model, range(6), ["cls", "patch"])
    np.testing.assert_array_equal(again["cls"], got["cls"])
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_failed_extraction_leaves_no_file(tmp_path, monkeypatch):
    model = fixture_model()
    cache = FeatureCache(tmp_path)
    calls = []
    extract = model.extract

    def fails_on_the_second_batch(images, names):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return extract(images, names)

    monkeypatch.setattr(model, "extract", fails_on_the_second_batch)
    with pytest.raises(RuntimeError, match="device lost"):
        _get(cache, model, range(8))
    # no array, no temporary file, no description: only the (empty) lock file of the entry
    assert calls == [4, 4] and {p.suffix for p in tmp_path.rglob("*") if p.is_file()} == {".lock"}


def test_nan_features_are_refused_and_nothing_cached(tmp_path):
    model = fixture_model()
    with torch.no_grad():
        model.backbone.vit.norm.weight[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"NaN.*classification/test.*e\.g\. \S+\.png; nothing was cached"):
        _get(FeatureCache(tmp_path), model, range(4))
    assert not list(tmp_path.rglob("*.npy"))


def test_bf16_runs_on_cpu_within_its_tolerance_and_has_its_own_identity():
    """--bf16 autocasts on CPU too (so the bf16 path runs in CI): its features differ from fp32 ones, by less than the
    stated tolerance; the identity says bf16 (another cache key), while an fp32 model's identity stays 'fp32'."""
    from lowshot.benchmark.features import model_identity
    from lowshot.model_zoo import load_model
    from lowshot.model_zoo.extractor import BF16_TOLERANCE

    fp32, bf16 = load_model("dino-tiny"), load_model("dino-tiny", bf16=True)
    names = ["cls", "patch", "cls_last4_avgpool"]
    a, b = (extract_features(m, SOURCE, np.arange(8), TransformSpec(64, 64), names, batch_size=4, workers=0,
                             progress=False) for m in (fp32, bf16))
    for name in names:
        x, y = (torch.from_numpy(np.asarray(f[name], np.float32)).flatten(0, -2) for f in (a, b))
        deviation = float(((y - x).norm(dim=1) / x.norm(dim=1)).max())
        assert 0 < deviation <= BF16_TOLERANCE, (name, deviation)  # bf16 was used, and stays close
    assert model_identity(fp32)["precision"] == "fp32" and model_identity(bf16)["precision"] == "bf16"
    key = lambda m: FeatureCache("unused").key(m, SOURCE, np.arange(8), TransformSpec(64, 64), "cls")[0]  # noqa: E731
    assert key(fp32) != key(bf16)
    assert not torch.is_autocast_enabled("cpu")  # the autocast ended with the extraction


def test_fp32_extraction_on_cuda_turns_tensorfloat32_off_and_restores_the_callers_flags():
    """On CUDA, cuDNN convolutions (the patch embedding) default to TF32 and a training loop may set
    set_float32_matmul_precision('high'): fp32 features would move ~1e-3 from the CPU's. The extractor's CUDA
    context runs IEEE float32 and gives the caller's flags back (only global flags: this runs without a GPU)."""
    from lowshot.model_zoo.extractor import ieee_fp32

    backends = torch.backends
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # what a training loop often sets
        caller = (backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision)
        assert caller == ("tf32", "tf32")
        with pytest.raises(RuntimeError, match="inside"):
            with ieee_fp32():
                assert (backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision) == ("ieee", "ieee")
                raise RuntimeError("inside")
        assert (backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision) == caller
    finally:
        torch.set_float32_matmul_precision(before)
    from lowshot.model_zoo import load_model

    tiny = load_model("dino-tiny")  # an fp32 extractor takes that context on CUDA only
    assert isinstance(tiny.precision(torch.device("cuda")), type(ieee_fp32()))
    assert not isinstance(tiny.precision(torch.device("cpu")), type(ieee_fp32()))

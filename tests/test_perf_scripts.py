"""The perf scripts run at CI size and print their ratios (speed itself is never asserted)."""
from __future__ import annotations

import json


from .conftest import FIXTURES, require


def test_extraction_perf_small(capsys):
    from benchmark.perf.extraction import main

    out = main(["--small", "--workers", "0", "--device", "cpu"])
    text = capsys.readouterr().out
    assert "ratio" in text and "bare timm forward" in text
    assert all(v > 0 for v in out.values())


def test_knn_perf_small(capsys):
    from benchmark.perf.knn_speed import main

    out = main(["--small"])
    assert out["agree"] > 0.99  # faiss and torch find the same neighbours (ties aside)
    assert "ratio torch/faiss" in capsys.readouterr().out


def test_cache_perf_small(capsys):
    require(FIXTURES)
    from benchmark.perf.cache_speed import main

    heads = json.loads((FIXTURES / "dino" / "config.json").read_text())["num_heads"]
    out = main(["--model", str(FIXTURES / "dino" / "dino_pretrain.pth"), "--method", "dino",
                "--num-heads", str(heads)])
    assert out["repeat"] < out["first"]
    assert "ratio" in capsys.readouterr().out

"""The perf scripts run at CI size and print their ratios; speed itself is never asserted, only what each script
measures besides time (agreement, counts, objectives)."""
from __future__ import annotations

import pytest
import torch

from .conftest import DINO_FIXTURE, fixture_heads, require

pytestmark = pytest.mark.slow  # each script runs its measurement end to end, if on small sizes


def test_extraction_perf_small(capsys):
    from lowshot.benchmark.perf.extraction import main

    out = main(["--small", "--workers", "0", "--device", "cpu"])
    text = capsys.readouterr().out
    assert "ratio" in text and "bare timm forward" in text
    assert all(v > 0 for v in out.values())


def test_knn_perf_small(capsys):
    from lowshot.benchmark.perf.knn_speed import main

    out = main(["--small"])
    assert out["agree"] > 0.99  # faiss and torch find the same neighbours (ties aside)
    assert "ratio torch/faiss" in capsys.readouterr().out


def test_cache_perf_small(capsys):
    from lowshot.benchmark.perf.cache_speed import main

    out = main(["--model", str(require(DINO_FIXTURE)), "--method", "dino", "--num-heads", str(fixture_heads())])
    counts = out["counts"]
    # what the timed runs did: 20 records + RankMe and α-ReQ, whose evaluation features are a cache hit
    assert counts["first"] == {"written": 22, "hits": 1, "computed": 2}
    assert counts["repeat"] == {"written": 0, "hits": 0, "computed": 0}  # every record done: nothing read
    assert counts["overwrite"] == {"written": 22, "hits": 3, "computed": 0}  # refit from cached features
    assert "ratio" in capsys.readouterr().out


def test_classifier_perf_small(capsys):
    from lowshot.benchmark.perf.classifier_speed import main

    out = main(["--small"])
    assert set(out) == {"ours", "cyanure", "scikit-learn"}
    for other in ("cyanure", "scikit-learn"):  # the same objective: the same minimum, the same predictions
        assert abs(out["ours"][1] - out[other][1]) <= 1e-4 * out[other][1], other
        assert abs(out["ours"][2] - out[other][2]) <= 0.01, other
    assert "ours/scikit-learn: time x" in capsys.readouterr().out


@pytest.mark.slow
def test_launch_perf_small(capsys):
    from lowshot.benchmark.perf.launch_speed import main

    out = main(["--small"])  # 2 models x 1 task, one process then --jobs 2; it checks they write the same records
    assert len(out["ratios"]) == 1 and all(t > 0 for t in out["single"] + out["jobs"])
    assert "ratio --jobs 2 / one process" in capsys.readouterr().out


def test_classifier_perf_grid_prints_its_ratios(capsys):
    from lowshot.benchmark.perf.classifier_speed import main

    ratios = main(["--grid", "--n", "60", "--dim", "32", "--repeats", "1"])  # the batched scores equal separate fits'
    assert set(ratios) == {"one fit / floor", "grid in one solve / one fit", "grid in one solve / separate fits",
                           "grid in one solve / separate L-BFGS fits", "scikit-learn / one fit, same objective"}
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in ratios) and all(r > 0 for r in ratios.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_classifier_perf_on_cuda_without_cuda_is_one_line(capsys):
    from lowshot.benchmark.perf.classifier_speed import main

    with pytest.raises(SystemExit) as exit_:
        main(["--grid", "--device", "cuda"])
    assert exit_.value.code == 2 and "CUDA is not available" in capsys.readouterr().err

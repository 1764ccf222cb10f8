"""benchmark/perf/gpu_check: the CI run (`--device cpu --small`) writes one JSON whose schema the GPU session relies on;
every check that needs no GPU passes on the CPU, every CUDA item is skipped by name with its reason; a broken item
fails alone; two files compare figure by figure."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from lowshot.benchmark.perf import gpu_check
from lowshot.model_zoo.extractor import BF16_TOLERANCE

CPU_CHECKS = {"features_bf16_cpu_vs_cpu_fp32", "logreg_objective_vs_sklearn", "knn_faiss_vs_torch",
              "segmentation_head_loss_falls_cpu", "torchrun_gloo_cpu", "pretrain_loss_falls"}
CUDA_CHECKS = {"features_fp32_cuda_vs_cpu", "features_bf16_cuda_vs_cpu_fp32", "logreg_objective_cuda_vs_cpu",
               "knn_neighbours_cuda_vs_cpu", "segmentation_head_loss_falls_cuda", "torchrun_nccl"}
EXTRACTION = {"bare_img_s", "memory_img_s", "jpeg_img_s", "ratio_memory", "ratio_jpeg", "device_decode",
              "ratio_device_decode", "jpeg_kib", "workers"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread for the tiny CI sizes (on a shared 2-core machine, more only spin), restored afterwards."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip("this test is the CPU run; on a GPU run `make gpu-check`")
    from threadpoolctl import threadpool_limits

    out = tmp_path_factory.mktemp("gpu_check") / "ci.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            report = gpu_check.main(["--device", "cpu", "--small", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return report, json.loads(out.read_text())


def test_cpu_run_writes_the_schema_and_passes_every_cpu_check(ci_run):
    report, written = ci_run
    assert written == json.loads(json.dumps(report))  # the file is the whole report
    assert set(written) == {"schema", "mode", "environment", "checks", "figures", "projection", "seconds"}
    assert written["schema"] == gpu_check.SCHEMA and written["mode"]["device"] == "cpu" and written["mode"]["small"]
    env = written["environment"]
    assert env["torch"] == torch.__version__ and env["cuda"] == torch.version.cuda
    assert env["gpu"] is None and env["driver"] is None and env["faiss_gpu"] is False
    checks = written["checks"]
    assert set(checks) == set(gpu_check.CHECKS) | {"pretrain_loss_falls"} == CPU_CHECKS | CUDA_CHECKS | {
        "multi_gpu_launcher"}
    assert {k: v["status"] for k, v in checks.items() if k in CPU_CHECKS} == dict.fromkeys(CPU_CHECKS, "passed")
    assert all((checks[k]["status"], checks[k]["reason"]) == ("skipped", "no GPU") for k in CUDA_CHECKS)
    # the local launcher (`--launcher local --jobs N`, one job per GPU) runs here as one CPU job
    assert checks["multi_gpu_launcher"]["status"] == "passed" and checks["multi_gpu_launcher"]["jobs"] == 1
    # what each CPU check measured
    bf16 = checks["features_bf16_cpu_vs_cpu_fp32"]["deviation"]
    assert all(0 < d["max_rel_l2"] <= BF16_TOLERANCE for d in bf16.values())
    lr = checks["logreg_objective_vs_sklearn"]
    assert abs(lr["objective"] - lr["objective_sklearn"]) <= 1e-4 * lr["objective_sklearn"]
    assert checks["knn_faiss_vs_torch"]["same_neighbours"] == 1.0
    seg = checks["segmentation_head_loss_falls_cpu"]
    assert seg["loss_trained"] < 0.5 * seg["loss_untrained"]
    assert checks["torchrun_gloo_cpu"]["backend"] == "gloo" and checks["torchrun_gloo_cpu"]["all_reduce"] == 1.0


def test_cpu_run_measures_every_figure_that_needs_no_gpu(ci_run):
    figures = ci_run[1]["figures"]
    assert list(figures) == list(gpu_check.FIGURES)
    assert {k for k, v in figures.items() if v["status"] == "skipped"} == {"torch_compile"}
    grid = figures["lambda_grid"]["ratios"]  # the batched λ grid of the solver, as classifier_speed --grid prints it
    assert grid["grid in one solve / separate fits"] > 0 and grid["one fit / floor"] > 0
    for arch in ("vit_small", "vit_base"):
        ext = figures[f"extraction_{arch}"]
        assert EXTRACTION <= set(ext) and ext["bare_img_s"] > 0
        assert ext["ratio_jpeg"] == pytest.approx(ext["jpeg_img_s"] / ext["bare_img_s"])
        decode = ext["device_decode"]  # on the CPU here: decode_jpeg(device="cpu"), the same code as on CUDA
        assert decode["device"] == "cpu" and 0 < decode["feature_deviation_fp32"]["max_rel_l2"] < 0.05
    lr = figures["logreg_speed"]
    assert abs(lr["device_objective"] - lr["sklearn_objective"]) <= 1e-4 * lr["sklearn_objective"]
    knn = figures["knn_speed"]
    assert knn["device_backend"] == "torch" and knn["cpu_faiss_backend"] == "faiss-cpu"
    assert knn["predictions_agree"] == 1.0
    pre = figures["pretrain"]
    assert pre["steps"] == len(pre["losses"]) == 12 and pre["images_per_s"] > 0 and "--bf16" in pre["command"]
    projection = ci_run[1]["projection"]
    assert projection["status"] == "projected" and "--small" in projection["note"]
    assert projection["total_s"] == pytest.approx(sum(projection["stages_s"].values()))
    assert projection["bottleneck"].split(" ")[0] == max(projection["stages_s"], key=projection["stages_s"].get)


def test_a_failing_item_fails_alone_and_the_budget_skips_the_rest(tmp_path, monkeypatch, capsys):
    def broken(device):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(gpu_check.CHECKS, "knn_faiss_vs_torch", (broken, False))
    out = tmp_path / "r.json"
    report = gpu_check.main(["--device", "cpu", "--small", "--out", str(out), "--only", "knn_faiss_vs_torch",
                             "segmentation_head_loss_falls_cpu"])
    knn, seg = report["checks"]["knn_faiss_vs_torch"], report["checks"]["segmentation_head_loss_falls_cpu"]
    assert knn["status"] == "failed" and knn["reason"].startswith("RuntimeError: kernel exploded (")
    assert seg["status"] == "passed"  # the next item still ran
    assert report["checks"]["torchrun_gloo_cpu"]["reason"] == "not selected (--only)"
    assert json.loads(out.read_text())["checks"]["knn_faiss_vs_torch"]["status"] == "failed"
    assert "1 failed: knn_faiss_vs_torch" in capsys.readouterr().out
    spent = gpu_check.main(["--device", "cpu", "--small", "--out", str(out), "--budget-s", "0"])
    assert {v["status"] for v in spent["figures"].values()} == {"skipped"}
    assert spent["figures"]["knn_speed"]["reason"] == "time budget of 0 s spent"


def test_compare_prints_b_over_a_of_every_figure(ci_run, tmp_path, capsys):
    a = ci_run[1]
    b = copy.deepcopy(a)
    b["figures"]["knn_speed"]["device_s"] *= 2
    b["checks"]["knn_faiss_vs_torch"]["status"] = "failed"
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    capsys.readouterr()
    ratios = gpu_check.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])["compare"]["ratios"]
    assert ratios["figures.knn_speed.device_s"] == pytest.approx(2.0)
    assert ratios["figures.extraction_vit_base.bare_img_s"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "figures.knn_speed.device_s" in printed and "check knn_faiss_vs_torch: A passed, B failed" in printed
    (tmp_path / "c.json").write_text("{}")
    for other, message in (("c.json", "c.json: not a gpu_check file"), ("d.json", "d.json: no such file")):
        with pytest.raises(SystemExit) as exit_:
            gpu_check.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / other)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "error: --compare: " in err[-1] and message in err[-1]  # the usage, then one line

"""benchmark/statistics.py and benchmark/evidence.py: the intervals' coverage by simulation, an independent
recomputation with scipy.stats from stored evidence, paired comparisons (A/A), Holm, verified evidence files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from lowshot.benchmark.evidence import EvidenceError, read_evidence, resampled, write_evidence
from lowshot.benchmark.records import load_records, record_path, write_record
from lowshot.benchmark.statistics import (cell_interval, compare_cell, compare_models, holm, p_value,
                                          t_interval)
from lowshot.tasks.evidence import multi_label_evidence, segmentation_evidence, single_label_evidence
from lowshot.tasks.metrics import mean_average_precision, mean_per_class_accuracy, segmentation_scores

# ---------------------------------------------------------------------------------------------- coverage

# Coverage of a nominal 95 % interval must lie in [92.5 %, 99.5 %]: at most 2.5 points below (about 2.5 standard
# errors of a coverage measured on 500 cases) and at most 4.5 points above, because the method errs on the wide side
# by design (the seed spread also holds the image noise that differs between seeds; benchmark.statistics).
COVERAGE = (0.925, 0.995)


def _simulate(rng, cases, seeds, images, seed_sd, flip=0.1, mu=(0.6, 0.55), replicates=200):
    """Coverage of the cell interval and of the paired difference's interval on simulated models with known
    effects. Image i has a difficulty u_i (shared by the models: they are scored on the same images); seed s of a
    model has accuracy p_s = mu + seed_sd * N(0, 1) (its labelled subset); image i is right when u_i < p_s, flipped
    with probability `flip` independently per seed and model. True cell value: 100 (mu (1 - 2 flip) + flip)."""
    u = rng.random((cases, 1, images))

    def model(m):
        p = m + seed_sd * rng.standard_normal((cases, seeds, 1))
        return ((u < p) ^ (rng.random((cases, seeds, images)) < flip)).astype(np.float64)

    a, b = model(mu[0]), model(mu[1])
    weights = rng.multinomial(images, np.full(images, 1.0 / images), size=(cases, replicates)).astype(np.float64)
    # the image bootstrap, as benchmark.statistics.image_replicates does it: one draw of the images for all seeds
    reps_a = 100 * np.einsum("kbn,ksn->kbs", weights, a).mean(-1) / images
    reps_b = 100 * np.einsum("kbn,ksn->kbs", weights, b).mean(-1) / images
    _, low, high, _, _ = t_interval(100 * a.mean(-1), reps_a.var(1, ddof=1))
    truth = 100 * (mu[0] * (1 - 2 * flip) + flip)
    cell = np.mean((low <= truth) & (truth <= high))
    _, low, high, _, _ = t_interval(100 * (a - b).mean(-1), (reps_a - reps_b).var(1, ddof=1))
    truth = 100 * (mu[0] - mu[1]) * (1 - 2 * flip)
    return cell, np.mean((low <= truth) & (truth <= high))


@pytest.mark.parametrize("seeds, seed_sd", [(3, 0.04), (3, 0.0), (5, 0.02), (1, 0.0)])
def test_intervals_cover_known_effects_95_percent_of_the_time(seeds, seed_sd):
    rng = np.random.default_rng(seeds * 100 + int(seed_sd * 1000))
    cell, difference = _simulate(rng, cases=500, seeds=seeds, images=300, seed_sd=seed_sd)
    print(f"coverage, {seeds} seed(s), seed sd {seed_sd}: cell {cell:.3f}, paired difference {difference:.3f}")
    assert COVERAGE[0] <= cell <= COVERAGE[1], cell
    assert COVERAGE[0] <= difference <= COVERAGE[1], difference


def test_interval_without_evidence_is_the_t_interval_over_seeds():
    values = np.array([7.1, 8.4, 6.2])
    mean, low, high, _, df = t_interval(values)
    expected = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected) and df == 2
    assert np.isnan(t_interval(values[:1])[1])  # one seed, no evidence: no interval


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, max(0.04, 0.09), max(0.09, 0.08), max(0.09, 0.5)
    assert holm(p)[[0, 2, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert np.isnan(holm(p)[3])
    assert p_value(0.0, 0.0, 2.0) == 1.0 and p_value(1.0, 0.0, 2.0) == 0.0


# ---------------------------------------------------------------------------------------------- evidence


def test_resampled_scores_equal_the_metrics_at_unit_weights():
    rng = np.random.default_rng(0)
    target, pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    single = single_label_evidence(pred, target)
    ones = np.ones((1, 200))
    assert resampled(single, "top1", ones)[0] == pytest.approx(100 * np.mean(pred == target))
    assert resampled(single, "mean_per_class", ones)[0] == pytest.approx(mean_per_class_accuracy(pred, target))
    scores = np.round(rng.random((200, 6)), 1).astype(np.float16)  # many ties: one threshold each
    labels, ignore = rng.random((200, 6)) < 0.3, rng.random((200, 6)) < 0.1
    multi = multi_label_evidence(scores, labels, ignore)
    assert resampled(multi, "map", ones)[0] == pytest.approx(
        mean_average_precision(scores.astype(np.float64), labels.astype(int), ignore)[0])
    # integer weights = duplicated images
    w = rng.integers(0, 3, 200)
    dup = np.repeat(np.arange(200), w)
    assert resampled(multi, "map", w[None])[0] == pytest.approx(
        mean_average_precision(scores[dup].astype(np.float64), labels[dup].astype(int), ignore[dup])[0])
    masks, preds = rng.integers(0, 4, (30, 8, 8)), rng.integers(0, 4, (30, 8, 8))
    from lowshot.tasks.metrics import confusion_matrix, intersection_union
    seg = segmentation_evidence([intersection_union(confusion_matrix(p, m, 4)) for p, m in zip(preds, masks)])
    assert resampled(seg, "miou", w[None, :30])[0] == pytest.approx(segmentation_scores(
        confusion_matrix(preds[np.repeat(np.arange(30), w[:30])], masks[np.repeat(np.arange(30), w[:30])], 4))["miou"])


def _write(results, model, seed, correct, target, setting="1img", classifier="logreg", **fields):
    path = record_path(results, model, "embedded-lowshot", setting, seed, classifier, "0123456789abcdef")
    evidence = write_evidence(path, single_label_evidence(np.where(correct, target, target + 1), target))
    write_record(path, {"model": model, "method": "dino", "task": "embedded-lowshot", "family": "classification",
                        "setting": setting,
                        "seed": seed, "classifier": classifier, "main_score": "top1",
                        "metrics": {"top1": float(100 * np.mean(correct))}, "identity": f"{model}-{seed}",
                        "data_fingerprint": {"labelled": f"subset-{seed}", "evaluation": "test"},
                        "evidence": evidence, **fields})
    return path


def _results(tmp_path, rng, n=400):
    target = rng.integers(0, 10, n)
    u = rng.random(n)
    for seed, (pa, pb) in zip((1, 2, 3), ((0.62, 0.55), (0.58, 0.54), (0.64, 0.56))):
        _write(tmp_path, "a", seed, (u < pa) ^ (rng.random(n) < 0.05), target)
        _write(tmp_path, "b", seed, (u < pb) ^ (rng.random(n) < 0.05), target)
    return load_records(tmp_path)[0]


def _from_files(tmp_path, model):
    """Per-seed correctness read straight from the .npz files, without benchmark.evidence."""
    return np.stack([np.load(p)["correct"] for p in sorted((tmp_path / model / "embedded-lowshot").glob("*.npz"))])


def test_scipy_recomputes_a_cell_interval_and_a_p_value_from_the_stored_evidence(tmp_path):
    records = _results(tmp_path, np.random.default_rng(3))
    a, b = (_from_files(tmp_path, m).astype(float) for m in ("a", "b"))

    def seed_mean(*seeds, axis=-1):
        return 100 * np.mean([s.mean(axis=axis) for s in seeds], 0)

    # cell: t over seeds widened by the image bootstrap (scipy.stats.bootstrap, images paired across seeds)
    boot = stats.bootstrap(tuple(a), seed_mean, paired=True, n_resamples=4000, random_state=1, vectorized=True)
    seed_var = stats.tvar(100 * a.mean(1)) / 3
    total = seed_var + boot.standard_error**2
    df = total**2 * 2 / seed_var**2
    expected = stats.t.interval(0.95, df, loc=100 * a.mean(), scale=np.sqrt(total))
    ours = cell_interval([r for r in records if r["model"] == "a"])
    half = (expected[1] - expected[0]) / 2
    assert ours.mean == pytest.approx(100 * a.mean())
    assert ours.low == pytest.approx(expected[0], abs=0.1 * half) and ours.high == pytest.approx(expected[1], abs=0.1 * half)

    # comparison: the paired t statistic of the per-seed differences, widened by the paired image bootstrap
    d = a - b
    boot = stats.bootstrap(tuple(d), seed_mean, paired=True, n_resamples=4000, random_state=2, vectorized=True)
    seed_var = stats.tvar(100 * d.mean(1)) / 3
    total = seed_var + boot.standard_error**2
    df = total**2 * 2 / seed_var**2
    expected_p = 2 * stats.t.sf(abs(100 * d.mean()) / np.sqrt(total), df)
    ours = compare_cell([r for r in records if r["model"] == "a"], [r for r in records if r["model"] == "b"])
    assert ours.difference == pytest.approx(100 * d.mean())
    assert 0.001 < expected_p < 0.2  # a case where the p-value is neither trivially 0 nor 1
    assert ours.p_value == pytest.approx(expected_p, rel=0.2)


def test_same_predictions_under_two_names_differ_by_zero_and_nowhere_significantly(tmp_path):
    rng = np.random.default_rng(5)
    target = rng.integers(0, 10, 300)
    for setting in ("1img", "2img"):
        for seed in (1, 2, 3):
            correct = rng.random(300) < 0.3
            _write(tmp_path, "a", seed, correct, target, setting)
            _write(tmp_path, "copy-of-a", seed, correct, target, setting)
    rows = compare_models(load_records(tmp_path)[0], "a", "copy-of-a")
    assert len(rows) == 2
    assert all(r["difference"] == 0 and r["p_value"] == 1 and not r["significant"] for r in rows)


def test_unpaired_records_are_refused(tmp_path):
    records = _results(tmp_path, np.random.default_rng(4))
    b = [dict(r) for r in records if r["model"] == "b"]
    b[0]["data_fingerprint"] = {"labelled": "another subset", "evaluation": "test"}
    with pytest.raises(ValueError, match="not paired"):
        compare_cell([r for r in records if r["model"] == "a"], b)


def test_damaged_or_missing_evidence_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path, "a", 1, np.array([True, False, True]), np.array([1, 2, 3]))
    (record,) = load_records(tmp_path)[0]
    assert read_evidence(record).arrays["correct"].tolist() == [True, False, True]
    evidence = path.with_name(path.stem + ".evidence.npz")
    data = bytearray(evidence.read_bytes())
    data[-30] ^= 0xFF
    evidence.write_bytes(bytes(data))
    with pytest.raises(EvidenceError, match=f"{evidence.name}.*checksum"):
        read_evidence(record)
    evidence.unlink()
    with pytest.raises(EvidenceError, match=f"{evidence.name} is missing"):
        read_evidence(record)
    assert "evidence" in json.loads(path.read_text())

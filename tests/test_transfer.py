"""The transfer family: readers of the thirteen datasets on format-faithful fakes, k-shot draws, λ chosen inside
the shots, mean per-class accuracy, label-free scores, the CLI over every fake (records, mean table, figure), and
the feature cache / record identity on reruns."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from lowshot.benchmark.cli import main
from lowshot.benchmark.records import load_records
from lowshot.tasks import spectrum
from lowshot.tasks.datasets import SplitError
from lowshot.tasks.metrics import mean_per_class_accuracy
from lowshot.tasks.registry import TASK_GROUPS, TaskOptions, get_task
from lowshot.tasks.transfer import SHOTS, TRANSFER_DATASETS, TRANSFER_SETTINGS, transfer_data

from .transfer_fakes import WRITERS, write_all

pytestmark = pytest.mark.filterwarnings("ignore::model_zoo.errors.LowshotWarning")  # fakes have few classes


@pytest.mark.parametrize("key", list(TRANSFER_DATASETS))
def test_each_reader_reads_its_fake(tmp_path, key):
    n_train, n_test = WRITERS[key](tmp_path)
    data = transfer_data(TRANSFER_DATASETS[key], tmp_path)
    assert (len(data.train), len(data.test)) == (n_train, n_test)
    assert set(data.train.names).isdisjoint(data.test.names) or key in ("cifar10",)  # CIFAR names are per batch
    assert len(np.unique(data.train.targets)) == 2 and set(data.test.targets) <= set(data.train.targets)
    image = data.train.load_image(0)
    assert image.mode == "RGB" and min(image.size) >= 28
    # the fakes' colour depends on the class: labels and images belong together
    means = [np.asarray(data.train.load_image(i), float).mean((0, 1)) for i in range(len(data.train))]
    by_class = {c: np.mean([m for m, t in zip(means, data.train.targets) if t == c], 0) for c in (0, 1)}
    assert np.abs(by_class[0] - by_class[1]).max() > 20
    assert data.train.fingerprint([0, 1]) != data.train.fingerprint([0, 2])


def test_a_missing_listed_image_or_a_damaged_annotation_is_named(tmp_path):
    from lowshot.model_zoo.errors import BadInputError, MissingFileError

    WRITERS["pets"](tmp_path)
    (tmp_path / "oxford-iiit-pet" / "images" / "american_bulldog_3.jpg").unlink()
    with pytest.raises(MissingFileError, match="american_bulldog_3.jpg"):
        transfer_data(TRANSFER_DATASETS["pets"], tmp_path)
    WRITERS["flowers102"](tmp_path)
    (tmp_path / "flowers-102" / "setid.mat").write_bytes(b"not a mat file")
    with pytest.raises(BadInputError, match="setid.mat"):
        transfer_data(TRANSFER_DATASETS["flowers102"], tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        transfer_data(TRANSFER_DATASETS["cifar10"], tmp_path)


def test_k_shot_draws_hold_exactly_k_of_every_class_and_are_read_back(tmp_path):
    WRITERS["dtd"](tmp_path)
    task = get_task("transfer-dtd").build(TaskOptions(str(tmp_path)))
    split_dir = tmp_path / "splits"
    first = {}
    for setting in task.settings:
        for seed in setting.seeds:
            idx, source = task.labelled_subset(setting, seed, split_dir)
            counts = np.bincount(task.train.targets[idx])
            assert (counts == (setting.shots or 17)).all(), (setting.name, counts)
            first[(setting.name, seed)] = idx
    assert not np.array_equal(first[("4shot", 1)], first[("4shot", 2)])  # seeds differ
    assert sorted(p.name for p in split_dir.iterdir()) == sorted(f"{k}shot-seed{s}.txt" for k in SHOTS for s in (1, 2, 3))
    again = get_task("transfer-dtd").build(TaskOptions(str(tmp_path)))
    for (name, seed), idx in first.items():
        setting = next(s for s in again.settings if s.name == name)
        assert np.array_equal(again.labelled_subset(setting, seed, split_dir)[0], idx)
    # a split file edited to hold another number of images of a class is refused, naming the file
    path = split_dir / "2shot-seed1.txt"
    path.write_text("\n".join(path.read_text().split()[:-1]) + "\n")
    with pytest.raises(SplitError, match="2shot-seed1.txt"):
        again.labelled_subset(next(s for s in again.settings if s.name == "2shot"), 1, split_dir)


def test_mean_per_class_accuracy_is_sklearns_balanced_accuracy():
    rng = np.random.default_rng(0)
    target = rng.choice(7, size=500, p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])  # imbalanced
    pred = np.where(rng.random(500) < 0.6, target, rng.integers(0, 7, 500))
    assert mean_per_class_accuracy(pred, target) == pytest.approx(100 * balanced_accuracy_score(target, pred), abs=1e-9)
    scores = np.eye(7)[pred] + rng.random((500, 7)) * 0.1  # [N, C] scores: the arg-max is the prediction
    assert mean_per_class_accuracy(scores, target) == pytest.approx(100 * balanced_accuracy_score(target, pred))
    assert mean_per_class_accuracy(pred, target) != pytest.approx(100 * np.mean(pred == target))


def _known_spectrum(singular_values, n=400, seed=0):
    """Z = U diag(s) V^T with orthonormal U (centred columns, so the covariance spectrum is s^2 / (n - 1)) and V."""
    rng = np.random.default_rng(seed)
    d = len(singular_values)
    u = rng.normal(size=(n, d))
    u -= u.mean(0)
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return u @ np.diag(singular_values) @ v.T


def test_rankme_and_alpha_req_against_a_matrix_of_known_spectrum():
    i = np.arange(1, 65)
    for alpha in (0.5, 1.0, 2.0):
        s = i ** (-alpha / 2)  # covariance eigenvalues s^2 / (n - 1) decay as i^-alpha
        z = _known_spectrum(s)
        fitted, count = spectrum.alpha_req(z)
        assert fitted == pytest.approx(alpha, abs=1e-6) and count == 64
        # direct numpy: eigenvalues of the covariance, log-log regression
        eig = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]
        slope = np.polyfit(np.log(i), np.log(eig), 1)[0]
        assert fitted == pytest.approx(-slope, rel=1e-6)
        p = s / s.sum() + 1e-7
        assert spectrum.rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert spectrum.rankme(_known_spectrum(np.r_[np.ones(10), np.zeros(54)])) == pytest.approx(10, rel=1e-4)
    assert spectrum.rankme(_known_spectrum(np.ones(64))) == pytest.approx(64, rel=1e-4)
    with pytest.raises(ValueError, match="NaN"):
        spectrum.rankme(np.full((4, 3), np.nan))


def _bench(*args):
    return main(["bench", "--model", "random-tiny", "--workers", "0", "--quiet", *map(str, args)])


@pytest.mark.slow
def test_every_fake_through_the_cli_then_a_rerun_computes_nothing(tmp_path, capsys):
    """`--task transfer` over a root holding every fake: one record per (dataset, k, seed, classifier), the
    label-free scores, the mean over the 13 datasets, the figure; a rerun computes no feature, writes no record and
    draws no figure."""
    root, results, cache = tmp_path / "data", tmp_path / "results", tmp_path / "cache"
    write_all(root)
    assert _bench("--task", "transfer", "--data-root", root, "--results", results, "--cache", cache) == 0
    first = capsys.readouterr().out
    records, problems = load_records(results)
    assert not problems
    scored = [r for r in records if r["family"] == "transfer"]
    keys = {(r["task"], r["setting"], r["seed"], r["classifier"]) for r in scored}
    expected = {(t, f"{k}shot", s, c) for t in TASK_GROUPS["transfer"] for k in SHOTS for s in (1, 2, 3)
                for c in ("logreg", "knn")} | {(t, "full", 1, c) for t in TASK_GROUPS["transfer"] for c in ("logreg", "knn")}
    assert keys == expected and len(scored) == len(expected) == 13 * 16 * 2
    for r in scored:
        if r["setting"] != "full":
            assert r["num_train"] == 2 * int(r["setting"][:-4])  # every fake has two classes
        assert r["main_score"] == TRANSFER_DATASETS[r["task"].removeprefix("transfer-")].metric
        assert {"top1", "mean_per_class"} <= set(r["metrics"])
        if r["classifier"] == "logreg" and r["setting"] == "1shot":
            assert r["hyperparameters_chosen_by"].startswith("default 0.0025")  # 2 classes: 2 images
        if r["classifier"] == "logreg" and r["setting"] in ("4shot", "16shot", "full"):
            assert r["hyperparameters_chosen_by"].startswith("3-fold cross-validation (accuracy) on the labelled")
    label_free = {(r["task"], r["classifier"]) for r in records if r["family"] == "label-free"}
    assert label_free == {(t, c) for t in TASK_GROUPS["transfer"] for c in ("rankme", "alpha-req")}
    mean = (results / "transfer_mean.md").read_text()
    assert "(13/13)" in mean and "(12/13)" not in mean
    assert [ln.removeprefix("figure: ") for ln in first.splitlines() if ln.startswith("figure: ")] == [
        str(results / "transfer.png"), str(results / "transfer.pdf")]  # the family's one figure, no other
    _check_drawn_transfer_figure(results, scored)
    assert "transfer-pets label-free rankme mean" in (results / "leaderboard.csv").read_text().splitlines()[0]
    assert "0 computed" not in first
    before, cached, figure = _stamps(results, "*.json"), _stamps(cache, "*"), _stamps(results, "transfer.p[nd][gf]")
    assert len(before) == len(records) and cached and len(figure) == 2

    assert _bench("--task", "transfer", "--data-root", root, "--results", results, "--cache", cache) == 0
    assert _stamps(results, "*.json") == before and _stamps(cache, "*") == cached  # nothing rewritten or added
    assert _stamps(results, "transfer.p[nd][gf]") == figure  # nor the figure redrawn
    again = capsys.readouterr().out
    assert "0 record(s) written" in again and "0 hit(s), 0 computed" in again


def _stamps(directory, pattern) -> dict:
    """{file: (modification time, content)} of the files under `directory`: what a run that writes nothing keeps."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.rglob(pattern)) if p.is_file()}


def _check_drawn_transfer_figure(results, scored):
    """The transfer figure's data as drawn, against the records: each task's panel shows each classifier's mean over
    seeds at every k, the mean panel the mean of those over the 13 datasets."""
    from lowshot.benchmark.leaderboard import load_summary
    from lowshot.benchmark.transfer_report import draw_transfer

    x = {s.name: s.x for s in TRANSFER_SETTINGS}
    per_task = {}
    for r in scored:
        per_task.setdefault((r["task"], r["classifier"], r["setting"]), []).append(r["metrics"][r["main_score"]])
    per_task = {k: np.mean(v) for k, v in per_task.items()}
    fig = draw_transfer(load_summary(results)[1])
    panels = [ax for ax in fig.axes if ax.containers]
    assert len(panels) == 14  # 13 datasets and the mean
    for ax in panels:
        title = ax.get_title().split(" (chance")[0]
        task = f"transfer-{title}" if not title.startswith("mean over") else None
        assert title == "mean over 13 dataset(s)" or task in TASK_GROUPS["transfer"], title
        drawn = {c.get_label(): c.lines[0] for c in ax.containers}
        assert set(drawn) == {"random-tiny logreg", "random-tiny knn"}
        for classifier in ("logreg", "knn"):
            order = sorted(x, key=x.get)
            want = [per_task[(task, classifier, s)] if task else
                    np.mean([per_task[(t, classifier, s)] for t in TASK_GROUPS["transfer"]]) for s in order]
            line = drawn[f"random-tiny {classifier}"]
            assert list(line.get_xdata()) == [x[s] for s in order]
            assert np.allclose(line.get_ydata(), want, atol=1e-9), (title, classifier)


def test_transfer_skips_missing_datasets_by_folder_and_a_named_one_must_exist(tmp_path, capsys):
    WRITERS["eurosat"](tmp_path)
    results = tmp_path / "results"
    assert _bench("--task", "transfer", "--data-root", tmp_path, "--results", results, "--cache", tmp_path / "c",
                  "--setting", "1shot", "--classifier", "knn") == 0
    out = capsys.readouterr().out
    assert "skipping transfer-pets: could not find Oxford-IIIT Pets" in out and "oxford-iiit-pet" in out
    assert {r["task"] for r in load_records(results)[0]} == {"transfer-eurosat"}
    assert _bench("--task", "transfer-pets", "--data-root", tmp_path, "--results", results) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "transfer-pets" in err and "oxford-iiit-pet" in err


def test_a_rerun_skips_and_a_changed_test_image_recomputes_every_record(tmp_path, capsys):
    WRITERS["pets"](tmp_path)
    args = ("--task", "transfer-pets", "--data-root", tmp_path, "--results", tmp_path / "r", "--cache", tmp_path / "c",
            "--setting", "2shot", "label-free")
    assert _bench(*args) == 0
    n_first = len(load_records(tmp_path / "r")[0])
    assert n_first == 3 * 2 + 2  # 3 seeds x 2 classifiers + RankMe and α-ReQ
    capsys.readouterr()
    before = _stamps(tmp_path / "r", "*.json")
    identities = {r["path"]: r["identity"] for r in load_records(tmp_path / "r")[0]}
    assert len(before) == n_first == len(set(identities.values()))
    assert _bench(*args) == 0
    assert _stamps(tmp_path / "r", "*.json") == before  # the label-free records too
    assert "0 record(s) written" in capsys.readouterr().out
    from PIL import Image
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "oxford-iiit-pet" / "images" / "american_bulldog_19.jpg")
    assert _bench(*args) == 0
    after = _stamps(tmp_path / "r", "*.json")
    assert set(after) == set(before)  # the same configurations: each record replaced in place ...
    assert all(after[p][0] != before[p][0] for p in before)  # ... every one, since every record read that test split
    assert all(r["identity"] != identities[r["path"]] for r in load_records(tmp_path / "r")[0])  # new images
    assert f"{n_first} record(s) written" in capsys.readouterr().out


def test_the_readme_table_lists_every_transfer_dataset():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for d in TRANSFER_DATASETS.values():
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| {d.title} | `{d.task}` |")), None)
        assert row is not None, d.task
        assert f"`{d.folder}/`" in row and d.url in row and f"| {d.num_classes} |" in row and d.split in row


def test_the_transfer_figure_draws_each_datasets_mean_and_the_mean_over_datasets(tmp_path):
    """Records with a different score per dataset, setting, seed and classifier (the fakes score 100 % everywhere):
    the figure's panels against the records, as in the CLI test."""
    from lowshot.benchmark.records import record_path, write_record

    scored, rng = [], np.random.default_rng(0)
    for task in TASK_GROUPS["transfer"]:
        metric = TRANSFER_DATASETS[task.removeprefix("transfer-")].metric
        for setting in TRANSFER_SETTINGS:
            for seed in setting.seeds:
                for classifier in ("logreg", "knn"):
                    r = {"model": "random-tiny", "method": "random", "task": task, "family": "transfer",
                         "setting": setting.name, "seed": seed, "classifier": classifier, "main_score": metric,
                         "metrics": {metric: float(rng.uniform(10, 90))}}
                    write_record(record_path(tmp_path, "random-tiny", task, setting.name, seed, classifier), r)
                    scored.append(r)
    _check_drawn_transfer_figure(tmp_path, scored)

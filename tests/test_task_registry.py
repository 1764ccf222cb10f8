"""tasks/registry.py and the declarations: every task declares its settings, classifiers and axes once, and a new
setting, classifier or evaluation feature is one declaration that reaches records, tables and figures."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lowshot.benchmark.cli import main
from lowshot.benchmark.features import extract_features
from lowshot.benchmark.leaderboard import load_summary
from lowshot.benchmark.plots import draw_task
from lowshot.benchmark.records import load_records
from lowshot.model_zoo import registry as zoo
from lowshot.tasks import registry
from lowshot.tasks.base import Setting
from lowshot.tasks.classifiers import CLASSIFIERS, ClassifierSpec

from .conftest import fixture_model, fixture_model_args


@pytest.mark.parametrize("name", list(registry.TASKS))
def test_every_declaration_is_complete(name):
    entry = registry.get_task(name)
    protocol, settings = entry.protocol, entry.declared_settings
    assert protocol.family in ("classification", "multilabel", "segmentation", "transfer") and entry.family == protocol.family
    assert protocol.main_score and protocol.metric_label and protocol.axis_label
    assert set(protocol.classifiers) <= set(CLASSIFIERS)
    names = [s.name for s in settings]
    assert len(set(names)) == len(names)
    xs = [s.x for s in settings]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # reading order = position on the axis
    for s in settings:
        assert s.seeds and s.label
        assert s.kind == "full" or (s.kind == "shots" and s.shots >= 1) or 0 < s.fraction < 1


def test_embedded_tasks_build_offline_and_real_tasks_ask_for_their_data():
    for name in registry.embedded_tasks():
        task = registry.get_task(name).build(registry.TaskOptions())
        assert task.name == name and task.settings == registry.get_task(name).declared_settings
    for name in registry.real_tasks():
        with pytest.raises(FileNotFoundError, match="--data-root"):
            registry.get_task(name).build(registry.TaskOptions())
    assert registry.declaration("no-such-task") is None
    with pytest.raises(KeyError, match="unknown task 'no-such-task'; known: imagenet-lowshot"):
        registry.get_task("no-such-task")


def _bench(tmp_path, *extra):
    results = tmp_path / "results"
    assert main(["bench", *fixture_model_args(), "--task", "embedded-lowshot", "--results", str(results),
                 "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet", *extra]) == 0
    records, problems = load_records(results)
    assert not problems
    return results, records


def test_a_new_setting_is_one_declaration(tmp_path, monkeypatch):
    """A `10img` setting added to the embedded task's declaration only: records, table columns in reading order and
    a tick on the figure follow, with nothing else changed."""
    entry = registry.get_task("embedded-lowshot")
    settings = list(entry.declared_settings)
    settings.insert(3, Setting("10img", "10", 10, shots=10))
    monkeypatch.setitem(registry.TASKS, entry.name, dataclasses.replace(entry, settings=tuple(settings)))
    results, records = _bench(tmp_path, "--setting", "5img", "10img", "--classifier", "logreg")
    ten = [r for r in records if r["setting"] == "10img"]
    assert sorted(r["seed"] for r in ten) == [1, 2, 3] and all(r["num_train"] == 160 for r in ten)  # 16 classes
    md = (results / "leaderboard.md").read_text()
    header = next(line for line in md[md.index("## embedded-lowshot"):].splitlines() if line.startswith("| model"))
    assert header.endswith("| 5img | 10img |")
    fig = draw_task(load_summary(results)[1], "embedded-lowshot", classifier="logreg")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10"]  # the settings it has results of
    assert list(ax.get_xticks()) == [5, 10]  # 80 and 160 labelled images of 16 classes
    assert sorted(ax.containers[0].lines[0].get_xdata()) == [5, 10]  # the points of this run


class NearestCentroid:
    """Nearest class mean on L2-normalised features: a classifier the suite does not have."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(0) for c in self.classes_])
        return self

    def predict(self, X):
        return self.classes_[(X @ self.means_.T).argmax(1)]


def test_a_new_classifier_is_one_entry(tmp_path, monkeypatch):
    """One `ClassifierSpec` (plus its estimator) that fits single labels: every single-label family runs it, the
    CLI offers it, its records and table rows follow; families of other labels do not run it."""
    def fit(X, y, **_):
        return NearestCentroid().fit(X, y), {"hyperparameters": {}, "hyperparameters_chosen_by": "none"}

    spec = ClassifierSpec("centroid", ("single-label",), lambda config: config.lowshot_feature, "L2",
                          lambda X: X / np.linalg.norm(X, axis=1, keepdims=True), fit)
    monkeypatch.setitem(CLASSIFIERS, "centroid", spec)
    families = {registry.get_task(n).family for n in registry.TASKS
                if "centroid" in registry.get_task(n).protocol.classifiers}
    assert families == {"classification", "transfer"}  # the single-label families, and only they
    results, records = _bench(tmp_path, "--setting", "5img", "--classifier", "centroid")  # a CLI choice now
    assert {(r["classifier"], r["preprocessing"]) for r in records} == {("centroid", "L2")} and len(records) == 3
    # seed 1's score is the nearest class mean's, recomputed here from the model's features of the split's images
    task = registry.get_task("embedded-lowshot").build(registry.TaskOptions())
    names, _ = task.data.splits[("5img", 1)]
    model = fixture_model()
    transform = model.transform(task.data.resize, task.data.crop)
    idx = np.array([task.train.index_of(n) for n in names])
    train = extract_features(model, task.train, idx, transform, ["cls"], workers=0, progress=False)["cls"]
    test = extract_features(model, task.data.test, np.arange(len(task.data.test)), transform, ["cls"], workers=0,
                            progress=False)["cls"]
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)  # noqa: E731
    pred = NearestCentroid().fit(unit(train), np.asarray(task.train.targets)[idx]).predict(unit(test))
    expected = 100 * np.mean(pred == np.asarray(task.data.test.targets))
    assert next(r for r in records if r["seed"] == 1)["metrics"]["top1"] == pytest.approx(expected)
    summary = load_summary(results)[1]
    row = summary[(summary["classifier"] == "centroid") & (summary["setting"] == "5img")]
    assert len(row) == 1 and row["n_seeds"].iloc[0] == 3
    assert row["mean"].iloc[0] == pytest.approx(np.mean([r["metrics"]["top1"] for r in records]))
    md = (results / "leaderboard.md").read_text()
    assert "| model | method | source | 5img |" in md and "| dino_pretrain.pth | dino | ours | " in md


def test_a_new_eval_feature_is_one_declaration(tmp_path, monkeypatch):
    """The DINO rules with another k-NN feature: the k-NN records read it, under the classifier's plain name."""
    monkeypatch.setitem(zoo.METHODS, "dino", dataclasses.replace(zoo.METHODS["dino"], knn_feature="cls_last4"))
    _, records = _bench(tmp_path, "--setting", "1percent")
    feature = {r["classifier"]: r["feature"] for r in records}
    assert feature == {"logreg": "cls", "knn": "cls_last4"}

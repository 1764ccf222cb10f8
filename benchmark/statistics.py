"""Which differences are real: a 95 % interval for every cell, and paired comparisons of two models.

A cell (model, task, setting, classifier) is the mean over seeds of one score per seed. Two things make it vary:
the labelled subset (the seed) and the evaluation images (a sample of the images the task stands for). Every model
of a results directory is fitted on the same labelled subsets and scored on the same images, so two models' cells
pair by seed and by image.

**Interval of a cell** ("seed t + image bootstrap"): with S seeds whose scores have sample variance s^2, and B
bootstrap resamples of the evaluation images (one multinomial draw of the images shared by all seeds, the
seed-mean score recomputed from the records' evidence, `benchmark.evidence`) whose variance is v_img,

    SE^2 = s^2 / S + v_img,   df = SE^4 (S - 1) / (s^2 / S)^2   (Welch-Satterthwaite; v_img has df ~ B),
    interval = mean -+ t_{0.975, df} SE.

s^2 also holds the part of the image noise that differs between seeds, so the interval errs on the wide side.
Without evidence (records written before it was kept): the t-interval over seeds (SE^2 = s^2 / S, df = S - 1);
with one seed and no evidence: no interval. With one seed and evidence: the image bootstrap alone (normal
quantile), which says nothing about another labelled subset.

**Paired comparison** of models A and B on a cell: the same computation on the per-seed differences A_s - B_s
(seeds paired by their labelled subset; image resamples shared by A and B, so images pair too): the mean
difference, its 95 % interval, and the two-sided p-value of the paired t statistic difference / SE on df degrees
of freedom ("paired t over seeds + paired image bootstrap"). Holm's step-down correction across the cells of a
table controls the chance of any false "significant" in that table at 5 %.

The coverage of these intervals is checked by simulation (tests/test_statistics.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from lowshot.model_zoo.errors import BadInputError, UnknownNameError
from lowshot.model_zoo.files import digest

from .evidence import has_evidence, read_evidence, resampled

CONFIDENCE = 0.95
REPLICATES = 400  # image bootstrap resamples: the SE estimate's relative error is about 1 / sqrt(2 B) = 3.5 %
CHUNK_ELEMENTS = 1 << 22  # bootstrap weights held at once (B_chunk x N)
METHOD_BOOTSTRAP = "seed t + image bootstrap"
METHOD_SEEDS = "t over seeds"
METHOD_IMAGES = "image bootstrap (one seed)"
TEST_PAIRED = "paired t over seeds + paired image bootstrap"
COMPARISON_COLUMNS = ["task", "setting", "classifier", "mean_a", "mean_b", "difference", "ci_low", "ci_high",
                      "p_value", "p_holm", "significant"]


class NotPairedError(BadInputError):
    pass


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    se: float
    df: float
    method: str
    seeds: int


def t_interval(per_seed, image_variance=None, confidence: float = CONFIDENCE):
    """(mean, low, high, se, df) from per-seed values [..., S] and the image bootstrap variance of their mean [...]
    (None: no evidence); vectorised over the leading axes (the coverage simulation calls it on thousands of cases)."""
    per_seed = np.asarray(per_seed, np.float64)
    s = per_seed.shape[-1]
    mean = per_seed.mean(-1)
    seed_var = per_seed.var(-1, ddof=1) / s if s > 1 else np.zeros_like(mean)
    image_var = np.zeros_like(mean) if image_variance is None else np.asarray(image_variance, np.float64)
    if image_variance is None and s < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan, nan, nan
    total = seed_var + image_var
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seed_var > 0, total**2 * (s - 1) / seed_var**2, np.inf) if s > 1 else np.full_like(mean, np.inf)
    se = np.sqrt(total)
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return mean, mean - half, mean + half, se, df


def p_value(mean, se, df):
    """Two-sided p-value of mean / se on df degrees of freedom; 1 when there is no difference at all (se = 0 and
    mean = 0: the same predictions), 0 when every resample shows the same non-zero difference."""
    mean, se, df = (np.asarray(v, np.float64) for v in (mean, se, df))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(mean / se), df)
    return np.where(se > 0, p, np.where(mean == 0, 1.0, 0.0))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(p_values, np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="mergesort")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


# --------------------------------------------------------------------------- from records


def _by_seed(records: list[dict]) -> dict:
    seeds = {}
    for r in records:
        if r["seed"] in seeds:
            raise BadInputError(f"{r.get('path')}: two records of seed {r['seed']} in one cell (another is "
                                f"{seeds[r['seed']].get('path')})")
        seeds[r["seed"]] = r
    return dict(sorted(seeds.items()))


def _score(record: dict) -> float:
    return float(record["metrics"][record["main_score"]])


def _rng(*parts) -> np.random.Generator:
    """A generator seeded by what is resampled, so that tables are reproducible."""
    return np.random.default_rng(int(digest([str(p) for p in parts])[:15], 16))


def image_replicates(main_score: str, first: list, second: list | None = None, replicates: int = REPLICATES,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """[B] bootstrap replicates of the seed-mean score of the evidence `first` (one per seed), or of the seed-mean
    difference first - second (paired by position): each replicate draws the evaluation images once with
    replacement (multinomial counts) and applies the draw to every seed and both models."""
    rng = rng or np.random.default_rng(0)
    n = first[0].num_images
    if any(e.num_images != n for e in first + (second or [])):
        raise NotPairedError("evidence of different numbers of evaluation images cannot be paired")
    out = []
    step = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, replicates, step):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(step, replicates - start))
        values = np.mean([resampled(e, main_score, weights) for e in first], 0)
        if second is not None:
            values = values - np.mean([resampled(e, main_score, weights) for e in second], 0)
        out.append(values)
    return np.concatenate(out)


def _evidence(records: list[dict]) -> list | None:
    return [read_evidence(r) for r in records] if all(has_evidence(r) for r in records) else None


def cell_interval(records: list[dict], replicates: int = REPLICATES) -> Interval:
    """The 95 % interval of the cell made of `records` (one per seed, one model, task, setting and classifier)."""
    seeds = _by_seed(records)
    values = np.array([_score(r) for r in seeds.values()])
    evidence = _evidence(list(seeds.values()))
    image_var = None
    if evidence is not None:
        first = next(iter(seeds.values()))
        reps = image_replicates(first["main_score"], evidence, replicates=replicates,
                                rng=_rng("cell", *(r.get("identity") for r in seeds.values())))
        image_var = reps.var(ddof=1)
    mean, low, high, se, df = (float(v) for v in t_interval(values, image_var))
    method = METHOD_SEEDS if evidence is None else METHOD_BOOTSTRAP if len(values) > 1 else METHOD_IMAGES
    return Interval(mean, low, high, se, df, method if not math.isnan(low) else "none (one seed, no evidence)",
                    len(values))


@dataclass(frozen=True)
class Comparison:
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: int
    method: str


def _check_paired(a: dict, b: dict) -> None:
    fa, fb = a.get("data_fingerprint") or {}, b.get("data_fingerprint") or {}
    for part in ("labelled", "evaluation"):
        if fa.get(part) is None or fa.get(part) != fb.get(part):  # unknown (older records) is not the same
            raise NotPairedError(f"{a.get('path')} and {b.get('path')}: seed {a['seed']} was not run on the same "
                                 f"{'labelled subset' if part == 'labelled' else 'evaluation set'}: not paired")


def compare_cell(records_a: list[dict], records_b: list[dict], replicates: int = REPLICATES) -> Comparison:
    """Model A against model B on one (task, setting, classifier): their seeds in common, paired."""
    a, b = _by_seed(records_a), _by_seed(records_b)
    common = [s for s in a if s in b]
    if not common:
        raise NotPairedError(f"no seed in common between {sorted(a)} and {sorted(b)}")
    for s in common:
        _check_paired(a[s], b[s])
    ra, rb = [a[s] for s in common], [b[s] for s in common]
    diffs = np.array([_score(x) - _score(y) for x, y in zip(ra, rb)])
    ea, eb = _evidence(ra), _evidence(rb)
    image_var, method = None, "paired t over seeds"
    if ea is not None and eb is not None:
        reps = image_replicates(ra[0]["main_score"], ea, eb, replicates,
                                rng=_rng("pair", *sorted(str(r.get("identity")) for r in ra + rb)))  # A-B, B-A alike
        image_var, method = reps.var(ddof=1), TEST_PAIRED
    mean, low, high, se, df = (float(v) for v in t_interval(diffs, image_var))
    p = float(p_value(mean, se, df)) if not math.isnan(se) else float("nan")
    return Comparison(float(np.mean([_score(r) for r in ra])), float(np.mean([_score(r) for r in rb])), mean, low,
                      high, p, len(common), method)


def cells(records: list[dict]) -> dict:
    """{(model, task, setting, classifier): [records]} of the classifier records (label-free scores have no seeds
    to pair and are left out)."""
    out = {}
    for r in records:
        if r.get("family") == "label-free":
            continue
        out.setdefault((r["model"], r["task"], r["setting"], r["classifier"]), []).append(r)
    return out


def compare_models(records: list[dict], a: str, b: str, task: str | None = None,
                   replicates: int = REPLICATES) -> list[dict]:
    """One row per cell both models have (COMPARISON_COLUMNS, plus the seeds and the test's name), Holm-corrected
    per task (a task's table)."""
    by_cell = cells(records)
    models = {m for m, *_ in by_cell}
    for name in (a, b):
        if name not in models:
            raise UnknownNameError(f"model {name!r} has no record in these results (models: {sorted(models)})")
    if task is not None and not any(t == task for _, t, _, _ in by_cell):
        raise UnknownNameError(f"task {task!r} has no record in these results")
    rows = []
    for (model, t, setting, classifier), recs in sorted(by_cell.items()):
        if model != a or (task is not None and t != task) or (b, t, setting, classifier) not in by_cell:
            continue
        c = compare_cell(recs, by_cell[(b, t, setting, classifier)], replicates)
        rows.append({"task": t, "setting": setting, "classifier": classifier, **asdict(c)})
    for t in {r["task"] for r in rows}:
        mine = [r for r in rows if r["task"] == t]
        for r, p in zip(mine, holm([r["p_value"] for r in mine])):
            r["p_holm"] = float(p)
            r["significant"] = bool(p < 1 - CONFIDENCE)
    return rows


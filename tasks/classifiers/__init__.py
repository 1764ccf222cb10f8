"""Classifiers for frozen features in the low-label regime: small scikit-learn-style estimators without global
state, and the registry tasks and the CLI read them from.

* `preprocess` -- the per-sample normalisation of MSN's evaluation code (cyanure's ``preprocess(X,
  centering=True, normalize=True, columns=False)``): subtract each row's own mean, then L2-normalise each row.
* `LogisticRegression` -- multinomial (or one-vs-rest multi-label) logistic regression with an L2 penalty and no
  intercept, solved full-batch in torch (CPU or CUDA): Newton-CG for the small (few-shot) problems, many at once
  (`newton.py`), L-BFGS for the larger ones (`solver.py`); the estimator in `logistic.py`.
* `select_lambda`, `choose_lambda`, `LambdaPolicy` -- λ chosen on the labelled set only, the grid and its folds in
  one batched solve, extended past an edge the cross-validation picks (`selection.py`).
* `KNNClassifier` -- DINO's temperature-weighted cosine k-NN, faiss or torch (`knn.py`).
* `linear_head` -- the linear segmentation head and its training.
* `CLASSIFIERS` -- name -> `ClassifierSpec` (`registry.py`).
"""
from .knn import KNNClassifier
from .logistic import DEFAULT_LAMBDA, LogisticRegression, preprocess
from .registry import CLASSIFIERS, ClassifierSpec, classifiers_for, get_classifier
from .selection import LambdaPolicy, choose_lambda, select_lambda

__all__ = ["preprocess", "LogisticRegression", "select_lambda", "choose_lambda", "LambdaPolicy", "KNNClassifier",
           "DEFAULT_LAMBDA", "CLASSIFIERS", "ClassifierSpec", "classifiers_for",
           "get_classifier"]

"""A small iris classifier in plain Python (no scikit-learn on this machine): nearest class mean,
softmax over negative squared distances. Served by the real Seldon microservice (IrisModel.py) and
MLServer (mlserver_iris/), and called directly by the tests to know the model's own answers."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

CLASSES = ("setosa", "versicolor", "virginica")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
#: Per-class feature means of Fisher's iris data.
MEANS = ((5.006, 3.428, 1.462, 0.246), (5.936, 2.770, 4.260, 1.326), (6.588, 2.974, 5.552, 2.026))
SPREAD = ((0.35, 0.38, 0.17, 0.10), (0.52, 0.31, 0.47, 0.20), (0.64, 0.32, 0.55, 0.27))


def proba(rows: Iterable[Sequence[float]]) -> list[list[float]]:
    """Class probabilities per row (the model's ``predict_proba``)."""
    out = []
    for row in rows:
        scores = [-sum((float(x) - m) ** 2 for x, m in zip(row, mean, strict=True)) for mean in MEANS]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        out.append([w / total for w in weights])
    return out


def iris_rows(count: int = 150, seed: int = 7) -> list[tuple[float, float, float, float, str]]:
    """``count`` iris-like rows (features to 1 decimal, then the species), the same for a seed."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        k = i * len(CLASSES) // count
        feats = [round(max(0.1, rng.gauss(m, s)), 1) for m, s in zip(MEANS[k], SPREAD[k], strict=True)]
        rows.append((*feats, CLASSES[k]))
    return rows  # type: ignore[return-value]

"""The real scikit-learn iris model (tests/models/iris_sklearn.py, saved with joblib at $IRIS_MODEL) as a
Seldon Core v1 Python model: ``predict_proba``, with the model's classes as ``class_names``."""

from __future__ import annotations

import os
from typing import Any

import joblib


class IrisModel:
    """Answers each row with the model's three class probabilities."""

    def __init__(self) -> None:
        self.model = joblib.load(os.environ["IRIS_MODEL"])
        self.class_names = [str(c) for c in self.model.classes_]

    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:  # noqa: N803 (Seldon's name)
        return self.model.predict_proba(X)

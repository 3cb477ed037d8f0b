"""The iris classifier (iris_math.py) as a Seldon Core v1 Python model: ``predict_proba`` with class names."""

from __future__ import annotations

from typing import Any

from iris_math import CLASSES, proba


class IrisModel:
    """Answers each row with its three class probabilities, named by ``class_names``."""

    class_names = list(CLASSES)

    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:  # noqa: N803 (Seldon's name)
        rows = X.tolist() if hasattr(X, "tolist") else X
        return proba(rows)

"""The real scikit-learn iris model, run with a model venv's own python (.venvs/seldon or .venvs/mlserver:
their scikit-learn versions differ, so each venv trains and answers with its own model).

    python iris_sklearn.py data OUT.json              the 150 rows of load_iris(): names and rows
    python iris_sklearn.py train MODEL.joblib [frame] LogisticRegression on them, saved with joblib
    python iris_sklearn.py proba MODEL.joblib ROWS.json OUT.json   the saved model's predict_proba

``frame`` trains on a DataFrame with the real column names (the MLServer model whose inputs are the
columns); answers are written with json (repr floats), so they compare exactly.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def data() -> dict[str, Any]:
    iris = load_iris()
    species = [str(iris.target_names[t]) for t in iris.target]
    return {"features": list(iris.feature_names), "classes": [str(n) for n in iris.target_names],
            "rows": [[*map(float, x), s] for x, s in zip(iris.data.tolist(), species, strict=True)]}


def frame(rows: list[list[float]], names: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=names)


def main(argv: list[str]) -> None:
    command, path = argv[0], argv[1]
    iris = data()
    if command == "data":
        with open(path, "w") as f:
            json.dump(iris, f)
    elif command == "train":
        x = [r[:4] for r in iris["rows"]]
        model = LogisticRegression(max_iter=1000)
        model.fit(frame(x, iris["features"]) if argv[2:] == ["frame"] else x, [r[4] for r in iris["rows"]])
        joblib.dump(model, path)
    elif command == "proba":
        model = joblib.load(path)
        with open(argv[2]) as f:
            rows = json.load(f)
        x = frame(rows, iris["features"]) if hasattr(model, "feature_names_in_") else rows
        with open(argv[3], "w") as f:
            json.dump(model.predict_proba(x).tolist(), f)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

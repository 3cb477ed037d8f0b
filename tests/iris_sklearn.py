"""The real iris data and real scikit-learn iris models for the table tests, trained once a session in
each model venv (.venvs/seldon for the Seldon microservice, .venvs/mlserver for MLServer's sklearn
runtime) and asked for their own answers there, by tests/models/iris_sklearn.py in a subprocess."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import mlserver_servers, servers
from tests.mlserver_servers import MLSERVER_VENV, ensure_mlserver_venv
from tests.servers import SELDON_PYTHON, SeldonServer, ensure_seldon_venv, loopback_env

MODELS = Path(__file__).parent / "models"
SCRIPT = MODELS / "iris_sklearn.py"
MLSERVER_PYTHON = MLSERVER_VENV / "bin" / "python"


def _script(python: Path, *args: str | Path) -> None:
    proc = subprocess.run([str(python), str(SCRIPT), *map(str, args)], timeout=300, env=loopback_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{python} {SCRIPT.name} {args[0]}: {proc.stderr[-3000:]}"


def ensure_sklearn(python: Path, setup_script: Path) -> None:
    """A model venv made before scikit-learn joined it gets it from its set-up script (which notices)."""
    if subprocess.run([str(python), "-c", "import sklearn"], capture_output=True, timeout=120).returncode:
        subprocess.run(["bash", str(setup_script)], check=True, timeout=900, env=loopback_env())


@functools.cache
def iris() -> dict[str, Any]:
    """``load_iris()`` as ``features`` (the real column names), ``classes`` and ``rows`` (4 floats, species)."""
    ensure_sklearn(ensure_seldon_venv(), servers.SETUP_SCRIPT)
    with tempfile.TemporaryDirectory() as tmp:
        _script(SELDON_PYTHON, "data", Path(tmp) / "iris.json")
        data: dict[str, Any] = json.loads((Path(tmp) / "iris.json").read_text())
    return data


def model_proba(python: Path, model: Path, rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """The saved model's own ``predict_proba`` on ``rows``, in the venv that trained it."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rows.json").write_text(json.dumps([list(r) for r in rows]))
        _script(python, "proba", model, Path(tmp) / "rows.json", Path(tmp) / "proba.json")
        answer: list[list[float]] = json.loads((Path(tmp) / "proba.json").read_text())
    return answer


@dataclass(frozen=True)
class IrisModels:
    """The saved models and, per model, its answers for the 150 iris rows (features only)."""

    seldon_model: Path
    seldon_proba: list[list[float]]
    mlserver_dirs: list[Path]
    mlserver_proba: dict[str, list[list[float]]]


def _mlserver_dir(root: Path, name: str, inputs: list[dict[str, Any]], extra: dict[str, Any]) -> Path:
    directory = root / name
    directory.mkdir()
    _script(MLSERVER_PYTHON, "train", directory / "model.joblib", *(["frame"] if len(inputs) > 1 else []))
    settings = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel", "inputs": inputs,
                "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}],
                "parameters": {"uri": "./model.joblib", "version": "v1",
                               "extra": {"predict_fn": "predict_proba"}, **extra}}
    (directory / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return directory


@pytest.fixture(scope="session")
def iris_models(tmp_path_factory: pytest.TempPathFactory) -> IrisModels:
    """LogisticRegression on the iris rows, saved with joblib: one for the Seldon microservice, and for
    MLServer ``iris`` (one [rows, 4] tensor) and ``iris-columns`` (one input per column, a DataFrame)."""
    root = tmp_path_factory.mktemp("iris-models")
    features = [r[:4] for r in iris()["rows"]]
    _script(SELDON_PYTHON, "train", root / "seldon.joblib")
    ensure_mlserver_venv()
    ensure_sklearn(MLSERVER_PYTHON, mlserver_servers.SETUP_SCRIPT)
    tensor = _mlserver_dir(root, "iris", [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}], {})
    columns = _mlserver_dir(root, "iris-columns", [{"name": n, "datatype": "FP64", "shape": [-1, 1]}
                                                   for n in iris()["features"]], {"content_type": "pd"})
    return IrisModels(root / "seldon.joblib", model_proba(SELDON_PYTHON, root / "seldon.joblib", features),
                      [tensor, columns],
                      {d.name: model_proba(MLSERVER_PYTHON, d / "model.joblib", features) for d in (tensor, columns)})


@pytest.fixture(scope="session")
def iris_seldon(iris_models: IrisModels) -> Iterator[SeldonServer]:
    """The real Seldon microservice serving the Seldon venv's iris model (tests/models/IrisModel.py)."""
    with SeldonServer("IrisModel", MODELS, env={"IRIS_MODEL": str(iris_models.seldon_model)}) as server:
        yield server

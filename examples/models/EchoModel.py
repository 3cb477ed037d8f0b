"""A Seldon Core v1 Python model that answers with its input, so tests can compare."""

from __future__ import annotations

from typing import Any


class EchoModel:
    """Echo model for the real `seldon-core-microservice`."""

    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:  # noqa: N803 (Seldon's name)
        return X

    def send_feedback(
        self,
        features: Any,
        feature_names: Any,
        reward: float,
        truth: Any,
        routing: Any = None,
    ) -> Any:
        """Answer with the reward received, so tests can tell each feedback reached the model."""
        return [reward]

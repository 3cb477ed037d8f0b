"""A Seldon Core v1 Python model that answers with the id of the process serving it, so a test
can count how requests spread over the server's REST and gRPC worker processes (issue 13)."""

from __future__ import annotations

import os
from typing import Any


class PidModel:
    """Each answer row is ``[pid]`` and ``meta.tags.pid`` is the pid: the tag survives every
    payload type, the row survives a client that drops tags (the original over gRPC)."""

    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:  # noqa: N803 (Seldon's name)
        try:
            rows = len(X)
        except TypeError:
            rows = 1
        return [[os.getpid()] for _ in range(max(rows, 1))]

    def tags(self) -> dict[str, Any]:
        """Merged by the microservice into the answer's ``meta.tags``."""
        return {"pid": os.getpid()}

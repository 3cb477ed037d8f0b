"""A Seldon Core v1 Python model that refuses one value and answers ``inf`` for another, so the
isolation of lines in mini-batches (issue 19) is checked against the real microservice.

* any request holding the value 666 is refused as a whole: HTTP 400 ``MICROSERVICE_BAD_DATA``;
* any request holding 777 raises a plain exception, as do texts and ragged rows (``np.asarray``):
  HTTP 500 ``MICROSERVICE_INTERNAL_ERROR`` / gRPC UNKNOWN; the first request holding 555 raises too (a
  passing exception: a feature store that timed out once), later ones are answered;
* a row holding 999 is answered with a row of ``inf`` (the microservice writes ``Infinity``);
* any other row comes back as floats, ``[x * 2 for x in row]``, so a test sees the model did it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PickyModel:
    """Rows times two; refuses 666, answers 999 with infinities."""

    seen_555 = False

    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:  # noqa: N803 (Seldon's name)
        from seldon_core.flask_utils import SeldonMicroserviceException

        array = np.asarray(X, dtype=float)
        if (array == 666).any():
            raise SeldonMicroserviceException("the value 666 is refused", status_code=400)
        if (array == 777).any():
            raise ValueError("the model cannot take 777")
        if (array == 555).any() and not self.seen_555:
            self.seen_555 = True
            raise ConnectionError("the feature store did not answer in time")
        out = array * 2
        for i, row in enumerate(array):
            if (row == 999).any():
                out[i] = np.inf
        return out

"""What a V2 model says about itself (its metadata), and how a line is fitted to it.

Read once before a run (:mod:`seldon_batch_tx.pipeline.v2_discovery`: REST ``GET
/v2/models/NAME[/versions/V]`` plus Triton's ``/config``, or gRPC ``ModelMetadata``), a
:class:`ModelMetadata` gives the defaults a user would otherwise have to know: the input names
(``--input-name``), their datatypes (``-p``) and shapes. A shape's first dimension is the batch
dimension when the model batches (Triton: ``max_batch_size > 0``; elsewhere a leading ``-1``);
``-1`` elsewhere is a dimension of any size.

:func:`fit_shape` decides, before anything is sent, whether a line's value can be that input and
with which request shape: a line holding one row (``[1, 2, 3]`` for ``[-1, 3]``, a text for
``[-1, 1]``) gets the batch dimension added, a line holding several rows (``[[...], [...]]``)
keeps them; anything else is that line's ``input_error`` naming the shape the model wants.
Other readers (the row cap of ``--max-batch-rows``) use :attr:`ModelMetadata.max_batch_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["ModelMetadata", "TensorSpec", "fit_shape", "from_grpc", "from_rest", "max_batch_size_from_config"]

#: Largest metadata answer read (REST body, gRPC message): a model with thousands of inputs fits.
MAX_METADATA_BYTES = 1 << 20
_MAX_TENSORS = 1024
_MAX_RANK = 32


@attrs.frozen
class TensorSpec:
    """One input or output as the model declares it (``shape``: -1 for any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.datatype}[{', '.join(map(str, self.shape))}]"


@attrs.frozen
class ModelMetadata:
    """The model's inputs and outputs, and its batch limit where the server says it (Triton)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    platform: str = ""
    #: Triton's ``max_batch_size`` (0: the model does not batch); None when the server has no ``/config``.
    max_batch_size: int | None = None

    @property
    def batching(self) -> bool:
        """Whether the first dimension of every input is a batch dimension (rows may be stacked)."""
        if self.max_batch_size is not None:
            return self.max_batch_size > 0
        return bool(self.inputs) and all(s.shape[:1] == (-1,) for s in self.inputs)

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)

    def describe(self) -> str:
        """One line for the log: what was discovered."""
        inputs = ", ".join(s.describe() for s in self.inputs) or "none declared"
        outputs = ", ".join(s.describe() for s in self.outputs) or "none declared"
        limit = "" if self.max_batch_size is None else f"; max_batch_size {self.max_batch_size}"
        batching = "batches rows" if self.batching else "one request at a time (no batch dimension)"
        return f"inputs {inputs}; outputs {outputs}{limit}; {batching}"


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_RANK:
        raise ValueError(f"{where}: shape is not a list of at most {_MAX_RANK} integers")
    dims = []
    for d in value:
        if isinstance(d, str) and d.lstrip("-").isdigit():  # protobuf JSON writes int64 as a string
            d = int(d)
        if not isinstance(d, int) or isinstance(d, bool) or d < -1:
            raise ValueError(f"{where}: dimension {d!r} is not an integer >= -1")
        dims.append(d)
    return tuple(dims)


def _specs(value: Any, where: str) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_TENSORS:
        raise ValueError(f"{where} is not a list of at most {_MAX_TENSORS} tensors")
    specs = []
    for i, t in enumerate(value):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("datatype"), str):
            raise ValueError(f"{where}[{i}] has no name or datatype")
        specs.append(TensorSpec(t["name"], t["datatype"].upper(), _shape(t.get("shape"), f"{where}[{i}]")))
    return tuple(specs)


def from_rest(doc: Any) -> ModelMetadata:
    """The metadata in a REST ``GET /v2/models/NAME`` answer; ValueError when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError("not a V2 model metadata object (no name)")
    platform = doc.get("platform")
    return ModelMetadata(doc["name"], _specs(doc.get("inputs"), "inputs"), _specs(doc.get("outputs"), "outputs"),
                         platform if isinstance(platform, str) else "")


def from_grpc(message: Any) -> ModelMetadata:
    """The metadata in a gRPC ``ModelMetadataResponse``; ValueError, as :func:`from_rest`, when its
    tensors are too many or their shapes too long or below -1."""
    def specs(tensors: Sequence[Any], where: str) -> tuple[TensorSpec, ...]:
        return _specs([{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors], where)

    return ModelMetadata(message.name, specs(message.inputs, "inputs"), specs(message.outputs, "outputs"),
                         message.platform)


def max_batch_size_from_config(doc: Any) -> int | None:
    """Triton's ``max_batch_size`` from a ``GET /v2/models/NAME/config`` answer; None if absent."""
    value = doc.get("max_batch_size") if isinstance(doc, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _matches(shape: Sequence[int], spec: Sequence[int]) -> bool:
    return len(shape) == len(spec) and all(d == -1 or d == s for s, d in zip(shape, spec, strict=True))


def fit_shape(shape: tuple[int, ...], spec: TensorSpec, batching: bool) -> tuple[list[int], int]:
    """The request shape and row count of a value of ``shape`` sent as ``spec``.

    With a batch dimension: a value of one row's shape is one row (the batch dimension added, and
    size-1 leading dimensions where the row's shape has them: a text for ``[-1, 1]``); a value
    with one more dimension is that many rows. Without: the value must have the input's shape
    (leading size-1 dimensions added). ValueError, saying what the model wants, when it cannot fit.
    """
    if batching:
        row = spec.shape[1:]
        if _matches(shape, row):
            return [1, *shape], 1
        if len(shape) == len(row) + 1 and shape[0] > 0 and _matches(shape[1:], row):
            return list(shape), shape[0]
        pad = len(row) - len(shape)
        if pad > 0 and all(d in (1, -1) for d in row[:pad]) and _matches(shape, row[pad:]):
            return [1, *[1] * pad, *shape], 1
    else:
        if _matches(shape, spec.shape):
            return list(shape), 1
        pad = len(spec.shape) - len(shape)
        if pad > 0 and all(d in (1, -1) for d in spec.shape[:pad]) and _matches(shape, spec.shape[pad:]):
            return [*[1] * pad, *shape], 1
    given = f"[{', '.join(map(str, shape))}]" if shape else "a single value"
    wants = f"rows of [{', '.join(map(str, spec.shape[1:]))}]" if batching else f"[{', '.join(map(str, spec.shape))}]"
    raise ValueError(f"input {spec.name}: a value of shape {given} does not fit the model's {spec.describe()} "
                     f"(it takes {wants})")

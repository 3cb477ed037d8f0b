"""Model-aware V2 requests: a line's value becomes the input tensors the model declares.

Used by :class:`~seldon_batch_tx.protocols.v2.V2Codec` when the model's metadata was read
(:mod:`.v2_metadata`) and the line is not a whole request (``--data-type raw``):

* one input: the line's value (``-a data``: JSON numbers, booleans or strings, nested; ``-a str``:
  the text) is that input, named ``--input-name`` when given, else the model's only input; its
  datatype is ``-p`` when given, else the model's; its shape is fitted to the model's
  (:func:`.v2_metadata.fit_shape`: the batch dimension added for a batching model);
* several inputs: the line is a JSON object of input name to value (``{"INPUT0": [...],
  "INPUT1": [...]}``); every declared input must be there, each is typed and shaped from the
  metadata, and with a batch dimension all must hold the same number of rows.

Whatever cannot fit is that line's ``input_error``, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import BatchConfig
from ..core.strict_json import JSONDict
from .base import InputError
from .v2_metadata import ModelMetadata, TensorSpec, fit_shape
from .v2_types import check_datatype, check_range, infer_datatype

__all__ = ["DEFAULT_INPUT_NAME", "ModelInputs"]

#: ``--input-name``'s default: left at it, the model's own input name is used.
DEFAULT_INPUT_NAME = "input-0"
#: Element types that certainly fit a datatype (checked for a whole tensor at C speed; others element by element).
_FAST_TYPES: dict[str, set[type]] = {"FP16": {int, float}, "FP32": {int, float}, "FP64": {int, float},
                                     "BF16": {int, float}, "BYTES": {str}, "BOOL": {bool}}


#: Names an error line lists (a line's object, or a model's metadata, may hold thousands).
MAX_LISTED = 10
#: Characters of one name an error line shows.
MAX_NAME_CHARS = 100


def listed(names: Iterable[str]) -> str:
    """Names for an error line: at most :data:`MAX_LISTED`, each cut, then how many more there are."""
    names = list(names)
    shown = [n if len(n) <= MAX_NAME_CHARS else n[:MAX_NAME_CHARS] + "..." for n in names[:MAX_LISTED]]
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(shown) + more


def shape_and_flat(value: Any, where: str) -> tuple[tuple[int, ...], list[Any], set[type]]:
    """The shape of a rectangular nested list, its elements in row-major order and their types, a
    level at a time (an image line of 150,528 numbers costs a few hundred list operations, not a
    call per number); a scalar is ``()`` and ``[value]``. InputError for an empty or ragged array."""
    shape = []
    probe = value
    while isinstance(probe, list):
        if not probe:
            raise InputError(f"{where}: empty array")
        shape.append(len(probe))
        probe = probe[0]
    if not shape:
        return (), [value], {type(value)}
    level: list[Any] = value
    for depth, size in enumerate(shape[1:], 1):
        if any(type(row) is not list or len(row) != size for row in level):
            raise InputError(f"{where}: ragged array, rows have different shapes (at depth {depth})")
        level = [x for row in level for x in row]
    types = set(map(type, level))
    if list in types:
        raise InputError(f"{where}: ragged array, rows have different shapes")
    return tuple(shape), level, types


class ModelInputs:
    """Builds a request's ``inputs`` from one line's value, as the model's metadata declares them."""

    def __init__(self, metadata: ModelMetadata, config: BatchConfig, datatype: str | None) -> None:
        self.metadata = metadata
        self.batching = metadata.batching
        self.datatype = datatype  # -p, when it names a V2 datatype: the user's choice wins
        self.single: TensorSpec | None = None
        if config.input_name != DEFAULT_INPUT_NAME:
            declared = metadata.input(config.input_name)
            # a name the model does not declare: its shape is unknown, so take the line's own
            self.single = declared or TensorSpec(config.input_name, datatype or "", ())
        elif len(metadata.inputs) == 1:
            self.single = metadata.inputs[0]

    def tensors(self, value: Any) -> tuple[list[JSONDict], int]:
        """The request's input tensors for a line's value, and the rows they add to a mini-batch."""
        tensors, rows = self._several(value) if isinstance(value, dict) else self._one(value)
        limit = self.metadata.max_batch_size
        if limit and rows > limit:
            raise InputError(f"the line holds {rows} rows; the model takes at most {limit} per request "
                             f"(its max_batch_size)")
        return tensors, rows

    def _one(self, value: Any) -> tuple[list[JSONDict], int]:
        if self.single is None:
            names = listed(s.name for s in self.metadata.inputs)
            raise InputError(f"the model takes {len(self.metadata.inputs)} inputs ({names}): give each line "
                             f"as a JSON object of input name to value")
        tensor, rows = self._tensor(self.single, value, self.datatype)
        return [tensor], rows

    def _several(self, value: JSONDict) -> tuple[list[JSONDict], int]:
        declared = {s.name for s in self.metadata.inputs}
        unknown = sorted(set(value) - declared)
        if unknown:
            raise InputError(f"the model has no input {listed(unknown)} (its inputs: {listed(sorted(declared))})")
        missing = [s.name for s in self.metadata.inputs if s.name not in value]
        if missing:
            raise InputError(f"input {listed(missing)} missing (the model's inputs: "
                             f"{listed(s.name for s in self.metadata.inputs)})")
        tensors, rows = [], set()
        for spec in self.metadata.inputs:
            tensor, n = self._tensor(spec, value[spec.name], None)
            tensors.append(tensor)
            rows.add(n)
        if len(rows) > 1:
            raise InputError(f"the inputs hold different numbers of rows ({', '.join(map(str, sorted(rows)))})")
        return tensors, rows.pop()

    def _tensor(self, spec: TensorSpec, value: Any, datatype: str | None) -> tuple[JSONDict, int]:
        if value is None:
            raise InputError(f"input {spec.name}: null is not a tensor value")
        if isinstance(value, dict):
            raise InputError(f"input {spec.name}: a JSON object is not a tensor value")
        shape, flat, types = shape_and_flat(value, f"input {spec.name}")
        if spec.shape:
            try:
                full, rows = fit_shape(shape, spec, self.batching)
            except ValueError as e:
                raise InputError(str(e)) from None
        else:  # nothing declared: today's reading of the line
            full, rows = list(shape or (1,)), (shape or (1,))[0]
        datatype = datatype or spec.datatype
        if not datatype:
            datatype = infer_datatype(flat)
        try:
            if types <= _FAST_TYPES.get(datatype, set()):  # every element has the right type
                check_range(flat, datatype)
            else:
                check_datatype(flat, datatype)
        except InputError as e:
            raise InputError(f"input {spec.name}: {e}") from None
        return {"name": spec.name, "shape": full, "datatype": datatype, "data": flat}, rows

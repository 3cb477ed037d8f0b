"""The Open Inference Protocol ("V2": MLServer, Triton, KServe) formats: line -> request -> output lines.

Its :class:`~..core.target.Target` is ``[/seldon/NS/NAME]/v2/models/{model}[/versions/{v}]/infer`` over
REST, ``inference.GRPCInferenceService/ModelInfer`` over gRPC, converted by :mod:`.v2_pb`.

The same contract as :class:`~seldon_batch_tx.protocols.seldon.SeldonCodec`, so the engine, retries,
resume, sharding and the dashboard need not know which protocol runs:

* An input line is a whole V2 ``InferenceRequest`` (``--data-type raw``), a JSON array/scalar of
  numbers, booleans or strings (``data``), or a text line (``str``, one BYTES element). Plain
  values become one input tensor named ``--input-name``; its datatype is ``--payload-type`` when
  that is a V2 datatype (``FP32``, ``INT32``...), else inferred: INT64 for integers, FP64 for
  any float, BOOL for booleans, BYTES for strings. When the model's metadata was read before the
  run (``config.v2_model``), :mod:`.v2_inputs` names, types and shapes the inputs instead (a line
  may then also be an object of input name to value), and a model without a batch dimension
  gets one line per request.
* Over REST, answers are read by :func:`.v2_binary.decode_answer` (binary outputs decoded) and,
  with ``--binary-data``, requests sent in binary form.
* Every request carries the line's tags in ``parameters`` (``batch_id``, ``batch_index``,
  ``batch_instance_id``) and ``id`` = ``batch_instance_id``.
* Mini-batches (``--batch-size``) concatenate each input along its first axis; the response's
  every output must have that many rows in total, and is cut back by each line's own row count.
  With mini-batches a flat line (``[1, 2, 3]``) is one row (shape ``[1, 3]``), as for Seldon.
* An output line is the V2 response with the line's tags in ``parameters`` and ``id`` =
  ``batch_instance_id``, in the order :mod:`.v2_lines` documents (the same for every transport).
  It ALSO keeps the tags in ``meta.tags``, like every other output line of this processor, so
  ``--resume``, ``seldon-batch merge``/``verify`` read V2 outputs unchanged.
* An error line: ``{"id", "model_name", "status": {"code", "info", "reason", "status":
  "FAILURE"}, "parameters": tags, "meta": {"tags": tags}}`` (``code``: HTTP or gRPC status).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..config import V2_DATATYPES, BatchConfig
from ..core.failures import check_answer
from ..core.items import Item
from ..core.strict_json import JSONDict
from ..core.target import GrpcRoute, Target
from . import base, v2_binary
from .base import BadResponse, Built, InputError, Parsed, ResponseMismatch
from .v2_lines import output_line
from .v2_types import NUMERIC_INFERRED, check_datatype, infer_datatype

__all__ = ["V2Codec", "infer_datatype", "model_name", "tensor_shape"]


def model_name(config: BatchConfig) -> str:
    """The V2 model addressed: ``--model-name``, else the deployment name."""
    return config.model_name or config.deployment_name


def tensor_shape(value: Any, where: str = "payload") -> tuple[int, ...]:
    """Shape of a rectangular nested list (any leaves); a scalar is ``()``; InputError if ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        raise InputError(f"{where}: empty array")
    inner = tensor_shape(value[0], where)
    for row in value[1:]:
        if tensor_shape(row, where) != inner:
            raise InputError(f"{where}: ragged array, rows have different shapes")
    return (len(value), *inner)


def _first_dim(request: JSONDict) -> int:
    """The rows a V2 request adds to a mini-batch; 0 when its inputs disagree on the first axis."""
    dims = set()
    for tensor in request["inputs"]:
        shape = tensor["shape"]
        dims.add(shape[0] if shape else -1)
    return dims.pop() if len(dims) == 1 and min(dims) >= 0 else 0


class V2Codec:
    """Builds Open Inference Protocol requests for one batch configuration and splits responses."""

    def __init__(self, config: BatchConfig) -> None:
        self.batch_id = config.batch_id
        self.join_input = config.join_input
        self.data_type = config.data_type
        self.datatype = config.payload_type if config.payload_type in V2_DATATYPES else None
        self.input_name = config.input_name
        self.model_name = model_name(config)
        self.model_version = config.model_version
        self.batch_size = config.batch_size
        #: --max-batch-rows, lowered to the model's own max_batch_size where the server states it.
        self.max_rows = config.max_batch_rows
        stated = config.v2_model.max_batch_size if config.v2_model is not None else None
        if stated and (self.max_rows is None or stated < self.max_rows):
            self.max_rows = stated
        #: The model's declared inputs (its metadata, read before the run), else None: today's reading.
        self.model_inputs = None
        if config.v2_model is not None and config.v2_model.inputs and self.data_type != "raw":
            from .v2_inputs import ModelInputs

            self.model_inputs = ModelInputs(config.v2_model, config, self.datatype)
            if not self.model_inputs.batching:
                self.batch_size = 1  # no batch dimension: lines cannot be stacked into one request
        model = quote(self.model_name, safe="")
        version = f"/versions/{quote(self.model_version, safe='')}" if self.model_version else ""
        binary = config.binary_data and config.transport == "rest"
        self.target = Target(f"{base.gateway_prefix(config)}/v2/models/{model}{version}/infer", self._grpc_route,
                             encode=v2_binary.encode_request if binary else None, decode=v2_binary.decode_answer,
                             content_type=v2_binary.CONTENT_TYPE if binary else "application/json")

    def _grpc_route(self) -> GrpcRoute:
        """``inference.GRPCInferenceService/ModelInfer`` (one service: the transport's choice is moot)."""
        from . import v2_pb

        return GrpcRoute(lambda channel, _service: v2_pb.model_infer_call(channel),
                         v2_pb.request_builder(self.model_name, self.model_version),
                         lambda message: check_answer(v2_pb.response_to_dict(message)),
                         service="inference.GRPCInferenceService", rpc="ModelInfer")

    # -- input line -> Parsed -------------------------------------------------------------

    def parse(self, item: Item) -> Parsed:
        """Validate one line; its value is always a request skeleton ``{"inputs": [...], ...}``."""
        line = item.line.strip()
        if not line:
            raise InputError("blank line")
        if self.model_inputs is not None:
            value = base.parse_str(line) if self.data_type == "str" else base.load_json_line(line)
            inputs, rows = self.model_inputs.tensors(value)
            return Parsed(item, {"inputs": inputs}, rows=rows)
        if self.data_type == "str":
            text = base.parse_str(line)  # the same reading of a text line as the Seldon protocol
            return self._plain(item, [text] if self.batch_size > 1 else text)
        value = base.load_json_line(line)
        if self.data_type == "raw":
            return self._parse_raw(item, value)
        if isinstance(value, dict):
            raise InputError("a JSON object: use --data-type raw for whole V2 inference requests")
        if value is None:
            raise InputError("null is not a tensor value")
        if self.batch_size > 1 and (not isinstance(value, list) or not isinstance(value[0] if value else 0, list)):
            value = [value]  # a flat line (or scalar) is one row of the mini-batch
        return self._plain(item, value)

    def _plain(self, item: Item, value: Any) -> Parsed:
        shape = tensor_shape(value)
        flat = base.flatten(value) if shape else [value]
        datatype = self.datatype or infer_datatype(flat)
        check_datatype(flat, datatype)
        tensor = {"name": self.input_name, "shape": list(shape or (1,)), "datatype": datatype, "data": flat}
        return Parsed(item, {"inputs": [tensor]}, rows=(shape or (1,))[0])

    def _parse_raw(self, item: Item, value: Any) -> Parsed:
        if not isinstance(value, dict):
            raise InputError(f"raw payload: expected a V2 InferenceRequest object, got {type(value).__name__}")
        inputs = value.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InputError("raw payload: a V2 InferenceRequest needs a non-empty 'inputs' list")
        for i, tensor in enumerate(inputs):
            where = f"raw payload: inputs[{i}]"
            if not isinstance(tensor, dict):
                raise InputError(f"{where} is not an object")
            for key in ("name", "datatype", "shape", "data"):
                if key not in tensor:
                    raise InputError(f"{where} has no '{key}'")
            shape = tensor["shape"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                     for d in shape):
                raise InputError(f"{where}: shape must be a list of non-negative integers")
        if "parameters" in value and not isinstance(value["parameters"], dict):
            raise InputError("raw payload: 'parameters' must be an object")
        rows = _first_dim(value)
        if self.batch_size > 1 and rows == 0:
            raise InputError("raw payload: its inputs differ in their first dimension, so it cannot join a "
                             "mini-batch (use --batch-size 1)")
        return Parsed(item, value, rows=rows or 1)

    # -- Parsed values -> request body ----------------------------------------------------

    def build(self, parsed: list[Parsed]) -> Built:
        """One request for the first line and the lines that fit it (input names, datatypes, row
        shapes, at most ``max_rows`` rows), the lines it holds, and the others (another request)."""
        first = parsed[0]
        if len(parsed) == 1:
            return self._request(first.value, first.item), [first], []
        anchor = self._signature(first.value)
        members, rest = [first], []
        rows, limit = first.rows, self.max_rows
        for p in parsed[1:]:
            signature = self._signature(p.value)
            if signature != anchor:
                rest.append((p, f"inputs {self._describe(signature)} do not fit the mini-batch's "
                                f"{self._describe(anchor)}"))
            elif base.over_rows(rows, p.rows, limit):
                rest.append((p, f"{p.rows} more rows would pass the limit of {limit} rows per request"))
            else:
                members.append(p)
                rows += p.rows
        if len(members) == 1:
            return self._request(first.value, first.item), members, rest
        merged = []
        for i, tensor in enumerate(first.value["inputs"]):
            parts = [p.value["inputs"][i] for p in members]
            datatypes = {t["datatype"] for t in parts}
            datatype = "FP64" if len(datatypes) > 1 else tensor["datatype"]  # INT64 + FP64 lines
            data = [x for t in parts for x in (base.flatten(t["data"]) if isinstance(t["data"], list) else [t["data"]])]
            rows = sum(t["shape"][0] for t in parts)
            merged.append({**tensor, "shape": [rows, *tensor["shape"][1:]], "datatype": datatype, "data": data})
        return self._request({**first.value, "inputs": merged}, first.item), members, rest

    def _signature(self, request: JSONDict) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """What lines of one mini-batch must share: input names, datatypes and row shapes."""
        inferred = self.data_type != "raw" and self.datatype is None
        out = []
        for t in request["inputs"]:
            kind = "NUMBER" if inferred and t["datatype"] in NUMERIC_INFERRED else t["datatype"]
            out.append((t["name"], kind, tuple(t["shape"][1:])))
        return tuple(out)

    @staticmethod
    def _describe(signature: tuple[tuple[str, str, tuple[int, ...]], ...]) -> str:
        return ", ".join(f"{name} {kind}[n, {', '.join(map(str, rest))}]" if rest else f"{name} {kind}[n]"
                         for name, kind, rest in signature)

    def _request(self, value: JSONDict, item: Item) -> JSONDict:
        own = value.get("parameters")
        return {**value, "id": item.instance_id,
                "parameters": {**(own if isinstance(own, dict) else {}), **base.tags_for(self.batch_id, item)}}

    # -- InferenceResponse -> output lines ----------------------------------------------------

    def results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        """One output line per member, tagged; ResponseMismatch when the outputs' rows don't add up."""
        return base.joined(self._results(response, members), [p.item for p in members], self.join_input)

    def _results(self, response: JSONDict, members: list[Parsed]) -> list[JSONDict]:
        response = base.answer_object(response, "a V2 InferenceResponse")
        if len(members) == 1:
            return [self._tagged(response, members[0])]
        outputs = response.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise ResponseMismatch("mini-batch response has no outputs to split into rows")
        rows = [p.rows for p in members]
        want = sum(rows)
        per_member: list[list[JSONDict]] = [[] for _ in members]
        for output in outputs:
            if not isinstance(output, dict):
                raise ResponseMismatch("mini-batch response has an output that is not an object")
            name = output.get("name", "?")
            shape = output.get("shape")
            if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape):
                raise ResponseMismatch(f"output {name} has no usable shape to split into rows")
            if shape[0] != want:
                raise ResponseMismatch(f"output {name}: model returned {shape[0]} rows for {want} input rows")
            data = output.get("data")
            if not isinstance(data, list):
                raise BadResponse(f"output {name}: data is a JSON {base.json_type(data)}, not an array")
            try:
                flat = base.flatten(data)
            except TypeError:
                raise BadResponse(f"output {name}: data is a ragged array") from None
            size = base.row_size(shape)
            if len(flat) != want * size:
                raise ResponseMismatch(f"output {name}: {len(flat)} elements do not fill its shape {shape}")
            for i, (n, part) in enumerate(zip(rows, base.slices(flat, rows, size), strict=True)):
                per_member[i].append({**output, "shape": [n, *shape[1:]], "data": part})
        return [self._tagged({**response, "outputs": parts}, p) for parts, p in zip(per_member, members, strict=True)]

    def _tagged(self, response: JSONDict, parsed: Parsed) -> JSONDict:
        return output_line(response, parsed.item.instance_id, base.tags_for(self.batch_id, parsed.item))

    # -- error lines ------------------------------------------------------------------------

    def error(
        self, item: Item, reason: str, *, info: str, code: int | None = None,
        own_tags: JSONDict | None = None,
    ) -> JSONDict:
        """An error line: the Seldon error shape plus the V2 ``id``, ``model_name`` and ``parameters``."""
        tags = {**(own_tags or {}), **base.tags_for(self.batch_id, item)}
        line: JSONDict = {"id": item.instance_id, "model_name": self.model_name}
        if self.model_version:
            line["model_version"] = self.model_version
        line["status"] = {"code": code, "info": info, "reason": reason, "status": "FAILURE"}
        line["parameters"] = tags
        line["meta"] = {"tags": tags}
        return base.joined([line], [item], self.join_input)[0]


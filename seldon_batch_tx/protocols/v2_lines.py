"""The V2 output line: one documented shape whatever the transport (REST JSON, gRPC, binary tensors).

Servers differ in how they write the same answer (KServe's REST answer has ``"model_version":
null`` and ``"parameters": null``, its gRPC answer has neither; key orders differ), so every V2
result line is rewritten in one order, with null members dropped:

``id``, ``model_name``, ``model_version`` (when the server names one), ``outputs`` (each:
``name``, ``datatype``, ``shape``, ``parameters`` when not empty, ``data``), any other member the
server sent (in its order), ``parameters`` (the server's, then the line's tags), ``meta`` (with
``tags``).
"""

from __future__ import annotations

from typing import Any

JSONDict = dict[str, Any]

__all__ = ["output_line"]

_FIRST = ("id", "model_name", "model_version", "outputs")
_LAST = ("parameters", "meta")
_TENSOR = ("name", "datatype", "shape", "parameters", "data")


def _tensor(output: Any) -> Any:
    if not isinstance(output, dict):
        return output
    line = {k: output[k] for k in _TENSOR if output.get(k) is not None and not (k == "parameters" and not output[k])}
    line.update((k, v) for k, v in output.items() if k not in _TENSOR and v is not None)
    return line


def output_line(response: JSONDict, instance_id: str, tags: JSONDict) -> JSONDict:
    """The output line of one input line: ``response`` (its share of the answer) in the documented order."""
    line: JSONDict = {"id": instance_id}
    for key in _FIRST[1:]:
        value = response.get(key)
        if value is not None:
            line[key] = [_tensor(o) for o in value] if key == "outputs" and isinstance(value, list) else value
    line.update((k, v) for k, v in response.items() if k not in _FIRST and k not in _LAST and v is not None)
    own = response.get("parameters")
    meta = response.get("meta")
    line["parameters"] = {**(own if isinstance(own, dict) else {}), **tags}
    line["meta"] = {**(meta if isinstance(meta, dict) else {}), "tags": tags}
    return line

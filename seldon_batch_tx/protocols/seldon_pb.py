"""Conversion between the REST JSON shape of Seldon v1 messages and their protobuf form.

The engine builds every request as the REST body (reference section 2); the gRPC transport
turns it into a ``SeldonMessage`` / ``Feedback`` here and turns the response back into the
REST shape, so the output file looks the same whichever transport ran.

Requests are parsed strictly with ``google.protobuf.json_format.ParseDict``: an unknown key
(``"ndarry"``), two payloads at once, a wrong type or bad base64 raises :class:`ValueError`
rather than silently sending an empty message. So does a body nested deeper than protobuf
accepts (ParseDict's limit of 100 messages, which upb's decoder shares: an ndarray about 49
lists deep), never a RecursionError: the direct builder hands deep bodies to ParseDict.

Responses use the REST/proto3-JSON field names (``strData``, ``jsonData``, ``binData`` as
base64, ``tensorShape``, ``doubleVal``, ``requestPath``...). ``google.protobuf.Value`` parts
(``data.ndarray``, ``jsonData``, ``meta.tags``) are converted here rather than by
``json_format`` so that NaN/Infinity survive (``json_format`` refuses them) and so that
integers can be restored:

* ``meta.tags`` and ``jsonData``: each number that is integral and within +-2**53 becomes an
  ``int`` (``batch_index`` 7.0 -> 7). JSON itself has no int/float distinction, so this is
  the honest reading of a value that was sent as JSON.
* ``data.ndarray``: an ndarray is one numpy array on the model side, hence homogeneous; its
  numbers become ints only if *every* number in it is integral (and within +-2**53),
  otherwise all stay floats (``[[1, 0.5]]`` stays ``[[1.0, 0.5]]``, never a mix).

What cannot be preserved over gRPC (the information is not on the wire):

* whether a number was an int or a float: a float ndarray whose values all happen to be
  integral (``[[1.0, 0.0]]``) comes back as ints, a float tag ``1.0`` comes back as ``1``;
  ``-0.0`` comes back as ``0``;
* integers beyond +-2**53 in ndarray/jsonData/tags: they travel as doubles and lose
  precision (they come back as floats);
* ``data.tensor.values`` is ``repeated double`` by definition: always floats;
* an empty repeated field is not on the wire: ``"names": []`` (which the model microservice's
  REST answer has for a 1-d result) is absent over gRPC;
* ``Feedback.reward`` and ``Metric.value`` are 32-bit floats (``0.1`` -> ``0.10000000149...``);
* ``tftensor`` follows the proto3 JSON mapping exactly like the REST server: 64-bit integers
  (``int64Val``, ``dim.size``) are strings, ``stringVal`` is base64, NaN is ``"NaN"``;
* ``customData`` (``google.protobuf.Any``) whose type is unknown here comes back as
  ``{"@type": url, "value": base64}``.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from ..core.failures import RequestFailed, check_answer, not_finite
from ..core.strict_json import JSONDict
from ..protos import prediction_pb2

_MAX_EXACT_INT = 2**53

__all__ = [
    "NonFiniteNumber",
    "answer_to_dict",
    "feedback_from_dict",
    "message_from_dict",
    "message_to_dict",
    "value_to_python",
]


def _parse(body: Any, message: Message, what: str) -> Message:
    """ParseDict with every failure turned into one clear ValueError."""
    if not isinstance(body, dict):
        # ValueError, not TypeError: the engine turns ValueError into an error line.
        raise ValueError(f"{what} must be a JSON object, got {type(body).__name__}")  # noqa: TRY004
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise ValueError(f"invalid {what}: {exc}") from None
    except RecursionError:
        raise ValueError(f"invalid {what}: nested too deeply") from None
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise ValueError(f"invalid {what}: {type(exc).__name__}: {exc}") from None
    return message


class _Unusual(Exception):  # noqa: N818 - a signal, not an error
    """The body is not one of the common shapes the direct builder handles: use ParseDict."""


_MESSAGE_KEYS = frozenset({"data", "meta", "strData", "jsonData"})
_PAYLOAD_KEYS = ("data", "strData", "jsonData")
_DATA_KEYS = frozenset({"names", "ndarray", "tensor"})
_INT32 = 2**31
#: Values nested deeper than this go to ParseDict, whose depth limit (and message) then decides;
#: well below the depth where ParseDict or a server's decoder refuse a message (~49 lists).
_DIRECT_DEPTH = 32


def _set_value(target: struct_pb2.Value, x: Any, depth: int = 0) -> None:
    """Fill a ``google.protobuf.Value`` from a JSON value, exactly as ParseDict would."""
    if depth > _DIRECT_DEPTH:
        raise _Unusual
    kind = type(x)
    if kind is float:
        if not math.isfinite(x):
            raise _Unusual  # ParseDict's own rules (and messages) for NaN/Infinity
        target.number_value = x
    elif kind is int:
        if not -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT:
            raise _Unusual
        target.number_value = x
    elif kind is str:
        target.string_value = x
    elif kind is list:
        values = target.list_value.values
        target.list_value.SetInParent()  # an empty list is still a list_value
        for item in x:
            _set_value(values.add(), item, depth + 1)
    elif kind is bool:
        target.bool_value = x
    elif x is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        fields = target.struct_value.fields
        target.struct_value.SetInParent()
        for key, item in x.items():
            if type(key) is not str:
                raise _Unusual
            _set_value(fields[key], item, depth + 1)
    else:
        raise _Unusual


def _build_message(body: JSONDict) -> prediction_pb2.SeldonMessage:
    """A SeldonMessage built field by field for the bodies the engine makes (data ndarray/tensor,
    strData, jsonData; meta tags/puid): about 20x cheaper than ParseDict. Anything else raises
    _Unusual, so ParseDict decides, with its strict checks and its error messages."""
    if not body.keys() <= _MESSAGE_KEYS or sum(key in body for key in _PAYLOAD_KEYS) > 1:
        raise _Unusual
    msg = prediction_pb2.SeldonMessage()
    meta = body.get("meta")
    if meta is not None:
        if type(meta) is not dict or not meta.keys() <= {"tags", "puid"}:
            raise _Unusual
        msg.meta.SetInParent()
        tags = meta.get("tags")
        if tags is not None:
            if type(tags) is not dict:
                raise _Unusual
            fields = msg.meta.tags
            for key, item in tags.items():
                if type(key) is not str:
                    raise _Unusual
                _set_value(fields[key], item)
        puid = meta.get("puid")
        if puid is not None:
            if type(puid) is not str:
                raise _Unusual
            msg.meta.puid = puid
    if "strData" in body:
        if type(body["strData"]) is not str:
            raise _Unusual
        msg.strData = body["strData"]
    elif "jsonData" in body:
        _set_value(msg.jsonData, body["jsonData"])
    elif "data" in body:
        _build_data(body["data"], msg.data)
    return msg


def _build_data(data: Any, target: prediction_pb2.DefaultData) -> None:
    if type(data) is not dict or not data.keys() <= _DATA_KEYS or ("ndarray" in data and "tensor" in data):
        raise _Unusual
    target.SetInParent()
    names = data.get("names")
    if names is not None:
        if type(names) is not list or not all(type(n) is str for n in names):
            raise _Unusual
        target.names.extend(names)
    if "ndarray" in data:
        rows = data["ndarray"]
        if type(rows) is not list:
            raise _Unusual
        target.ndarray.SetInParent()
        values = target.ndarray.values
        for row in rows:
            _set_value(values.add(), row)
    elif "tensor" in data:
        tensor = data["tensor"]
        if type(tensor) is not dict or not tensor.keys() <= {"shape", "values"}:
            raise _Unusual
        shape, values = tensor.get("shape", []), tensor.get("values", [])
        if type(shape) is not list or not all(type(n) is int and -_INT32 <= n < _INT32 for n in shape):
            raise _Unusual
        if type(values) is not list or not all(
            (type(v) is float and math.isfinite(v)) or type(v) is int for v in values
        ):
            raise _Unusual
        target.tensor.SetInParent()
        target.tensor.shape.extend(shape)
        target.tensor.values.extend(values)


def message_from_dict(body: JSONDict) -> prediction_pb2.SeldonMessage:
    """Build a ``SeldonMessage`` from a REST request body; ValueError if malformed."""
    if type(body) is dict:
        try:
            return _build_message(body)
        except (_Unusual, OverflowError):
            pass
        except RecursionError:
            raise ValueError("invalid SeldonMessage: nested too deeply") from None
    msg = _parse(body, prediction_pb2.SeldonMessage(), "SeldonMessage")
    assert isinstance(msg, prediction_pb2.SeldonMessage)
    return msg


def feedback_from_dict(body: JSONDict) -> prediction_pb2.Feedback:
    """Build a ``Feedback`` from ``{"request", "response", "reward", "truth"}``; ValueError if malformed."""
    msg = _parse(body, prediction_pb2.Feedback(), "Feedback")
    assert isinstance(msg, prediction_pb2.Feedback)
    return msg


# --- responses -------------------------------------------------------------------------


class NonFiniteNumber(ValueError):
    """A response number that is NaN or infinite, with ``finite=True``: no strict JSON line can carry it."""


def _restore_int(x: float) -> float | int:
    if math.isfinite(x) and x.is_integer() and -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT:
        return int(x)
    return x


def value_to_python(value: struct_pb2.Value, *, ints: bool = True, finite: bool = False) -> Any:
    """A ``google.protobuf.Value`` as plain Python, integral numbers as ints (per value);
    with ``finite``, NaN or an infinity raises :class:`NonFiniteNumber`."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        x = value.number_value
        if finite and x - x != 0.0:  # NaN and the infinities
            raise NonFiniteNumber(str(x))
        return _restore_int(x) if ints else x
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: value_to_python(v, ints=ints, finite=finite) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_to_python(v, ints=ints, finite=finite) for v in value.list_value.values]
    return None  # null_value or unset


class _NumberScan:
    """Whether every number seen in an ndarray is an exactly representable integer, and whether
    one was NaN or infinite."""

    all_integral = True
    non_finite = False

    def __init__(self, finite: bool) -> None:
        self.finite = finite  # raise NonFiniteNumber for NaN/infinity found outside plain numbers


def _ndarray_floats(values: Any, scan: _NumberScan) -> list[Any]:
    out: list[Any] = []
    for v in values:
        kind = v.WhichOneof("kind")
        if kind == "number_value":
            x = v.number_value
            if x - x != 0.0:  # NaN and the infinities
                scan.non_finite = True
                scan.all_integral = False
            elif scan.all_integral and not (x.is_integer() and -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT):
                scan.all_integral = False
            out.append(x)
        elif kind == "list_value":
            out.append(_ndarray_floats(v.list_value.values, scan))
        else:
            out.append(value_to_python(v, ints=False, finite=scan.finite))
    return out


def _floats_to_ints(values: list[Any]) -> list[Any]:
    return [
        int(v) if isinstance(v, float) else _floats_to_ints(v) if isinstance(v, list) else v
        for v in values
    ]


def ndarray_to_python(ndarray: struct_pb2.ListValue, *, ints: bool = True, finite: bool = False) -> list[Any]:
    """An ndarray ``ListValue`` as nested lists; all-integral arrays become ints (per array);
    with ``finite``, NaN or an infinity raises :class:`NonFiniteNumber`."""
    scan = _NumberScan(finite)
    rows = _ndarray_floats(ndarray.values, scan)
    if finite and scan.non_finite:
        raise NonFiniteNumber("ndarray")
    if ints and scan.all_integral:
        return _floats_to_ints(rows)
    return rows


def _any_to_dict(any_msg: Any) -> JSONDict:
    try:
        result: JSONDict = json_format.MessageToDict(any_msg)
        return result
    except (TypeError, KeyError, json_format.Error):
        return {
            "@type": any_msg.type_url,
            "value": base64.b64encode(any_msg.value).decode("ascii"),
        }


def _meta_to_dict(meta: prediction_pb2.Meta, ints: bool, finite: bool) -> JSONDict:
    if not (meta.puid or meta.routing or meta.requestPath or meta.metrics):  # the usual: tags only
        return {"tags": {k: value_to_python(v, ints=ints, finite=finite) for k, v in meta.tags.items()}
                } if meta.tags else {}
    rest = prediction_pb2.Meta()
    rest.CopyFrom(meta)
    rest.ClearField("tags")
    out: JSONDict = json_format.MessageToDict(rest)
    if meta.tags:
        out["tags"] = {k: value_to_python(v, ints=ints, finite=finite) for k, v in meta.tags.items()}
    return out


def _data_to_dict(data: prediction_pb2.DefaultData, ints: bool, finite: bool) -> JSONDict:
    out: JSONDict = {}
    if data.names:
        out["names"] = list(data.names)
    kind = data.WhichOneof("data_oneof")
    if kind == "ndarray":
        out["ndarray"] = ndarray_to_python(data.ndarray, ints=ints, finite=finite)
    elif kind == "tensor":
        values = list(data.tensor.values)
        if finite and not all(map(math.isfinite, values)):
            raise NonFiniteNumber("tensor")
        out["tensor"] = {"shape": list(data.tensor.shape), "values": values}
    elif kind == "tftensor":
        out["tftensor"] = json_format.MessageToDict(data.tftensor)  # NaN as "NaN": proto3 JSON, strict
    return out


def message_to_dict(msg: prediction_pb2.SeldonMessage, *, ints: bool = True, finite: bool = False) -> JSONDict:
    """A response ``SeldonMessage`` in the REST JSON shape (see the module docstring for ints).

    With ``finite`` (the transport's choice), a NaN or infinite number where JSON would need a
    number raises :class:`NonFiniteNumber`: no strict JSON output line could carry it.
    """
    out: JSONDict = {}
    if msg.HasField("status"):
        out["status"] = json_format.MessageToDict(msg.status)
    if msg.HasField("meta"):
        out["meta"] = _meta_to_dict(msg.meta, ints, finite)
    kind = msg.WhichOneof("data_oneof")
    if kind == "data":
        out["data"] = _data_to_dict(msg.data, ints, finite)
    elif kind == "binData":
        out["binData"] = base64.b64encode(msg.binData).decode("ascii")
    elif kind == "strData":
        out["strData"] = msg.strData
    elif kind == "jsonData":
        out["jsonData"] = value_to_python(msg.jsonData, ints=ints, finite=finite)
    elif kind == "customData":
        out["customData"] = _any_to_dict(msg.customData)
    return out


def answer_to_dict(response: prediction_pb2.SeldonMessage) -> JSONDict:
    """The REST-shaped answer, or RequestFailed: a FAILURE status (:func:`~.base.check_answer`,
    looked at first), NaN or an infinity, a message that cannot be converted."""
    if response.HasField("status"):
        check_answer({"status": json_format.MessageToDict(response.status)})
    try:
        return message_to_dict(response, finite=True)
    except NonFiniteNumber:
        raise not_finite() from None
    except RecursionError:
        raise RequestFailed("bad_response", "answer nested too deeply", info="bad_response") from None
    except Exception as exc:  # a conversion bug must not kill the worker
        raise RequestFailed("bad_response", f"cannot convert the gRPC response: {exc}", info="bad_response") from exc

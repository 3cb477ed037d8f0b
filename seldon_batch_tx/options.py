"""Every command-line option, defined once.

``seldon-batch-processor`` and ``twistd seldon-batch`` both build on :class:`ProcessorOptions`;
the table below gives each option its long and short flag (as in the seed's ``--help``), its
default, its type and its ``SELDON_BATCH_*`` environment variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.python import usage

from .config import (
    DATA_TYPES,
    GATEWAYS,
    HTTP_CLIENTS,
    LOG_LEVELS,
    METHODS,
    MIB,
    PAYLOAD_TYPES,
    PROTOCOLS,
    TRANSPORTS,
    V2_DATATYPES,
    BatchConfig,
)

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})


def choice(*allowed: str) -> Callable[[str], str]:
    def coerce(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value
    coerce.coerceDoc = f"One of: {'|'.join(allowed)}."  # type: ignore[attr-defined]
    return coerce


def at_least(minimum: int) -> Callable[[str], int]:
    def coerce(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number
    return coerce


def non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {number}")
    return number


def optional_positive(value: str) -> float | None:
    return positive(value) if value not in ("", "0", "none") else None


def optional_int(value: str) -> int | None:
    return at_least(1)(value) if value not in ("", "0", "none") else None


def header_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``Name: Value`` (several on separate lines, as in ``$SELDON_BATCH_HEADER``) as pairs."""
    pairs = []
    for line in value.splitlines():
        if not line.strip():
            continue
        name, sep, text = line.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t"):
            raise ValueError(f"{line!r} is not a header NAME:VALUE")
        pairs.append((name.strip(), text.strip()))
    return tuple(pairs)


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


@attrs.frozen
class Option:
    """One option: ``coerce`` None means a flag (``--x``/``--no-x``, or ``--x true|false``)."""

    name: str
    short: str | None
    default: Any
    help: str
    coerce: Callable[[str], Any] | None = str
    #: Other environment variables read when ``SELDON_BATCH_*`` is unset (first set wins).
    fallback_env: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "SELDON_BATCH_" + self.field.upper()


OPTIONS: tuple[Option, ...] = (
    Option("deployment-name", "d", None, "The name of the SeldonDeployment to send the requests to [required]"),
    Option("gateway-type", "g", "istio", "The gateway type for the seldon model, which can be through the ingress "
           "provider (istio/ambassador) or directly through the service (seldon)", choice(*GATEWAYS)),
    Option("namespace", "n", "default", "The Kubernetes namespace where the SeldonDeployment is deployed in"),
    Option("host", "h", "istio-ingressgateway.istio-system.svc.cluster.local:80",
           "The hostname (host[:port]) for the seldon model, the ingress or the service itself"),
    Option("transport", "t", "rest", "The transport type of the SeldonDeployment model", choice(*TRANSPORTS)),
    Option("http-client", None, "fast", "The HTTP client of the REST transport: fast (keep-alive HTTP/1.1 "
           "on Twisted's protocol layer) or treq", choice(*HTTP_CLIENTS)),
    Option("data-type", "a", "data", "Whether to use json, strData, Seldon Data type or a raw SeldonMessage "
           "per line for the payload", choice(*DATA_TYPES)),
    Option("payload-type", "p", "ndarray", "The payload type expected by the SeldonDeployment; with --protocol "
           "v2 a V2 datatype (FP32, INT64, BYTES...) [default for v2: inferred from the values]",
           choice(*PAYLOAD_TYPES, *V2_DATATYPES)),
    Option("protocol", None, "seldon", "The inference protocol: seldon (Seldon Core v1) or v2 (Open Inference "
           "Protocol: MLServer, Triton, KServe, Seldon Core 2)", choice(*PROTOCOLS)),
    Option("model-name", None, None, "The V2 model name [default: the deployment name]"),
    Option("model-version", None, None, "The V2 model version [default: none, the server's choice]"),
    Option("input-name", None, "input-0", "The V2 input tensor's name for plain (non-raw) lines"),
    Option("header", None, (), "A request header NAME:VALUE (gRPC metadata), repeatable: e.g. 'seldon-model: "
           "NAME' for Seldon Core 2, 'Host: NAME.NS.example.com' for KServe", header_pairs),
    Option("workers", "w", 1, "The number of requests in flight at once", at_least(1)),
    Option("retries", "r", 3, "How many times a failed request is retried (connection errors, timeouts, 429, "
           "5xx) before its lines are written as errors", at_least(0)),
    Option("input-data-path", "i", "/assets/input-data.txt", "The local path of the input file, one JSON "
           "value per line"),
    Option("output-data-path", "o", None, "The local path of the output file [default: INPUT with .out "
           "before its extension]"),
    Option("method", "m", "predict", "The method of the SeldonDeployment to send the request to",
           choice(*METHODS)),
    Option("log-level", "l", "info", "The log level for the batch processor", choice(*LOG_LEVELS)),
    Option("benchmark", "b", False, "Print the elapsed time and throughput of the run", None),
    Option("batch-id", "u", None, "Unique batch ID to identify all datapoints processed in this batch "
           "[default: generated]"),
    Option("batch-size", "s", 1, "How many input lines are sent in one request (mini-batching of data "
           "arrays); each line still gets its own output line", at_least(1)),
    Option("batch-interval", None, 0.0, "Minimum seconds between two requests of one worker", non_negative),
    Option("use-ssl", None, False, "Use https (REST) or TLS (gRPC)", None),
    Option("ssl-verify", None, True, "Verify the server's certificate (--no-ssl-verify accepts self-signed)",
           None),
    Option("ca-cert", None, None, "A PEM file of CA certificates to trust for --use-ssl"),
    Option("call-credentials-token", None, None, "A token sent in X-Auth-Token (REST) / x-auth-token (gRPC); "
           "does not force TLS"),
    Option("timeout", None, 30.0, "Seconds to wait for one response", positive),
    Option("max-failures", None, None, "Stop early, with a non-zero exit, once this many lines failed",
           optional_int),
    Option("shard-index", None, 0, "Process only the lines with batch_index % SHARD_COUNT == SHARD_INDEX "
           "[default: $JOB_COMPLETION_INDEX of a Kubernetes Indexed Job, else 0]", at_least(0),
           fallback_env=("JOB_COMPLETION_INDEX",)),
    Option("shard-count", None, 1, "How many shards split the input (merge their outputs with "
           "'seldon-batch merge')", at_least(1)),
    Option("resume", None, False, "Keep the lines already in the output file (a torn last line is cut off) "
           "and send only input lines without one, under the file's batch id", None),
    Option("retry-failed", None, False, "Also send again the lines whose output is an error line, replacing "
           "those lines (implies --resume)", None),
    Option("ordered", None, False, "Write output lines in input order (a bounded reorder buffer: reading "
           "waits while an early line is still pending)", None),
    Option("fsync-interval", None, None, "Also fsync the output file at most every this many seconds (whole "
           "lines are written to the OS every second regardless) [default: never]", optional_positive),
    Option("drain-timeout", None, 30.0, "On SIGTERM/SIGINT, seconds requests in flight may take to finish "
           "before they are abandoned (a --resume redoes them)", non_negative),
    Option("max-response-bytes", None, 64 * MIB, "Largest answer accepted, in bytes (REST body, gRPC message); "
           "a larger one is that line's error (response_too_large) and its connection is dropped", at_least(1)),
    Option("max-line-bytes", None, 64 * MIB, "Largest input line accepted, in bytes; a longer one is skipped "
           "to its newline without being held in memory and gets an error line (input_too_large)", at_least(1)),
    Option("dashboard", None, None, "Serve the live dashboard on this Twisted endpoint while the batch runs, "
           "e.g. tcp:8080:interface=127.0.0.1 (a non-loopback address needs $SELDON_BATCH_DASHBOARD_TOKEN)"),
)
FLAG_NAMES = frozenset(o.name for o in OPTIONS if o.coerce is None)


def normalise_flags(argv: Sequence[str], flags: frozenset[str] = FLAG_NAMES) -> list[str]:
    """Accept ``--use-ssl``, ``--use-ssl=true``, ``--use-ssl false`` and ``--no-use-ssl`` alike.

    The original processor only took ``--use-ssl true``; flags are friendlier, and scripts
    written for the original keep working.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        negated = name.startswith("no-") and name[3:] in flags
        if name not in flags and not negated:
            out.append(arg)
            continue
        if negated:
            name = name[3:]
        if not eq and i < len(args) and args[i].lower() in TRUE_WORDS | FALSE_WORDS:
            value, eq = args[i], "="
            i += 1
        on = boolean(value) if eq else True
        out.append(f"--{name}" if on != negated else f"--no-{name}")
    return out


#: Options given any number of times (an ``opt_<name>`` method of ProcessorOptions collects them).
REPEATABLE = frozenset({"header"})


def _parameters() -> list[list[Any]]:
    return [[o.name, o.short, o.default, o.help, o.coerce] for o in OPTIONS
            if o.coerce is not None and o.name not in REPEATABLE]


def _flags() -> list[list[Any]]:
    rows: list[list[Any]] = []
    for o in OPTIONS:
        if o.coerce is None:
            rows.append([o.name, o.short, o.help])
            rows.append(["no-" + o.name, None, f"Turn --{o.name} off"])
    return rows


class ProcessorOptions(usage.Options):
    """Options of one batch run; subclasses add their own (the daemon adds ``--watch-dir``)."""

    synopsis = "Usage: seldon-batch-processor [OPTIONS]"
    longdesc = ("Send every line of an input file to a Seldon Core model through concurrent requests and "
                "write exactly one output line (result or error) per input line.")
    optParameters = _parameters()
    optFlags = _flags()
    #: Whether an input file is mandatory (the watch-directory daemon finds its own).
    needs_input = True

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        for o in OPTIONS:
            if o.coerce is None or o.name in REPEATABLE:
                self[o.name] = o.default
            name = next((n for n in (o.env, *o.fallback_env) if env.get(n) is not None), o.env)
            raw = env.get(name)
            if raw is None:
                continue
            try:
                self[o.name] = boolean(raw) if o.coerce is None else o.coerce(raw)
            except ValueError as e:
                raise usage.UsageError(f"environment variable {name}: {e}") from None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:  # noqa: N802
        super().parseOptions(normalise_flags(options if options is not None else sys.argv[1:]))

    def opt_header(self, value: str) -> None:
        """A request header NAME:VALUE (gRPC metadata), repeatable"""
        try:
            self["header"] = (*self["header"], *header_pairs(value))
        except ValueError as e:
            raise usage.UsageError(f"--header: {e}") from None

    def postOptions(self) -> None:  # noqa: N802
        for o in OPTIONS:
            if o.coerce is None and self.get("no-" + o.name):
                self[o.name] = False
        if not self["deployment-name"]:
            raise usage.UsageError("--deployment-name/-d is required")
        if not 0 <= self["shard-index"] < self["shard-count"]:
            raise usage.UsageError(f"--shard-index {self['shard-index']} must be less than --shard-count "
                                   f"{self['shard-count']} (it defaults to $JOB_COMPLETION_INDEX)")
        if self["shard-count"] > 1 and not self["batch-id"]:
            raise usage.UsageError("--batch-id is required with --shard-count: all shards must tag their lines "
                                   "with the same batch id")
        self._check_protocol()
        if self.needs_input:
            self._check_paths()

    def _check_protocol(self) -> None:
        v2_type = self["payload-type"] in V2_DATATYPES
        if self["protocol"] == "seldon" and v2_type:
            raise usage.UsageError(f"--payload-type {self['payload-type']} needs --protocol v2")
        if self["protocol"] == "v2":
            if self["method"] != "predict":
                raise usage.UsageError("--protocol v2 has no feedback method")
            if self["data-type"] == "json":
                raise usage.UsageError("--protocol v2 takes --data-type data, str or raw (a whole V2 request)")

    def _check_paths(self) -> None:
        path = self["input-data-path"]
        if not os.path.isfile(path):
            raise usage.UsageError(f"input file {path!r} does not exist or is not a file")
        if not os.access(path, os.R_OK):
            raise usage.UsageError(f"input file {path!r} is not readable")
        out = self["output-data-path"] or default_output_path(path, self["shard-index"], self["shard-count"])
        if os.path.abspath(out) == os.path.abspath(path):
            raise usage.UsageError("the output path must differ from the input path")
        directory = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise usage.UsageError(f"output directory {directory!r} does not exist or is not writable")
        if self["ca-cert"] and not os.path.isfile(self["ca-cert"]):
            raise usage.UsageError(f"CA certificate {self['ca-cert']!r} does not exist")
        self["output-data-path"] = out

    def config(self, **overrides: Any) -> BatchConfig:
        """The validated settings as a :class:`BatchConfig`."""
        values = {o.field: self[o.name] for o in OPTIONS if self[o.name] is not None}
        values.setdefault("output_data_path", default_output_path(values["input_data_path"], self["shard-index"],
                                                                  self["shard-count"]))
        values["headers"] = tuple(values.pop("header", ()))
        values.update(overrides)
        values.setdefault("batch_id_given", "batch_id" in values)
        return BatchConfig(**values)


def default_output_path(input_path: str, shard_index: int = 0, shard_count: int = 1) -> str:
    """``data/in.txt`` -> ``data/in.out.txt`` (``in.out.shard-1-of-3.txt`` for a shard): beside the
    input, never the input itself, and never shared by two shards."""
    root, ext = os.path.splitext(input_path)
    shard = f".shard-{shard_index}-of-{shard_count}" if shard_count > 1 else ""
    return f"{root}.out{shard}{ext or '.jsonl'}"

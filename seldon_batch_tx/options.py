"""Every command-line option, defined once.

``seldon-batch-processor`` and ``twistd seldon-batch`` both build on :class:`ProcessorOptions`;
the table below gives each option its long and short flag (as in the seed's ``--help``), its
default, its type and its ``SELDON_BATCH_*`` environment variable. The checks each value goes
through live in :mod:`.checks`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.python import usage

from .bounds import count, linger_seconds, optional_count, optional_rate, optional_seconds, outage_seconds, seconds
from .checks import (
    at_least,
    ca_file_problem,
    choice,
    header_pair,
    header_pairs,
    name_segment,
    option_error,
    optional_int,
    path,
    read_secret_file,
    read_small_file,
    secret_token,
    shown,
    text,
)
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
from .flags import SECRET_OPTIONS, TABLES, Option, Parameter, flag_rows, normalise_flags, parameter_rows, versions
from .grpc_checks import grpc_metadata_problem, grpc_resolver_problem
from .host_checks import host_port, host_transport_problem
from .storage.paths import STDIO, is_remote, is_stdio

__all__ = ["FLAG_NAMES", "OPTIONS", "Option", "ProcessorOptions", "default_output_path", "normalise_flags",
           "parameter_rows"]

#: Upper bound of --workers: the engine and the gRPC thread pool size themselves by it.
MAX_WORKERS = 100_000


OPTIONS: tuple[Option, ...] = (
    Option("deployment-name", "d", None, "The name of the SeldonDeployment to send the requests to [required]",
           name_segment),
    Option("gateway-type", "g", "istio", "The gateway type for the seldon model, which can be through the ingress "
           "provider (istio/ambassador) or directly through the service (seldon)", choice(*GATEWAYS)),
    Option("namespace", "n", "default", "The Kubernetes namespace where the SeldonDeployment is deployed in",
           name_segment),
    Option("host", "h", "istio-ingressgateway.istio-system.svc.cluster.local:80",
           "The hostname (host[:port], [IPv6]:port; port 1-65535) for the seldon model, the ingress or the service "
           "itself; with --transport grpc also a gRPC target spread over every address: dns:///NAME[:PORT] "
           "(port 443 if none), ipv4:ADDR:PORT[,...], ipv6:[ADDR]:PORT[,...]", host_port),
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
    Option("model-name", None, None, "The V2 model name [default: the deployment name]", name_segment),
    Option("model-version", None, None, "The V2 model version [default: none, the server's choice]",
           name_segment),
    Option("input-name", None, "input-0", "The V2 input tensor's name for plain (non-raw) lines", text),
    Option("header", None, (), "A request header NAME:VALUE (gRPC metadata), repeatable: e.g. 'seldon-model: "
           "NAME' for Seldon Core 2, 'Host: NAME.NS.example.com' for KServe; names are HTTP tokens, values "
           "printable ASCII (no CR, LF or NUL)", header_pairs),
    Option("workers", "w", 1, f"The number of requests in flight at once (at most {MAX_WORKERS:,})",
           at_least(1, MAX_WORKERS)),
    Option("retries", "r", 3, "How many times a failed request is retried (connection errors, timeouts, 429, "
           "5xx) before its lines are written as errors (at most 100)", count("retries")),
    Option("input-data-path", "i", "/assets/input-data.txt", "The input, one JSON value per line: a local "
           "path, an s3:// (or other fsspec) URL, or - for standard input", path),
    Option("output-data-path", "o", None, "The output: a local path, an s3:// (or other fsspec) URL (staged "
           "locally, uploaded at the end), or - for standard output [default: INPUT with .out before its "
           "extension; - for -i -]", path),
    Option("method", "m", "predict", "The method of the SeldonDeployment to send the request to",
           choice(*METHODS)),
    Option("log-level", "l", "info", "The log level for the batch processor", choice(*LOG_LEVELS)),
    Option("benchmark", "b", False, "Print the elapsed time and throughput of the run", None),
    Option("batch-id", "u", None, "Unique batch ID to identify all datapoints processed in this batch "
           "[default: generated]", text),
    Option("batch-size", "s", 1, "How many input lines are sent in one request (mini-batching of data "
           "arrays); each line still gets its own output line (at most 10,000)", count("batch-size")),
    Option("batch-interval", None, 0.0, "Minimum seconds between two requests of one worker (at most 60)",
           seconds("batch-interval")),
    Option("max-batch-rows", None, None, "At most this many rows in one request (a line of several rows "
           "counts each; at most 1,000,000); lines past it go to the next request [default: no limit; with "
           "--protocol v2, the model's max_batch_size where its metadata states it]",
           optional_count("max-batch-rows", " rows")),
    Option("use-ssl", None, False, "Use https (REST) or TLS (gRPC)", None),
    Option("ssl-verify", None, True, "Verify the server's certificate (--no-ssl-verify accepts self-signed)",
           None),
    Option("ca-cert", None, None, "A PEM file of CA certificates to trust for --use-ssl", path),
    Option("call-credentials-token", None, None, "A token sent in X-Auth-Token (REST) / x-auth-token (gRPC); "
           "does not force TLS. Prefer --call-credentials-token-file: a flag shows in the process list",
           secret_token),
    Option("call-credentials-token-file", None, None, "Read --call-credentials-token from this file (e.g. a "
           "mounted Kubernetes secret): its content without one trailing newline, read once at start", path),
    Option("timeout", None, 30.0, "Seconds to wait for one response (0.01 to 3600)", seconds("timeout")),
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
           "lines are written to the OS every second regardless; 0.1 to 3600) [default: never]",
           optional_seconds("fsync-interval")),
    Option("drain-timeout", None, 30.0, "On SIGTERM/SIGINT, seconds requests in flight may take to finish "
           "before they are abandoned (a --resume redoes them; at most 3600)", seconds("drain-timeout")),
    Option("max-response-bytes", None, 64 * MIB, "Largest answer accepted, in bytes (REST body, gRPC message); "
           "a larger one is that line's error (response_too_large) and its connection is dropped (at most 1 GiB)",
           count("max-response-bytes")),
    Option("max-line-bytes", None, 64 * MIB, "Largest input line accepted, in bytes; a longer one is skipped "
           "to its newline without being held in memory and gets an error line (input_too_large; at most 1 GiB)",
           count("max-line-bytes")),
    Option("max-bytes-in-flight", None, 1024 * MIB, "Input bytes all requests in flight may hold together "
           "(workers x batch size x line size); a request that does not fit waits for others to finish, one alone "
           "always runs (1 MiB to 64 GiB)", count("max-bytes-in-flight")),
    Option("grpc-channels", None, None, "gRPC channels (each its own connection) the calls are spread over, so "
           "every replica behind the address gets work (at most 1,024) [default: twice --workers, 8 to 64]",
           optional_count("grpc-channels")),
    Option("connection-max-age", None, 5.0, "Retire a connection (REST or gRPC) after this many seconds, with "
           "jitter, so replicas added by an autoscaler get work; requests are never failed by it ('none': never; "
           "0.1 to 86400)", optional_seconds("connection-max-age")),
    Option("connection-max-requests", None, None, "Also retire a connection after this many requests "
           "[default: no limit]", optional_int),
    Option("max-rate", None, None, "At most this many requests per second for the whole run, evenly spaced "
           "(0.01 to 1,000,000) [default: no limit]", optional_rate("max-rate")),
    Option("adaptive", None, False, "Adapt the requests in flight (at most --workers) to the model: back off on "
           "429/503/UNAVAILABLE/RESOURCE_EXHAUSTED and timeouts, grow again on success", None),
    Option("storage-options", None, None, "fsspec storage options as JSON for s3:// (and other fsspec) paths, "
           "e.g. '{\"client_kwargs\": {\"endpoint_url\": \"http://minio:9000\"}}'. Prefer "
           "--storage-options-file or the variable for credentials: a flag shows in the process list", text),
    Option("storage-options-file", None, None, "Read --storage-options from this file (e.g. a mounted "
           "Kubernetes secret), read once at start", path),
    Option("staging-dir", None, None, "Local directory where an output for object storage is written before "
           "it is uploaded (and resumed from); it must be private (yours, mode 0700), else a private "
           "seldon-batch-staging-UID inside it is used [default: $TMPDIR/seldon-batch-staging-UID]", path),
    Option("storage-timeout", None, 1800.0, "Longest one upload or download of object storage may take, in "
           "seconds (it is then cancelled: exit 3, the staging file kept for --resume)", seconds("storage-timeout")),
    Option("dashboard-linger", None, None, "Keep the --dashboard up this many seconds after the batch ends "
           "('forever': until Ctrl-C, or SIGTERM if started with SIGINT ignored; else at most 7 days)",
           linger_seconds),
    Option("join-input", None, False, "Each output line also carries the input line it answers (as "
           "\"input\"), so a scored file needs no matching by index; costs the input's size again", None),
    Option("wait-ready", None, 0.0, "Seconds to wait for the model to be ready before the first line [default: 0: "
           "check once, unreachable is exit 4; at most 86400]", seconds("wait-ready")),
    Option("outage-timeout", None, 600.0, "Seconds the run waits through an outage of the model (sending paused, "
           "no line spent) before it stops with exit 3 ('none': as long as it lasts; 0: no pausing; at most 604800)",
           outage_seconds),
    Option("binary-data", None, False, "--protocol v2 over REST: send tensors as binary data and ask for "
           "binary outputs (Triton's binary tensor extension; needed for FP16/BF16), decoded into the same "
           "output lines", None),
    Option("dashboard", None, None, "Serve the live dashboard on this Twisted endpoint while the batch runs, "
           "e.g. tcp:8080:interface=127.0.0.1 (a non-loopback address needs $SELDON_BATCH_DASHBOARD_TOKEN)", text),
) + TABLES  # --input-format, --output-format, --columns, --keep-columns (flags.py)
FLAG_NAMES = frozenset(o.name for o in OPTIONS if o.coerce is None)
#: Options whose value is a path to a file holding another option's secret.
SECRET_FILES: tuple[tuple[str, str], ...] = (("call-credentials-token-file", "call-credentials-token"),)


class ProcessorOptions(usage.Options):
    """Options of one batch run; subclasses add their own (the daemon adds ``--watch-dir``)."""

    synopsis = "Usage: seldon-batch-processor [OPTIONS]"
    longdesc = ("Send every line of an input file to a Seldon Core model through concurrent requests and "
                "write exactly one output line (result or error) per input line.")
    optParameters = parameter_rows(OPTIONS)
    optFlags = flag_rows(OPTIONS)
    #: Every option these settings read from the environment (subclasses add theirs).
    table: tuple[Option, ...] = OPTIONS
    #: (file option, the option it fills): e.g. --call-credentials-token-file.
    secret_files: tuple[tuple[str, str], ...] = SECRET_FILES
    #: Whether an input file is mandatory (the watch-directory daemon finds its own).
    needs_input = True

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for name, handler in list(self._dispatch.items()):
            if type(handler) is usage.CoerceParameter:
                self._dispatch[name] = Parameter(self, handler.coerce, self.label(name))
        #: Options given on the command line (they win over the environment, even a bad one).
        self.given: set[str] = set()
        #: Option -> the environment variable its value came from (named in errors).
        self.origins: dict[str, str] = {}
        self._environment_errors: dict[str, usage.UsageError] = {}
        env = os.environ if environ is None else environ
        for o in self.table:
            self[o.name] = o.default  # also for rows whose help tells the default (Twisted's is None there)
            variable = next((n for n in (o.env, *o.fallback_env) if env.get(n)), None)
            if variable is None:  # unset or empty: the default
                continue
            try:
                self[o.name] = o.parse(env[variable], origin=variable)
            except usage.UsageError as e:  # raised in postOptions, unless a flag replaces the value
                self._environment_errors[o.name] = e
            else:
                self.origins[o.name] = variable

    def parseOptions(self, options: Sequence[str] | None = None) -> None:  # noqa: N802
        flags = frozenset(o.name for o in self.table if o.coerce is None)
        labels = {o.name: o.label for o in self.table}
        super().parseOptions(normalise_flags(options if options is not None else sys.argv[1:], flags, labels))

    def label(self, name: str) -> str:
        """``-g/--gateway-type``: the option as errors name it."""
        return next((o.label for o in self.table if o.name == name), f"--{name}")

    def opt_version(self) -> None:
        """Print this tool's, Twisted's and gRPC's versions and exit"""
        print(versions(), flush=True)
        raise SystemExit(0)

    def parseArgs(self, *args: str) -> None:  # noqa: N802
        if args:
            raise option_error("unexpected argument", args[0], "settings are options, e.g. -i INPUT")

    def _generic_flag(self, flagName: str, value: str | None = None) -> None:  # noqa: N803
        super()._generic_flag(flagName, value)
        self.given.add(flagName.removeprefix("no-"))

    def opt_header(self, value: str) -> None:
        """A request header NAME:VALUE (gRPC metadata), repeatable"""
        try:
            self["header"] = (*self["header"], header_pair(value))
        except ValueError as e:
            raise option_error("--header", value, str(e), secret=True) from None  # a value may be a credential

    def postOptions(self) -> None:  # noqa: N802
        for name, error in self._environment_errors.items():
            if name not in self.given:
                raise error
        for o in self.table:
            if o.coerce is None and self.get("no-" + o.name):
                self[o.name] = False
        self._read_secret_files()
        self._read_storage_options_file()
        if not self["deployment-name"]:
            raise usage.UsageError("-d/--deployment-name: is required (or $SELDON_BATCH_DEPLOYMENT_NAME)")
        if not 0 <= self["shard-index"] < self["shard-count"]:
            # Two options that do not fit together: the message names both (and has kept its wording).
            origin = None if "shard-index" in self.given else self.origins.get("shard-index")
            raise usage.UsageError(f"--shard-index {self['shard-index']} must be less than --shard-count "
                                   f"{self['shard-count']} (" + (f"from ${origin})" if origin else
                                                                 "it defaults to $JOB_COMPLETION_INDEX)"))
        if self["shard-count"] > 1 and not self["batch-id"]:
            raise self.error("shard-count", str(self["shard-count"]), "needs --batch-id: all shards must tag "
                             "their lines with the same batch id")
        self._check_protocol()
        problem = host_transport_problem(self["host"], self["transport"])
        if problem:
            raise self.error("host", self["host"], problem)
        problem = grpc_metadata_problem(self["header"], self["call-credentials-token"]) \
            if self["transport"] == "grpc" else None
        if problem:
            raise self.error("header", None, problem)
        problem = grpc_resolver_problem(self["host"])
        if problem:
            raise self.error("host", self["host"], problem)
        if self.needs_input:
            self._check_paths()

    def error(self, name: str, value: str | None, why: str) -> usage.UsageError:
        """The one-line error for option ``name`` as it was given (flag or environment variable)."""
        return option_error(self.label(name), value, why, secret=name in SECRET_OPTIONS,
                            origin=None if name in self.given else self.origins.get(name))

    def _read_secret_files(self) -> None:
        for file_option, target in self.secret_files:
            file_path = self.get(file_option)
            if not file_path:
                continue
            if self.get(target):
                raise self.error(file_option, file_path, f"cannot be used with --{target}: give the token one way")
            label = self.label(file_option)
            origin = None if file_option in self.given else self.origins.get(file_option)
            self[target] = read_secret_file(label, file_path, origin=origin)

    def _read_storage_options_file(self) -> None:
        file_path = self.get("storage-options-file")
        if not file_path:
            return
        if self.get("storage-options"):
            raise self.error("storage-options-file", file_path, "cannot be used with --storage-options: give "
                             "the options one way")
        origin = None if "storage-options-file" in self.given else self.origins.get("storage-options-file")
        self["storage-options"] = read_options_file(self.label("storage-options-file"), file_path, origin=origin)

    def _check_protocol(self) -> None:
        if self["protocol"] == "seldon" and (self["binary-data"] or self["payload-type"] in V2_DATATYPES):
            name = "binary-data" if self["binary-data"] else "payload-type"  # Seldon's protocol has neither
            raise self.error(name, None if self["binary-data"] else self[name], "needs --protocol v2")
        if self["protocol"] == "v2":
            if self["method"] != "predict":
                raise self.error("method", self["method"], "--protocol v2 has no feedback method")
            if self["data-type"] == "json":
                raise self.error("data-type", "json", "--protocol v2 takes --data-type data, str or raw (a whole "
                                 "V2 request)")

    def _check_paths(self) -> None:
        """Local paths here; URLs (checked over the network) and ``-`` in :func:`.storage.preflight`."""
        path = self["input-data-path"]
        local = not (is_remote(path) or is_stdio(path))
        if local and not (os.path.isfile(path) or self["input-format"] == "parquet" and os.path.isdir(path)):
            raise self.error("input-data-path", path, "the input file does not exist or is not a file")
        if local and not os.access(path, os.R_OK):
            raise self.error("input-data-path", path, "the input file is not readable")
        out = self["output-data-path"] or (STDIO if is_stdio(path) else
                                           default_output_path(path, self["shard-index"], self["shard-count"]))
        if (out == path and not is_stdio(out)) or (local and os.path.abspath(out) == os.path.abspath(path)):
            raise self.error("output-data-path", out, "the output path must differ from the input path")
        directory = os.path.dirname(os.path.abspath(out))
        local_out = not (is_remote(out) or is_stdio(out))
        if local_out and (not os.path.isdir(directory) or not os.access(directory, os.W_OK)):
            raise self.error("output-data-path", out, f"the output directory {shown(directory)} does not exist or "
                             "is not writable")
        problem = ca_file_problem(self["ca-cert"]) if self["ca-cert"] else None
        if problem:
            raise self.error("ca-cert", self["ca-cert"], problem)
        self["output-data-path"] = out

    def config(self, **overrides: Any) -> BatchConfig:
        """The validated settings as a :class:`BatchConfig`."""
        fields = attrs.fields_dict(BatchConfig)
        # None is left to BatchConfig's default, unless the option has a default of its own: then
        # None was asked for (``--connection-max-age none``: never retire). Flags are bools (usage stores 1).
        values: dict[str, Any] = {o.field: self[o.name] if o.coerce else bool(self[o.name]) for o in OPTIONS
                  if (self[o.name] is not None or o.default is not None) and (o.field in fields or o.name == "header")}
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


def read_options_file(label: str, file_path: str, *, origin: str | None = None, limit: int = 1 << 20) -> str:
    """The UTF-8 text of ``file_path`` (e.g. ``--storage-options-file``: JSON holding credentials), or a
    usage error naming the file, never the content. A regular file only (a FIFO never stalls the start)."""

    def error(why: str) -> usage.UsageError:
        return option_error(label, file_path, why, origin=origin)

    data = read_small_file(label, file_path, limit, origin=origin)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error("is not UTF-8 text") from None

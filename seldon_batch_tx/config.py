"""The settings of one batch run, parsed and validated once.

Everything downstream (payloads, transports, engine, daemon) reads this frozen object rather
than raw option dictionaries, so a setting has one spelling and one type everywhere.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from .checks import shown
from .grpc_checks import grpc_metadata_problem, grpc_resolver_problem
from .host_checks import host_transport_problem

GATEWAYS = ("ambassador", "istio", "seldon")
TRANSPORTS = ("rest", "grpc")
HTTP_CLIENTS = ("fast", "treq")
DATA_TYPES = ("data", "json", "str", "raw")
PAYLOAD_TYPES = ("ndarray", "tensor", "tftensor")
METHODS = ("predict", "feedback")
PROTOCOLS = ("seldon", "v2")
#: Open Inference Protocol tensor datatypes, also accepted by ``--payload-type`` for ``--protocol v2``.
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "BF16", "FP32", "FP64", "BYTES")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIB = 1 << 20


def _header_names(headers: tuple[tuple[str, str], ...]) -> str:
    return repr(tuple(f"{name}: ..." for name, _ in headers))


@attrs.frozen
class BatchConfig:
    """One batch: where the data is, how to reach the model, and how hard to push it."""

    deployment_name: str
    input_data_path: str
    output_data_path: str
    gateway_type: str = "istio"
    namespace: str = "default"
    host: str = "istio-ingressgateway.istio-system.svc.cluster.local:80"
    transport: str = "rest"
    #: REST only: ``fast`` (transports/fast.py) or ``treq`` (transports/treq_client.py).
    http_client: str = "fast"
    data_type: str = "data"
    payload_type: str = "ndarray"
    workers: int = 1
    retries: int = 3
    method: str = "predict"
    log_level: str = "info"
    benchmark: bool = False
    batch_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    batch_size: int = 1
    #: Rows in one request at most (None: no limit but the V2 model's own max_batch_size, from its metadata).
    max_batch_rows: int | None = None
    batch_interval: float = 0.0
    use_ssl: bool = False
    ssl_verify: bool = True
    ca_cert: str | None = None
    #: A secret: left out of ``repr`` so that no log line or error message carries it.
    call_credentials_token: str | None = attrs.field(default=None, repr=False)
    timeout: float = 30.0
    max_failures: int | None = None
    #: This run handles the lines with ``batch_index % shard_count == shard_index``.
    shard_index: int = 0
    shard_count: int = 1
    #: ``v2``: the Open Inference Protocol (MLServer, Triton, KServe) instead of Seldon's.
    protocol: str = "seldon"
    #: The V2 model (default: ``deployment_name``), its version and the input tensor's name.
    model_name: str | None = None
    model_version: str | None = None
    input_name: str = "input-0"
    #: The V2 model's metadata (protocols/v2_metadata.ModelMetadata), read before the run; None: not read.
    v2_model: Any = attrs.field(default=None, repr=False)
    #: V2 over REST: tensors travel as Triton's binary data extension (inputs and outputs).
    binary_data: bool = False
    #: Extra request headers (gRPC metadata), e.g. ``seldon-model`` or ``Host`` for gateways.
    #: Values may be credentials (``Authorization``): ``repr`` shows the names only.
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=_header_names)
    #: Keep the output's lines and send only the rest (``retry_failed`` also redoes error lines).
    resume: bool = False
    retry_failed: bool = False
    #: Whether ``batch_id`` was asked for (a resume must then match the file's) or generated.
    batch_id_given: bool = False
    ordered: bool = False
    fsync_interval: float | None = None
    drain_timeout: float = 30.0
    #: Serve the live dashboard on this Twisted endpoint string while the batch runs.
    dashboard: str | None = None
    #: Largest answer body (REST) or message (gRPC receive limit) accepted; past it: response_too_large.
    max_response_bytes: int = 64 * MIB
    #: Largest input line accepted; past it the line is skipped to its newline: input_too_large.
    max_line_bytes: int = 64 * MIB
    #: Input bytes all units in flight may hold together (a unit waits for room; one alone always runs).
    max_bytes_in_flight: int = 1024 * MIB
    #: gRPC channels (connections) a run spreads its calls over; None: chosen from ``workers``.
    grpc_channels: int | None = None
    #: A connection is retired (never failing a request) after this many seconds (jittered) / requests.
    connection_max_age: float | None = 5.0
    connection_max_requests: int | None = None
    #: Requests/s for the whole run (None: as fast as ``workers`` allow); AIMD concurrency under ``workers``.
    max_rate: float | None = None
    adaptive: bool = False
    #: fsspec storage options (JSON text) for ``s3://``-style paths, and where remote outputs are staged.
    storage_options: str | None = attrs.field(default=None, repr=False)
    staging_dir: str | None = None
    #: The longest one upload or download of object storage may take (then cancelled: exit 3).
    storage_timeout: float = 1800.0
    #: Keep the one-batch dashboard up this many seconds after the batch ends (``inf``: until stopped).
    dashboard_linger: float | None = None
    #: Each output line also carries the input line it answers.
    join_input: bool = False
    #: Tables (seldon_batch_tx/tables): formats when not told by the extension, the feature columns, the
    #: input columns kept in a table output (None: all), and the feature names a table input was read with.
    input_format: str | None = None
    output_format: str | None = None
    columns: tuple[str, ...] = ()
    keep_columns: tuple[str, ...] | None = None
    table_names: tuple[str, ...] = ()
    #: Seconds to wait for the model before the first line (0: check once; unreachable: exit 4).
    wait_ready: float = 0.0
    #: Seconds an outage may last before the run stops (exit 3); None: wait as long as it lasts;
    #: 0: no pausing, outage errors are retried and recorded like any other.
    outage_timeout: float | None = 600.0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard index {self.shard_index} is not in 0..{self.shard_count - 1}")
        # the same rule as the command line's, for settings built elsewhere (sidecars through replace())
        problem = host_transport_problem(self.host, self.transport)
        if problem:
            raise ValueError(f"host {shown(self.host)}: {problem}")
        problem = grpc_metadata_problem(self.headers, self.call_credentials_token) \
            if self.transport == "grpc" else None
        problem = problem or grpc_resolver_problem(self.host)
        if problem:
            raise ValueError(problem)

    def replace(self, **changes: Any) -> BatchConfig:
        """A copy with some settings changed (per-file overrides in the daemon)."""
        return attrs.evolve(self, **changes)

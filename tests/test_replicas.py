"""Issue 13's acceptance criteria against the real Seldon Core 1.18.2 microservice with several
REST (gunicorn) and gRPC processes behind one port each, the model answering with its pid
(tests/replica_servers.py, tests/models/PidModel.py).  Our `seldon-batch-processor` runs with its
defaults plus `--workers`, as a user would run it:

- every process gets at least 8% of the requests with 4 processes, over REST and over gRPC;
- processes added during a run (gunicorn TTIN for REST, a gRPC process joining the SO_REUSEPORT
  port) serve at least 40% of the last third of the output lines;
- the output verifies (`seldon-batch verify` exit 0): recycling connections loses and duplicates
  nothing.

On the main of the issue's day the gRPC spread and both autoscaling tests fail: one gRPC connection
serves the whole run and keep-alive connections pin a run to the processes it started with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.replica_servers import (
    BatchProcess,
    ReplicaSeldonServer,
    RunResult,
    Transport,
    host_for,
    run_batch,
    verify,
    write_input,
)

PROCESSES = 4
MIN_SHARE = 0.08
SPREAD_LINES = 2000
SPREAD_WORKERS = 32
#: The run lasts about a second: retiring connections within it is what spreads them (the first 32 may all be
#: accepted by the one or two gunicorn workers awake at that moment, more so after the readiness probe).
SPREAD_RETIRE = ("--connection-max-age", "0.3")

# the autoscaling scenario: 1 process, 2 more added ADD_AFTER s into a run paced to RUN_SECONDS
RUN_SECONDS = 20.0
ADD_AFTER = 4.0
ADDED = 2
PACED_WORKERS = 8
PACED_INTERVAL = 0.1  # s between two requests of one worker: 80 requests/s
MIN_LAST_THIRD = 0.40


@pytest.fixture(scope="module")
def replicas(seldon_venv: Path) -> Iterator[ReplicaSeldonServer]:
    """PidModel with 4 REST workers and 4 gRPC processes, for the module."""
    with ReplicaSeldonServer(rest=PROCESSES, grpc=PROCESSES) as server:
        yield server


def pids_of(server: ReplicaSeldonServer, transport: Transport) -> set[int]:
    return server.rest_worker_pids() if transport == "rest" else server.grpc_worker_pids()


def check_complete(result: RunResult, input_path: Path, output_path: Path) -> None:
    """Exit 0, no error line, and `seldon-batch verify` agrees."""
    assert result.returncode == 0, f"{result.describe()}\n{result.log}"
    assert result.errors == 0, result.describe()
    verified = verify(input_path, output_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_servers_have_distinct_processes(replicas: ReplicaSeldonServer) -> None:
    """The harness itself: 4 REST and 4 gRPC processes, each answering with its own pid."""
    assert len(replicas.rest_worker_pids()) == PROCESSES
    assert len(replicas.grpc_worker_pids()) == PROCESSES
    assert not replicas.rest_worker_pids() & replicas.grpc_worker_pids()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_every_process_gets_work(replicas: ReplicaSeldonServer, transport: Transport, tmp_path: Path) -> None:
    """Issue 13: with 4 processes behind one address each serves at least 8% of the requests."""
    input_path = write_input(tmp_path / "in.txt", SPREAD_LINES)
    output_path = tmp_path / "out.txt"
    pids = pids_of(replicas, transport)
    result = run_batch("ours", host_for(replicas, transport), transport, input_path, output_path,
                       SPREAD_WORKERS, timeout=240.0, extra=SPREAD_RETIRE)
    check_complete(result, input_path, output_path)
    assert set(result.counts) <= pids, f"answers from unknown processes: {set(result.counts) - pids}"
    shares = result.shares(pids)
    starved = {pid: f"{share:.1%}" for pid, share in shares.items() if share < MIN_SHARE}
    assert not starved, f"processes under {MIN_SHARE:.0%}: {starved}; {result.describe(pids)}"


def autoscaled_run(transport: Transport, tmp_path: Path) -> tuple[RunResult, set[int], Path, Path]:
    """One process, a paced run of RUN_SECONDS, ADDED processes joining after ADD_AFTER s."""
    lines = int(RUN_SECONDS * PACED_WORKERS / PACED_INTERVAL)
    input_path = write_input(tmp_path / "in.txt", lines)
    output_path = tmp_path / "out.txt"
    with ReplicaSeldonServer(rest=1, grpc=1) as server:
        run = BatchProcess("ours", host_for(server, transport), transport, input_path, output_path,
                           PACED_WORKERS, batch_interval=PACED_INTERVAL)
        time.sleep(ADD_AFTER)
        grow = server.add_rest_workers if transport == "rest" else server.add_grpc_processes
        added = grow(ADDED)
        result = run.wait(timeout=RUN_SECONDS * 6)
    assert len(added) == ADDED, f"the harness added {added}"
    return result, added, input_path, output_path


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_added_processes_get_work(seldon_venv: Path, transport: Transport, tmp_path: Path) -> None:
    """Issue 13: processes added during a run serve at least 40% of the run's last third, and
    retiring connections to reach them loses and duplicates no line."""
    result, added, input_path, output_path = autoscaled_run(transport, tmp_path)
    check_complete(result, input_path, output_path)
    share = result.last_third_share(added)
    assert share >= MIN_LAST_THIRD, (
        f"added processes served {share:.1%} of the last third (want {MIN_LAST_THIRD:.0%});"
        f" {result.describe(added)}; last third {dict(result.last_third)}")

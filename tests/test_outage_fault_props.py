"""Outages against a real fault server (tests/faultserver.py), property-tested (issue 19): the server is
killed and restarted on its ports on a random schedule while it also resets random connections and calls
some requests bad (400 / INVALID_ARGUMENT). Every line ends exactly once; the only error lines are the
ones the server called bad, even with ``--retries 0``. Few examples: each is a real run of real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faultserver import FaultServer
from tests.servers import loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
LINES = 400
BAD_KINDS = {"http_400", "grpc_INVALID_ARGUMENT"}

schedules = st.lists(st.tuples(st.sampled_from([0.3, 1.0]), st.sampled_from([0.5, 2.0, 4.0])), min_size=1,
                     max_size=2)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedule=schedules, resets=st.sampled_from([0.0, 0.1]), bad=st.sampled_from([0.0, 0.02]),
       transport=st.sampled_from(["rest", "grpc"]), workers=st.sampled_from([1, 4]))
def test_random_outage_schedules_spend_no_line(schedule: list[tuple[float, float]], resets: float, bad: float,
                                               transport: str, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="outage-props-") as tmp, \
            FaultServer(faults={"reset": resets, "fail_400": bad}, grpc=True, delay=0.002) as server:
        source, out = Path(tmp) / "in.txt", Path(tmp) / "out.txt"
        source.write_text("".join(json.dumps([[i, 0.5]]) + "\n" for i in range(LINES)))
        host = server.grpc_host if transport == "grpc" else server.rest_host
        proc = subprocess.Popen([PROCESSOR, "-d", "echo", "-g", "seldon", "-h", host, "-t", transport, "-i",
                                 str(source), "-o", str(out), "-w", str(workers), "-r", "0", "--batch-interval",
                                 "0.01", "--timeout", "5",
                                 # the first kill may come before the run starts: its readiness check waits
                                 "--wait-ready", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=loopback_env(), start_new_session=True)
        try:
            for up, down in schedule:
                time.sleep(up)
                server.stop()  # SIGKILL: connections in flight die, new ones are refused
                time.sleep(down)
                server.start()
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        records = [json.loads(line) for line in out.read_text().splitlines()]
    assert proc.returncode in (0, 1), stderr[-3000:]
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(LINES)), "each line once"
    kinds = {r["status"]["info"] for r in records if r.get("status", {}).get("status") == "FAILURE"}
    assert kinds <= BAD_KINDS, (kinds, stderr[-2000:])
    assert (proc.returncode == 1) == bool(kinds)

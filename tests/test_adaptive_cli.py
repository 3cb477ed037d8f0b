"""--max-rate and --adaptive through the real command line (issue 13: load a production model can bear).

Against tests/overload_server.py (a loopback echo model that refuses with 429/503 above T requests at
once and records when each request arrived) and the real Seldon microservice. The command runs with
``--dashboard`` so its /metrics (parsed by prometheus_client) is read while the batch goes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.sidecars import apply_sidecar
from tests.loopback import free_port, http_request, loopback_env
from tests.overload_server import OverloadServer
from tests.servers import SeldonServer

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
GAUGES = ("seldon_batch_concurrency_limit", "seldon_batch_requests_in_flight", "seldon_batch_rate_limit",
          "seldon_batch_overload_share")
COUNTERS = ("seldon_batch_answers", "seldon_batch_overload_answers")  # the parser drops "_total"


def write_input(path: Path, count: int) -> Path:
    with open(path, "w") as f:
        for i in range(count):
            f.write(json.dumps([[i, 0.5, -1]]) + "\n")
    return path


def verified_output(path: Path, count: int) -> None:
    """Every line answered once, with its own data back: nothing lost, duplicated or failed."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_index = {o["meta"]["tags"]["batch_index"]: o for o in lines}
    assert len(lines) == count and sorted(by_index) == list(range(count))
    assert all("status" not in o and by_index[i]["data"]["ndarray"] == [[i, 0.5, -1]] for i, o in by_index.items())


def metrics(port: int) -> dict[str, Any] | None:
    """The new series from the command's /metrics: {name: [value, ...]} (None until it answers)."""
    try:
        code, body = http_request("GET", f"127.0.0.1:{port}", "/metrics", timeout=2)
    except OSError:
        return None
    if code != 200:
        return None
    families = {f.name: [s.value for s in f.samples] for f in text_string_to_metric_families(body.decode())}
    return {name: families.get(name) for name in (*GAUGES, *COUNTERS)}


def run_watched(args: list[str], port: int, timeout: float = 120.0) -> tuple[subprocess.CompletedProcess[str],
                                                                             list[dict[str, Any]]]:
    """Run the command with --dashboard on ``port``; /metrics scraped every 0.1 s while it runs."""
    command = [CLI, "-g", "seldon", "-d", "echo", "--dashboard", f"tcp:{port}:interface=127.0.0.1", *args]
    process = subprocess.Popen(command, env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    scraped: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            sample = metrics(port)
            if sample is not None and sample[GAUGES[0]]:
                scraped.append(sample)
            time.sleep(0.1)
        out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return subprocess.CompletedProcess(command, process.returncode, out, err), scraped


def summary_rate(output: str) -> float:
    """Lines/s from the command's closing summary ("... 6.02 s, 39.9 lines/s")."""
    found = re.findall(r"([0-9.]+) s, ([0-9.]+) lines/s", output)
    assert found, output[-2000:]
    return float(found[-1][1])


@pytest.fixture
def overload_server(tmp_path: Path) -> Iterator[OverloadServer]:
    """Refuses above 8 at once, 50 ms of work each: at most 160 answers/s."""
    with OverloadServer(tmp_path, threshold=8, delay=0.05) as server:
        yield server


@pytest.fixture
def roomy_server(tmp_path: Path) -> Iterator[OverloadServer]:
    """Room far above the rate asked (64 at once, 10 ms each): only --max-rate holds requests back."""
    with OverloadServer(tmp_path, threshold=64, delay=0.01) as server:
        yield server


def test_adaptive_settles_near_the_threshold_and_finishes_every_line(tmp_path: Path,
                                                                     overload_server: OverloadServer) -> None:
    """32 workers against a model that bears 8: --adaptive finds ~8, and with --retries 0 every line
    is still answered (an overload answer is not the request's fault, so it costs no retry)."""
    source, output = write_input(tmp_path / "in.txt", 1000), tmp_path / "out.txt"
    done, scraped = run_watched(["-h", overload_server.where(), "-i", str(source), "-o", str(output), "-w", "32",
                                 "--adaptive", "--retries", "0"], free_port())
    assert done.returncode == 0, done.stderr[-2000:]
    verified_output(output, 1000)
    server = overload_server.stats()
    share = server["overloads"] / (server["answers"] + server["overloads"])
    limits = [s["seldon_batch_concurrency_limit"][0] for s in scraped]
    settled = limits[len(limits) // 4:]
    print(f"adaptive: {summary_rate(done.stdout + done.stderr):.0f} lines/s, overload share {share:.3f}, "
          f"server {server}, "
          f"limit samples {settled}")
    assert server["answers"] == 1000 and server["max_in_flight"] <= 8
    assert share < 0.25  # without --adaptive: ~0.6 of the answers are refusals and lines fail
    assert settled and 4 <= sum(settled) / len(settled) <= 12, settled
    assert server["max_arriving"] <= 16  # never the 32 workers at once
    assert server["mean_in_flight"] >= 3.2  # the model was kept busy (lower only when CPU-starved)
    last = scraped[-1]
    assert last["seldon_batch_answers"] and last["seldon_batch_answers"][0] > 0
    assert last["seldon_batch_rate_limit"] == []  # no --max-rate: no rate series


def test_max_rate_held_within_ten_percent(tmp_path: Path, roomy_server: OverloadServer) -> None:
    """--max-rate 100 over 600 lines: the server sees 100 requests/s +-10%, second by second."""
    source, output = write_input(tmp_path / "in.txt", 600), tmp_path / "out.txt"
    done = subprocess.run([CLI, "-g", "seldon", "-d", "echo", "-h", roomy_server.where(), "-i", str(source),
                           "-o", str(output), "-w", "16", "--max-rate", "100"], env=loopback_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    verified_output(output, 600)
    arrivals = roomy_server.arrivals()
    span = arrivals[-1] - arrivals[0]
    measured = (len(arrivals) - 1) / span
    windows = [sum(1 for t in arrivals if arrivals[0] + s <= t < arrivals[0] + s + 1) for s in range(int(span))]
    print(f"max-rate 100: {measured:.1f} requests/s over {span:.2f} s, per second {windows}")
    assert len(arrivals) == 600 and abs(measured - 100) <= 10
    assert all(80 <= n <= 120 for n in windows), windows  # smooth, not bursts


def test_max_rate_against_the_real_seldon_microservice(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """The real microservice (one process, one thread: ~100 answers/s on a loaded 2-core host) at
    --max-rate 25: the run goes at the rate within 10%, and its dashboard's /metrics shows the rate
    limit, the concurrency and no overload."""
    source, output = write_input(tmp_path / "in.txt", 150), tmp_path / "out.txt"
    port = free_port()
    done, scraped = run_watched(["-h", seldon_server.rest_host, "-i", str(source), "-o", str(output), "-w", "8",
                                 "--max-rate", "25"], port)
    assert done.returncode == 0, done.stderr[-2000:]
    verified_output(output, 150)
    rate = summary_rate(done.stdout + done.stderr)
    print(f"real Seldon, max-rate 25: {rate:.1f} lines/s, {len(scraped)} scrapes")
    assert abs(rate - 25) <= 2.5
    assert scraped, "the dashboard's /metrics never answered while the batch ran"
    for sample in scraped:
        assert sample["seldon_batch_rate_limit"] == [25.0]
        assert sample["seldon_batch_concurrency_limit"] == [8.0]
        assert 0 <= sample["seldon_batch_requests_in_flight"][0] <= 8
        assert sample["seldon_batch_overload_share"] == [0.0]
        assert sample["seldon_batch_overload_answers"] == [0.0]
    assert max(s["seldon_batch_answers"][0] for s in scraped) > 0


def test_a_sidecar_may_go_easier_on_the_model_never_harder(tmp_path: Path) -> None:
    """max-rate and adaptive are per-file keys, but a file cannot raise the daemon's --max-rate nor
    turn its --adaptive off."""
    base = BatchConfig(deployment_name="echo", input_data_path=str(tmp_path / "in.txt"),
                       output_data_path=str(tmp_path / "out.txt"), max_rate=50.0, adaptive=True)
    sidecar = tmp_path / "in.txt.json"

    def applied(settings: dict[str, Any], config: BatchConfig = base) -> tuple[float | None, bool]:
        sidecar.write_text(json.dumps(settings))
        result = apply_sidecar(config, str(sidecar), max_workers=config.workers)
        return result.max_rate, result.adaptive

    assert applied({"max-rate": 500, "adaptive": False}) == (50.0, True)
    assert applied({"max-rate": "none"}) == (50.0, True)
    assert applied({"max_rate": 10}) == (10.0, True)
    free = base.replace(max_rate=None, adaptive=False)
    assert applied({"max-rate": 10, "adaptive": True}, free) == (10.0, True)
    assert applied({}, free) == (None, False)

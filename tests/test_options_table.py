"""Every option's bad values through a flag, its environment variable, twistd and a sidecar: ONE line naming it.

The table below must hold a bad value for every option of the command and the daemon (a new option
without a row fails the test). Flags and variables go through the command's parser (``cli.parse``,
which leaves with status 2); twistd through its real ``ServerOptions`` with the plugin as subcommand.
--version and --help are run as real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.scripts.twistd import ServerOptions

from seldon_batch_tx import __version__, cli
from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.files import Rejected
from seldon_batch_tx.daemon.sidecars import SIDECAR_ALLOWABLE, SIDECAR_SAFE, apply_sidecar
from seldon_batch_tx.flags import Option
from seldon_batch_tx.tap import DAEMON_TABLE
from tests.loopback import loopback_env

BIN = Path(sys.executable).parent
#: A bad value for every option with a value; flags take "maybe".
BAD: dict[str, str] = {
    "deployment-name": "a/b", "gateway-type": "nginx", "namespace": "..", "host": "x:abc", "transport": "pigeon",
    "http-client": "curl", "data-type": "xml", "payload-type": "FP99", "protocol": "v3", "model-name": "a b",
    "model-version": "a?b", "input-name": "a\x01b", "header": "no colon", "workers": "abc", "retries": "-1",
    "input-data-path": "", "output-data-path": "", "method": "guess", "log-level": "loud", "batch-id": "a\nb",
    "batch-size": "0", "batch-interval": "-1", "ca-cert": "", "call-credentials-token": "a b",
    "call-credentials-token-file": "", "timeout": "nan", "max-failures": "x", "shard-index": "-1",
    "shard-count": "0", "fsync-interval": "-2", "drain-timeout": "inf",
    "wait-ready": "-1", "outage-timeout": "-5", "max-response-bytes": "0",
    "max-line-bytes": "1_000", "grpc-channels": "1.5", "connection-max-age": "-1", "connection-max-requests": "-3",
    "max-rate": "fast", "storage-options": "", "staging-dir": "", "dashboard-linger": "later", "dashboard": "",
    "storage-timeout": "0", "storage-options-file": "",
    "watch-dir": "", "dashboard-token": "a b", "dashboard-token-file": "", "poll-interval": "0",
    "concurrent-batches": "0", "sidecar-allow": "bogus", "file-time-slice": "0.5", "max-batch-rows": "1000001",
    "max-bytes-in-flight": "1", "input-format": "xlsx", "output-format": "xlsx", "columns": "a,,b",
    "keep-columns": "a,a",
}
COMMAND = [o for o in DAEMON_TABLE if o.name in {p.name for p in cli.ProcessorOptions.table}]


def bad(option_name: str) -> str:
    return BAD.get(option_name, "maybe")


def test_the_table_covers_every_option() -> None:
    missing = [o.name for o in DAEMON_TABLE if o.coerce is not None and o.name not in BAD]
    assert not missing


def one_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    assert captured.out == "" and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("option", COMMAND, ids=lambda o: o.name)
def test_command_flag_and_variable(option: Option, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    base = ["-d", "m", "-i", str(tmp_path / "in.txt")]
    value = bad(option.name)
    flag = [f"--{option.name}={value}"] if option.coerce is None else [f"--{option.name}", value]
    with pytest.raises(SystemExit) as leaving:
        cli.parse([*base, *flag])
    assert leaving.value.code == 2
    line = one_line(capsys, "seldon-batch-processor")
    assert option.label in line or f"--{option.name}" in line
    if not value:
        return  # an empty variable is unset: the default
    monkeypatch.setenv(option.env, value)
    with pytest.raises(SystemExit) as leaving:
        cli.parse(base if option.name not in ("deployment-name",) else ["-i", str(tmp_path / "in.txt")])
    assert leaving.value.code == 2
    line = one_line(capsys, "seldon-batch-processor")
    assert option.label in line and f"(from ${option.env})" in line


@pytest.mark.parametrize("option", DAEMON_TABLE, ids=lambda o: o.name)
def test_twistd_flag(option: Option, capsys: pytest.CaptureFixture[str],
                     tmp_path: Path) -> None:
    value = bad(option.name)
    flag = [f"--{option.name}={value}"] if option.coerce is None else [f"--{option.name}", value]
    with pytest.raises(SystemExit) as leaving:
        ServerOptions().parseOptions(["-n", "seldon-batch", "-d", "m", "--watch-dir", str(tmp_path / "w"),
                                      "--dashboard", "none", *flag])
    assert leaving.value.code == 2
    line = one_line(capsys, f"{Path(sys.argv[0]).name} seldon-batch")
    assert option.label in line or f"--{option.name}" in line


@pytest.mark.parametrize("command", [[str(BIN / "seldon-batch-processor"), "--version"],
                                     [str(BIN / "twistd"), "-n", "seldon-batch", "--version"]])
def test_version(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=loopback_env())
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == f"seldon-batch-tx {__version__}"
    assert "Twisted " in proc.stdout and "grpcio " in proc.stdout


@pytest.mark.parametrize("command", [[str(BIN / "seldon-batch-processor"), "--help"],
                                     [str(BIN / "twistd"), "-n", "seldon-batch", "--help"]])
def test_help_has_one_usage_line_and_one_default_each(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=loopback_env())
    assert proc.returncode == 0
    assert proc.stdout.count("Usage:") == 1
    joined = " ".join(proc.stdout.split())
    for chunk in joined.split("--")[1:]:
        assert chunk.count("[default:") <= 1, chunk


SIDECAR_KEYS = sorted(
    o.name for o in DAEMON_TABLE
    if o.name in SIDECAR_SAFE | SIDECAR_ALLOWABLE and o.coerce is not None and o.name in BAD and BAD[o.name]
)


@pytest.mark.parametrize("key", SIDECAR_KEYS)
def test_sidecar_key(key: str, tmp_path: Path) -> None:
    """A sidecar's bad value (the operator allowing every key) is one line naming the key and its value."""
    sidecar = tmp_path / "in.txt.json"
    sidecar.write_text(json.dumps({key: BAD[key]}))
    config = BatchConfig(deployment_name="d", input_data_path=str(tmp_path / "in.txt"),
                         output_data_path=str(tmp_path / "out.txt"), workers=8)
    with pytest.raises(Rejected) as refused:
        apply_sidecar(config, str(sidecar), allow=SIDECAR_ALLOWABLE, max_workers=8)
    message = str(refused.value)
    assert "\n" not in message and f"sidecar setting {key!r}" in message

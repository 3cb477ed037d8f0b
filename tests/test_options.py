"""The command line: the seed's flags, the fixed defects, and one-line usage errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from seldon_batch_tx.flags import normalise_flags
from seldon_batch_tx.options import FLAG_NAMES, ProcessorOptions, default_output_path


@pytest.fixture
def infile(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("[[1]]\n")
    return path


def parse(args: list[str], environ: dict[str, str] | None = None) -> ProcessorOptions:
    options = ProcessorOptions(environ=environ or {})
    options.parseOptions(args)
    return options


def test_seed_short_flags(infile: Path) -> None:
    """Every short flag of the seed's --help, with -t the transport only (the original declared it twice)."""
    o = parse(["-d", "dep", "-g", "seldon", "-n", "ns", "-h", "127.0.0.1:9000", "-t", "grpc", "-a", "json",
               "-p", "tensor", "-w", "8", "-r", "2", "-i", str(infile), "-o", str(infile) + ".res", "-m", "predict",
               "-l", "debug", "-b", "-u", "my-batch", "-s", "4"])
    c = o.config()
    assert (c.deployment_name, c.gateway_type, c.namespace, c.host, c.transport, c.data_type) == \
        ("dep", "seldon", "ns", "127.0.0.1:9000", "grpc", "json")
    assert (c.payload_type, c.workers, c.retries, c.log_level, c.benchmark, c.batch_id, c.batch_size) == \
        ("tensor", 8, 2, "debug", True, "my-batch", 4)


def test_default_output_differs_from_input(infile: Path) -> None:
    c = parse(["-d", "dep", "-i", str(infile)]).config()
    assert c.output_data_path == str(infile.with_name("in.out.txt")) != str(infile)
    assert default_output_path("data") == "data.out.jsonl"


@pytest.mark.parametrize(("args", "use_ssl", "verify"), [
    ([], False, True),
    (["--use-ssl"], True, True),
    (["--use-ssl", "true"], True, True),
    (["--use-ssl=false"], False, True),
    (["--use-ssl", "--no-ssl-verify"], True, False),
    (["--ssl-verify", "false", "--use-ssl", "True"], True, False),
])
def test_ssl_flags_with_or_without_values(infile: Path, args: list[str], use_ssl: bool, verify: bool) -> None:
    c = parse(["-d", "dep", "-i", str(infile), *args]).config()
    assert (c.use_ssl, c.ssl_verify) == (use_ssl, verify)


def test_environment_variables(infile: Path) -> None:
    c = parse([], {"SELDON_BATCH_DEPLOYMENT_NAME": "envdep", "SELDON_BATCH_WORKERS": "7",
                   "SELDON_BATCH_INPUT_DATA_PATH": str(infile), "SELDON_BATCH_USE_SSL": "yes"}).config()
    assert (c.deployment_name, c.workers, c.use_ssl) == ("envdep", 7, True)
    assert parse(["-w", "2"], {"SELDON_BATCH_DEPLOYMENT_NAME": "x",
                               "SELDON_BATCH_INPUT_DATA_PATH": str(infile)}).config().workers == 2


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "IN"], "--deployment-name"),
    (["-d", "x", "-i", "/nonexistent/file"], "does not exist"),
    (["-d", "x", "-i", "IN", "-o", "/nonexistent/dir/out"], "not writable"),
    (["-d", "x", "-i", "IN", "-w", "0"], "at least 1"),
    (["-d", "x", "-i", "IN", "-s", "0"], "at least 1"),
    (["-d", "x", "-i", "IN", "-t", "carrier-pigeon"], "not one of rest, grpc"),
    (["-d", "x", "-i", "IN", "-o", "IN"], "must differ"),
])
def test_bad_arguments(infile: Path, args: list[str], message: str) -> None:
    args = [str(infile) if a == "IN" else a for a in args]
    with pytest.raises(usage.UsageError, match=message):
        parse(args)


def test_usage_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The real command prints one error line naming the option and exits 2 before sending anything."""
    proc = subprocess.run([sys.executable, "-c", "from seldon_batch_tx.cli import main; main()",
                           "-d", "x", "-i", str(tmp_path / "missing.txt")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"seldon-batch-processor: error: -i/--input-data-path {tmp_path}/missing.txt: "
                                        "the input file does not exist or is not a file"]
    assert proc.stdout == ""


def test_flag_normalisation_leaves_other_args_alone() -> None:
    assert normalise_flags(["-w", "true", "--benchmark", "no", "--host", "h"], FLAG_NAMES) == \
        ["-w", "true", "--no-benchmark", "--host", "h"]

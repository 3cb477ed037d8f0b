"""gRPC name-resolver targets for ``--host`` (issue 13): ``dns:///NAME[:PORT]``, ``ipv4:``/``ipv6:`` lists.

A headless Service is reached best through gRPC's own resolver: each channel's round_robin then spreads
its calls over every address. Units: which values ``host_port`` takes (any string is the value or a
ValueError), the one host/transport rule (flags, environment variables, twistd, sidecars: exit 2 and one
line, or a refused sidecar), what grpc is given and where trust on first use fetches a certificate. Real:
two Seldon Core microservices (PidModel, which answers with its pid) behind one ``ipv4:`` list and one
channel both serve a run, a ``dns:///`` target runs every line, and REST refuses both.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.files import Rejected
from seldon_batch_tx.daemon.sidecars import apply_sidecar
from seldon_batch_tx.host_checks import MAX_HOST_CHARS, grpc_scheme, host_port, host_transport_problem
from seldon_batch_tx.options import ProcessorOptions
from seldon_batch_tx.tap import Options as DaemonOptions
from seldon_batch_tx.transports.grpc_channel import grpc_target, split_host_port
from seldon_batch_tx.transports.grpc_client import GrpcTransport
from tests.grpc_transport_helpers import LoopbackServer, make_config, self_signed, the_reactor
from tests.replica_servers import OURS, ReplicaSeldonServer, line_pid, run_batch, verify, write_input
from tests.targets import target_of
from tests.test_cli_usage import assert_one_line_usage_error, run_command

PROG = "seldon-batch-processor"
TWISTD = str(Path(sys.executable).parent / "twistd")
TARGET = "dns:///my-model-headless.ns.svc.cluster.local:5001"

GOOD = [
    TARGET, "dns:///localhost", "dns:///127.0.0.1:9000", "dns:///[::1]:9000", "dns://8.8.8.8:53/svc.ns:80",
    "dns://[::1]:53/svc", "dns://dns-server/svc:1", "dns:svc:80", "DNS:///svc:80",
    "ipv4:127.0.0.1:9000", "ipv4:10.0.0.1:1,10.0.0.2:65535,10.0.0.3:80", "ipv6:[::1]:9000",
    "ipv6:[::1]:1,[fe80::1]:2,[2001:db8::7]:3",
]
# (value, a part of the reason)
BAD = [
    ("dns:///", "no name to resolve"), ("dns:", "no name to resolve"), ("dns://", "must be followed by /NAME"),
    ("dns://server", "must be followed by /NAME"), ("dns:///a:0", "not in 1-65535"), ("dns:///a:x", "not a number"),
    ("dns:///a/b", "not a host name"), ("dns:////a", "not a host name"), ("dns:///a?x=1", "not a host name"),
    ("dns://a b/c", "space"), ("dns://bad_serv er/c", "space"), ("dns://:53/c", "DNS server: no host name"),
    ("dns:///::1:80", "must be in brackets"), ("dns:///" + "a" * 300, "longer than 253"),
    ("ipv4:", "no address after ipv4:"), ("ipv4:127.0.0.1", "has no port"), ("ipv4:localhost:80", "not an IPv4"),
    ("ipv4:127.0.0.1:80,", "empty item"), ("ipv4:,127.0.0.1:80", "empty item"),
    ("ipv4:127.0.0.1:80,,127.0.0.2:80", "empty item"), ("ipv4:127.0.0.1:80, 127.0.0.2:80", "space"),
    ("ipv4:127.0.0.01:80", "not an IPv4"), ("ipv4:[::1]:80", "not an IPv4"), ("ipv4:1.2.3.4:65536", "1-65535"),
    ("ipv4:1.2.3.4:٨٠", "not a number"), ("ipv6:", "no address after ipv6:"), ("ipv6:::1", "written [ADDR]:PORT"),
    ("ipv6:[::1]", "has no port"), ("ipv6:[::1:80", "closing ]"), ("ipv6:[::1]:80,", "empty item"),
    ("ipv6:[127.0.0.1]:80", "not an IPv6"), ("ipv6:[fe80::1%eth0]:80", "zone ids"),
    ("ipv4:127.0.0.1:80\r\nX: y", "control character"), ("dns:///a\0", "control character"),
    ("dns:///dépôt:80", "ASCII"), ("dns:///\u202eevil", "control character"),
    ("ipv4:" + "1.1.1.1:1," * 600, "longer than"),
    ("unix:/run/model.sock", "not a target this tool takes"), ("xds:///svc", "not a target this tool takes"),
    ("http://host:80", "not a target this tool takes"), ("é", "ASCII"), ("x" * (MAX_HOST_CHARS + 1), "longer than"),
    # zone ids, in every bracketed form: in a URL the text after % could name another host or break parsing
    ("[fd00::9%@[::1]:18464", "user part"), ("[::1%#x]:80", "zone ids"), ("[::1%?]:80", "zone ids"),
    ("[fe80::1%eth0]:80", "zone ids"), ("dns:///[fe80::1%eth0]:80", "zone ids"),
]


def options_for(cls: type[ProcessorOptions], infile: Path, argv: list[str],
                environ: dict[str, str]) -> ProcessorOptions:
    options = cls(environ=environ)
    options.parseOptions(["-d", "m", "-i", str(infile), *argv])
    return options


@pytest.fixture
def infile(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("[[1]]\n")
    return path


# -- which values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", GOOD)
def test_targets_are_accepted_unchanged(value: str) -> None:
    assert host_port(value) == value
    assert grpc_scheme(value) in ("dns", "ipv4", "ipv6")
    assert grpc_target(value) == value  # grpc gets them as given


@pytest.mark.parametrize(("value", "why"), BAD, ids=[f"{i}-{v[:24]!r}" for i, (v, _) in enumerate(BAD)])
def test_bad_targets_say_why_in_one_line(value: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        host_port(value)
    message = str(refused.value)
    assert why in message and "\n" not in message and "\r" not in message and len(message) < 400


@pytest.mark.parametrize("value", ["dns:80", "ipv4:8080", "unix:80", "localhost:9000", "[::1]:9000", "h"])
def test_plain_hosts_stay_hosts(value: str) -> None:
    """Only a port after the colon: the host named ``dns`` (or ``unix``), for REST and gRPC alike; gRPC gets it
    behind ``dns:///`` so that it never becomes a resolver or a socket path."""
    assert host_port(value) == value
    assert grpc_scheme(value) is None and host_transport_problem(value, "rest") is None
    assert grpc_target(value) == f"dns:///{value}"


PIECES = st.sampled_from(["dns:", "dns://", "dns:///", "ipv4:", "ipv6:", "DNS:", "[", "]", ":", ",", "/", "::1",
                          "127.0.0.1", "80", "65536", "0", "%", "a", "-", ".", " ", "\n", "\0", "é", "٨", "\ud800"])


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(), st.lists(PIECES, max_size=12).map("".join),
                 st.tuples(st.sampled_from(["dns:///", "ipv4:", "ipv6:", ""]), st.text(max_size=40)).map("".join)))
def test_any_host_string_is_the_value_or_a_value_error(value: str) -> None:
    """host_port returns the value or raises ValueError (one line), never anything else."""
    try:
        assert host_port(value) == value
    except ValueError as e:
        assert len(str(e).splitlines()) == 1
    else:  # what is accepted can also be taken apart for trust on first use
        host, port = split_host_port(value)
        assert host and 1 <= port <= 65535


def test_certificate_fetch_address() -> None:
    """Trust on first use dials the NAME[:PORT] of a dns: target, the first address of a list (gRPC's 443
    when a dns: target has no port)."""
    assert split_host_port(TARGET) == ("my-model-headless.ns.svc.cluster.local", 5001)
    assert split_host_port("dns:///svc") == ("svc", 443)
    assert split_host_port("dns://8.8.8.8:53/svc:7") == ("svc", 7)
    assert split_host_port("dns:///[::1]:9") == ("::1", 9)
    assert split_host_port("dns:svc:8") == ("svc", 8)
    assert split_host_port("ipv4:10.0.0.2:81,10.0.0.3:82") == ("10.0.0.2", 81)
    assert split_host_port("ipv6:[::1]:83,[::2]:84") == ("::1", 83)
    assert split_host_port("dns:80") == ("dns", 80)


# -- the host/transport rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", GOOD)
def test_targets_need_grpc_in_config(value: str) -> None:
    assert host_transport_problem(value, "grpc") is None
    assert "needs --transport grpc" in (host_transport_problem(value, "rest") or "")
    BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o", host=value, transport="grpc")
    with pytest.raises(ValueError, match="needs --transport grpc"):
        BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o", host=value)


@pytest.mark.parametrize("cls", [ProcessorOptions, DaemonOptions])
def test_options_apply_the_rule(cls: type[ProcessorOptions], infile: Path) -> None:
    options = options_for(cls, infile, ["-t", "grpc", "-h", TARGET], {})
    assert options.config().host == TARGET
    options = options_for(cls, infile, [], {"SELDON_BATCH_HOST": "ipv4:127.0.0.1:1", "SELDON_BATCH_TRANSPORT": "grpc"})
    assert options.config().host == "ipv4:127.0.0.1:1"
    with pytest.raises(usage.UsageError) as refused:
        options_for(cls, infile, ["-h", TARGET], {})
    assert str(refused.value) == (f"-h/--host {TARGET}: a gRPC dns: target needs --transport grpc (REST takes "
                                  "host[:port] or [IPv6]:port)")
    with pytest.raises(usage.UsageError, match=r"^-h/--host ipv6:\[::1\]:9 \(from \$SELDON_BATCH_HOST\): a gRPC ipv6"):
        options_for(cls, infile, ["-t", "rest"], {"SELDON_BATCH_HOST": "ipv6:[::1]:9"})


#: (flags, environment, what the one line holds)
REFUSED: list[tuple[list[str], dict[str, str], list[str]]] = [
    (["-h", TARGET], {}, [f"-h/--host {TARGET}: a gRPC dns: target needs --transport grpc"]),
    (["-t", "rest", "-h", "ipv4:127.0.0.1:9,127.0.0.1:10"], {}, ["-h/--host ipv4:127.0.0.1:9,127.0.0.1:10: ",
                                                                "needs --transport grpc"]),
    ([], {"SELDON_BATCH_HOST": TARGET}, [f"-h/--host {TARGET} (from $SELDON_BATCH_HOST): ", "needs --transport grpc"]),
    (["-h", TARGET], {"SELDON_BATCH_TRANSPORT": "rest"}, ["needs --transport grpc"]),
    (["-t", "grpc", "-h", "ipv4:"], {}, ["-h/--host ipv4:: no address after ipv4:"]),
    (["-t", "grpc", "-h", "dns:///"], {}, ["-h/--host dns:///: no name to resolve"]),
    (["-t", "grpc", "-h", "ipv4:localhost:80"], {}, ["localhost is not an IPv4 address"]),
    (["-t", "grpc", "-h", "ipv4:127.0.0.1:80,,127.0.0.1:81"], {}, ["empty item"]),
    (["-t", "grpc"], {"SELDON_BATCH_HOST": "dns:///a b"}, ["(from $SELDON_BATCH_HOST)", "contains a space"]),
    (["-t", "grpc", "-h", "dns:///a\x1b[31m"], {}, ["\\x1b", "control character"]),
    (["-t", "grpc", "-h", "dns:///mödel:80"], {}, ["is not ASCII"]),
    (["-t", "grpc", "-h", "ipv4:" + "127.0.0.1:80," * 1000], {}, ["(13005 characters)", "longer than 4096"]),
]


@pytest.mark.parametrize(("flags", "env", "expected"), REFUSED, ids=[f"{i}" for i in range(len(REFUSED))])
def test_refused_through_the_command(tmp_path: Path, flags: list[str], env: dict[str, str],
                                     expected: list[str]) -> None:
    """The real command: status 2, ONE line naming -h/--host (and the variable it came from), no traceback."""
    (tmp_path / "in.txt").write_text("[[1]]\n")
    proc = run_command([str(OURS), "-d", "m", "-g", "seldon", "-i", "in.txt", *flags], tmp_path, env)
    assert_one_line_usage_error(proc, PROG, *expected)
    assert not (tmp_path / "in.out.txt").exists()


def test_refused_by_twistd(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    proc = run_command([TWISTD, "-n", "--pidfile=", "seldon-batch", "-d", "m", "-i", "in.txt", "--dashboard", "none"],
                       tmp_path, {"SELDON_BATCH_HOST": TARGET})
    assert_one_line_usage_error(proc, "twistd seldon-batch", f"-h/--host {TARGET} (from $SELDON_BATCH_HOST): ",
                                "needs --transport grpc")
    assert proc.stdout == ""


def test_a_sidecar_cannot_move_a_target_to_rest(tmp_path: Path) -> None:
    """A daemon on a dns:/// target whose operator lets sidecars set the transport: ``rest`` is refused with the
    reason (config.replace applies the same rule), ``grpc`` and safe keys are fine."""
    base = BatchConfig(deployment_name="d", input_data_path=str(tmp_path / "in.txt"),
                       output_data_path=str(tmp_path / "out.txt"), host=TARGET, transport="grpc")
    sidecar = tmp_path / "in.txt.json"
    sidecar.write_text(json.dumps({"transport": "rest"}))
    with pytest.raises(Rejected) as refused:
        apply_sidecar(base, str(sidecar), frozenset({"transport"}))
    message = str(refused.value)
    assert message.startswith("sidecar in.txt.json: the settings do not fit together: host ")
    assert "needs --transport grpc" in message and "\n" not in message
    sidecar.write_text(json.dumps({"transport": "grpc", "workers": 1}))
    assert apply_sidecar(base, str(sidecar), frozenset({"transport"})).host == TARGET
    sidecar.write_text(json.dumps({"host": "ipv4:"}))
    with pytest.raises(Rejected, match="no address after ipv4:"):
        apply_sidecar(base, str(sidecar), frozenset({"host"}))


# -- trust on first use ----------------------------------------------------------------------------------------


CALLS = 40


@pytest.mark.parametrize("ips", [["127.0.0.1"], []], ids=["ip-san", "dns-san-only"])
@pytest.mark.parametrize("form", ["ipv4:127.0.0.1:{port}", "dns:///127.0.0.1:{port}", "ipv4:127.0.0.1:{port},{port2}"])
@pytest_twisted.ensureDeferred
async def test_trust_on_first_use_with_targets(tmp_path: Path, form: str, ips: list[str]) -> None:
    """--use-ssl --no-ssl-verify: the certificate of the target's first address is fetched and trusted, and the
    calls (spread over the list) are verified against it, whether it names the address or only a DNS name."""
    key_pem, cert_pem, _ = self_signed(tmp_path, dns=["model.example.test"], ips=ips)
    first = LoopbackServer(grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    second = LoopbackServer(grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    try:
        host = form.format(port=first.port, port2=f"127.0.0.1:{second.port}")
        config = make_config(host, use_ssl=True, ssl_verify=False, timeout=5.0)
        transport = GrpcTransport(config, the_reactor(), target=target_of(config))
        transport.start()
        try:
            # enough calls for round_robin to have connected the second address on a loaded machine too
            answers = [await transport.send({"strData": f"n{i}"}, "p") for i in range(CALLS)]
        finally:
            await transport.stop()
        assert answers == [{"strData": f"n{i}"} for i in range(CALLS)]
        if "," in form:  # round_robin within the one channel of each transport: both servers got calls
            assert first.recorder.metadata and second.recorder.metadata
    finally:
        first.stop()
        second.stop()


# -- real servers ------------------------------------------------------------------------------------------------

LINES = 400


@pytest.fixture(scope="module")
def two_models(seldon_venv: Path) -> Iterator[tuple[ReplicaSeldonServer, ReplicaSeldonServer]]:
    """Two real microservices serving PidModel, one gRPC process each, on different ports."""
    with ReplicaSeldonServer(rest=1, grpc=1, threads=2) as a, ReplicaSeldonServer(rest=1, grpc=1, threads=2) as b:
        yield a, b


def test_ipv4_list_spreads_one_channel_over_both_servers(two_models: tuple[ReplicaSeldonServer, ReplicaSeldonServer],
                                                        tmp_path: Path) -> None:
    """One gRPC channel to ``ipv4:A,B``: round_robin sends calls to both servers; every line answered once."""
    a, b = two_models
    pids = {server: server.grpc_worker_pids() for server in (a, b)}
    assert all(len(p) == 1 for p in pids.values()) and not pids[a] & pids[b]
    input_path = write_input(tmp_path / "in.txt", LINES)
    output_path = tmp_path / "out.txt"
    host = f"ipv4:127.0.0.1:{a.grpc_port},127.0.0.1:{b.grpc_port}"
    started = time.monotonic()
    result = run_batch("ours", host, "grpc", input_path, output_path, 8, timeout=180.0,
                       extra=("--grpc-channels", "1"))
    assert result.returncode == 0, f"{result.describe()}\n{result.log}"
    assert result.errors == 0 and result.lines == LINES, result.describe()
    assert set(result.counts) == pids[a] | pids[b], result.describe()
    assert min(result.counts.values()) >= LINES // 5, result.describe()  # round_robin: about half each
    assert host in result.log  # the log names the target as given
    verified = verify(input_path, output_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(f"ipv4 list: {result.describe()} ({time.monotonic() - started:.1f} s)")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_dns_target_runs_every_line(two_models: tuple[ReplicaSeldonServer, ReplicaSeldonServer], tmp_path: Path,
                                    name: str) -> None:
    a, _ = two_models
    input_path = write_input(tmp_path / "in.txt", LINES)
    output_path = tmp_path / "out.txt"
    host = f"dns:///{name}:{a.grpc_port}"
    result = run_batch("ours", host, "grpc", input_path, output_path, 8, timeout=180.0, extra=("--grpc-channels", "2"))
    assert result.returncode == 0, f"{result.describe()}\n{result.log}"
    assert result.errors == 0 and result.lines == LINES and set(result.counts) == a.grpc_worker_pids()
    verified = verify(input_path, output_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("form", ["dns:///127.0.0.1:{a}", "ipv4:127.0.0.1:{a},127.0.0.1:{b}"])
def test_rest_refuses_the_same_targets(two_models: tuple[ReplicaSeldonServer, ReplicaSeldonServer], tmp_path: Path,
                                       form: str) -> None:
    a, b = two_models
    input_path = write_input(tmp_path / "in.txt", 10)
    output_path = tmp_path / "out.txt"
    result = run_batch("ours", form.format(a=a.grpc_port, b=b.grpc_port), "rest", input_path, output_path, 2,
                       timeout=60.0)
    assert result.returncode == 2, result.log
    lines = result.log.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: -h/--host "), result.log
    assert "needs --transport grpc" in lines[0]
    assert not output_path.exists()


def test_daemon_on_a_dns_target(two_models: tuple[ReplicaSeldonServer, ReplicaSeldonServer], tmp_path: Path,
                                daemons: list[object]) -> None:
    """A real twistd daemon on ``dns:///`` over gRPC: a file runs; a file whose sidecar asks for REST goes to
    failed/ with the reason, and the daemon goes on."""
    from tests.test_daemon_real import Daemon, wait_for

    a, _ = two_models
    watch = tmp_path / "watch"
    incoming = watch / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "rest.txt.json").write_text(json.dumps({"transport": "rest"}))
    write_input(incoming / ".rest.txt", 5).rename(incoming / "rest.txt")
    write_input(incoming / ".good.txt", 20).rename(incoming / "good.txt")
    daemon = Daemon(tmp_path, a, ["-t", "grpc", "-h", f"dns:///127.0.0.1:{a.grpc_port}", "--watch-dir", str(watch),
                                  "--poll-interval", "0.3", "--sidecar-allow", "transport"])
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: (watch / "done" / "good.txt.summary.json").exists()
             and (watch / "failed" / "rest.txt.reason.txt").exists(), 60, "both files filed")
    reason = (watch / "failed" / "rest.txt.reason.txt").read_text()
    assert "needs --transport grpc" in reason, reason
    output = (watch / "done" / "good.out.txt").read_text().splitlines()
    assert len(output) == 20 and all(line_pid(line) in a.grpc_worker_pids() for line in output)
    assert daemon.stop() in (0, -15, 143)

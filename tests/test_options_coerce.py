"""The option table's checks: every value is accepted or refused with ONE line naming the option.

Unit tests of the coerce functions (host, headers, tokens, names, numbers) and of secret files,
plus property tests: any string given to any option, as a flag or an environment variable, is
either accepted or a ``UsageError`` whose message is one line and never holds a secret.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python import usage

from seldon_batch_tx.checks import (
    MAX_SECRET_BYTES,
    at_least,
    boolean,
    finite,
    header_pair,
    header_pairs,
    name_segment,
    option_error,
    read_secret_file,
    secret_token,
    shown,
)
from seldon_batch_tx.flags import normalise_flags
from seldon_batch_tx.host_checks import host_port
from seldon_batch_tx.options import FLAG_NAMES, OPTIONS, ProcessorOptions
from seldon_batch_tx.tap import DAEMON_TABLE
from seldon_batch_tx.tap import Options as DaemonOptions

#: Strings that are hostile to a one-line message or a request head.
NASTY = ["", " ", "\r", "\n", "\0", "a\r\nb", "\u2028", "\x1b[31m", "\x7f", "é", "\ud800", "x" * 5000]
SECRET = "S3cretV4lue"


def one_line(message: str) -> bool:
    return len(message.splitlines()) == 1 and message == message.strip("\r\n")


@pytest.fixture
def infile(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("[[1]]\n")
    return path


# -- host ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:9000", "svc.ns.svc.cluster.local:80", "[::1]:8080",
                                  "[fe80::1]", "my_host:65535", "h:1"])
def test_good_hosts(host: str) -> None:
    assert host_port(host) == host


@pytest.mark.parametrize(("host", "why"), [
    ("x:abc", "port abc is not a number"), ("x:0", "not in 1-65535"), ("x:65536", "not in 1-65535"),
    ("x:", "port '' is not a number"), (":80", "no host name"), ("::1", "must be in brackets"),
    ("[::1", "closing ]"), ("[::1]x", "only :PORT"), ("[nope]:80", "not an IPv6 address"),
    ("a b:80", "space"), ("h\r\nX: y:80", "control character"), ("h/path:80", "not a host name"),
    ("user@h:80", "holds a user part"), ("-h:80", "not a host name"), ("", "empty"), ("x:+80", "not a number"),
    ("x:٨٠", "not a number"),
])
def test_bad_hosts(host: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("+", r"\+")):
        host_port(host)


# -- headers and tokens ----------------------------------------------------------------------------------


def test_header_pairs() -> None:
    assert header_pair("seldon-model:  m1 ") == ("seldon-model", "m1")
    assert header_pair("Authorization: Bearer a.b.c") == ("Authorization", "Bearer a.b.c")
    assert header_pairs("A: 1\n\nB: 2\n") == (("A", "1"), ("B", "2"))
    assert header_pairs("") == ()


@pytest.mark.parametrize(("line", "why"), [
    ("NoColon", "NAME:VALUE"), (": v", "NAME:VALUE"), ("Bad Name: v", "may only hold"), ("X\r: v", "may only hold"),
    ("X: a\rb", "printable ASCII"), ("X: a\0b", "printable ASCII"), ("X: a\nB: c", "printable ASCII"),
    ("X: caf\u00e9", "printable ASCII"), ("Content-Length: 3", "set by the HTTP client"),
    ("transfer-encoding: chunked", "set by the HTTP client"), ("Ke(y: v", "may only hold"),
])
def test_bad_headers(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        header_pair(line)


def test_header_lines_split_on_lf_only() -> None:
    """In $SELDON_BATCH_HEADER only LF separates headers: a CR never makes a second header."""
    with pytest.raises(ValueError, match="printable ASCII"):
        header_pairs("X: a\rInjected: b")
    with pytest.raises(ValueError, match="printable ASCII"):
        header_pairs("X: a\x0bInjected: b")


@pytest.mark.parametrize("token", ["", "a b", "a\tb", "a\r\nb", "a\0", "tök", "a\x7f"])
def test_bad_tokens_never_shown(token: str) -> None:
    with pytest.raises(ValueError) as raised:
        secret_token(token)
    assert token not in str(raised.value) or not token


def test_good_token() -> None:
    assert secret_token("eyJ.abc-_~+/=") == "eyJ.abc-_~+/="


# -- names and numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "why"), [("a/b", "must not contain /"), ("..", "not a name"), ("a b", "spaces"),
                                            ("a?x", r"must not contain \?"), ("%2e", "must not contain %"),
                                            ("", "empty"), ("dép", "ASCII")])
def test_name_segments(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        name_segment(value)
    assert name_segment("my-model_v2.1") == "my-model_v2.1"


@pytest.mark.parametrize(("value", "why"), [("abc", "whole number"), ("1_000", "whole number"), ("١", "whole number"),
                                            ("0", "at least 1"), ("9" * 40, "too large"), ("100001", "at most")])
def test_whole_numbers(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        at_least(1, 100_000)(value)
    assert at_least(1)(" 42 ") == 42


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "1_0", "", "x"])
def test_numbers_must_be_finite(value: str) -> None:
    with pytest.raises(ValueError):
        finite(value)


def test_boolean_words() -> None:
    assert boolean(" Yes ") is True and boolean("off") is False
    with pytest.raises(ValueError, match="not a boolean"):
        boolean("maybe")
    with pytest.raises(usage.UsageError, match="^--use-ssl maybe: not a boolean"):
        normalise_flags(["--use-ssl=maybe"], FLAG_NAMES)


# -- messages --------------------------------------------------------------------------------------------


def test_shown_values() -> None:
    assert shown("plain") == "plain"
    assert shown("a b") == "'a b'"
    assert shown("a\r\nb") == "'a\\r\\nb'"
    assert shown("x" * 500).endswith("... (500 characters)") and len(shown("x" * 500)) < 140
    assert str(option_error("--token", "S3CRET", "bad", secret=True)) == "--token (value not shown): bad"
    assert str(option_error("--workers", "0", "must be at least 1", origin="SELDON_BATCH_WORKERS")) == \
        "--workers 0 (from $SELDON_BATCH_WORKERS): must be at least 1"


@given(st.text())
def test_shown_is_always_one_line(value: str) -> None:
    assert len(shown(value).splitlines()) == 1


# -- secrets from files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "token"), [(b"tok\n", "tok"), (b"tok", "tok"), (b"tok\r\n", "tok")])
def test_secret_file_strips_one_newline(tmp_path: Path, content: bytes, token: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    assert read_secret_file("--x-file", str(path)) == token


def test_secret_file_through_a_symlink(tmp_path: Path) -> None:
    """Kubernetes mounts each secret key as a symlink into a ..data directory: it is followed."""
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "token").write_text(SECRET + "\n")
    (tmp_path / "token").symlink_to(tmp_path / "..data" / "token")
    assert read_secret_file("--x-file", str(tmp_path / "token")) == SECRET


@pytest.mark.parametrize(("content", "why"), [
    (b"", "is empty"), (b"\n", "is empty"), (SECRET.encode() + b"\n\n", "one token"),
    (b"two words\n", "one token"), (SECRET.encode() + b"\0", "one token"), (b"\xff\xfe" + SECRET.encode(), "one token"),
    (b"x" * (MAX_SECRET_BYTES + 1), "larger than"), (SECRET.encode() + b"\nX-Injected: 1\n", "one token"),
])
def test_bad_secret_files(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(usage.UsageError, match=why) as raised:
        read_secret_file("--x-file", str(path))
    message = str(raised.value)
    assert message.startswith(f"--x-file {path}: ") and one_line(message) and SECRET not in message


def test_secret_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO is refused without blocking (nothing writes to it); so are directories and missing files."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, why in [(fifo, "not a regular file"), (tmp_path, "not a regular file"),
                      (tmp_path / "missing", "cannot be read")]:
        with pytest.raises(usage.UsageError, match=why):
            read_secret_file("--x-file", str(path))


def test_token_file_options(infile: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    options = ProcessorOptions(environ={})
    options.parseOptions(["-d", "m", "-i", str(infile), "--call-credentials-token-file", str(token)])
    config = options.config()
    assert config.call_credentials_token == SECRET and SECRET not in repr(config)
    options = ProcessorOptions(environ={"SELDON_BATCH_CALL_CREDENTIALS_TOKEN_FILE": str(token)})
    options.parseOptions(["-d", "m", "-i", str(infile)])
    assert options.config().call_credentials_token == SECRET
    options = ProcessorOptions(environ={"SELDON_BATCH_CALL_CREDENTIALS_TOKEN": "other"})
    with pytest.raises(usage.UsageError, match="cannot be used with --call-credentials-token") as raised:
        options.parseOptions(["-d", "m", "-i", str(infile), "--call-credentials-token-file", str(token)])
    assert "other" not in str(raised.value)


def test_dashboard_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET)
    options = DaemonOptions(environ={})
    options.parseOptions(["-d", "m", "--watch-dir", str(tmp_path), "--dashboard", "tcp:0:interface=0.0.0.0",
                          "--dashboard-token-file", str(token)])
    assert options["dashboard-token"] == SECRET


def test_config_repr_hides_secrets(infile: Path) -> None:
    options = ProcessorOptions(environ={})
    options.parseOptions(["-d", "m", "-i", str(infile), "--call-credentials-token", SECRET,
                          "--header", f"Authorization: Bearer {SECRET}"])
    config = options.config()
    assert config.headers == (("Authorization", f"Bearer {SECRET}"),)
    assert SECRET not in repr(config) and "Authorization" in repr(config)


# -- environment and flags -------------------------------------------------------------------------------


def test_flag_wins_over_a_bad_environment_variable(infile: Path) -> None:
    env = {"SELDON_BATCH_WORKERS": "0", "SELDON_BATCH_HOST": "x:abc"}
    options = ProcessorOptions(environ=env)
    with pytest.raises(usage.UsageError, match=r"^-w/--workers 0 \(from \$SELDON_BATCH_WORKERS\): must be at least 1$"):
        options.parseOptions(["-d", "m", "-i", str(infile), "--host", "127.0.0.1:9"])
    options = ProcessorOptions(environ=env)
    options.parseOptions(["-d", "m", "-i", str(infile), "-w", "4", "--host", "127.0.0.1:9"])
    assert options.config().workers == 4


def test_empty_environment_variable_is_unset(infile: Path) -> None:
    options = ProcessorOptions(environ={"SELDON_BATCH_MODEL_VERSION": "", "SELDON_BATCH_WORKERS": ""})
    options.parseOptions(["-d", "m", "-i", str(infile)])
    assert options.config().model_version is None and options.config().workers == 1


# -- properties ------------------------------------------------------------------------------------------

VALUE_OPTIONS = [o for o in DAEMON_TABLE if o.coerce is not None]
hostile_text = st.one_of(st.text(), st.sampled_from(NASTY), st.text(alphabet=string.printable))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALUE_OPTIONS), hostile_text)
def test_any_value_of_any_option_is_accepted_or_a_value_error(option: object, value: str) -> None:
    """The coerce functions raise nothing but ValueError, whatever the string (sidecars rely on it)."""
    try:
        option.parse(value)  # type: ignore[attr-defined]
    except usage.UsageError as e:
        message = str(e)
        assert one_line(message) and message.startswith(option.label)  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPTIONS), hostile_text)
def test_any_environment_value_is_one_line_or_accepted(infile: Path, option: object, value: str) -> None:
    if "\0" in value:  # an environment cannot hold NUL
        value = value.replace("\0", "")
    options = ProcessorOptions(environ={option.env: value})  # type: ignore[attr-defined]
    try:
        options.parseOptions(["-d", "m", "-i", str(infile)])
    except usage.UsageError as e:
        assert one_line(str(e))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([o for o in DAEMON_TABLE if o.secret]), st.text(min_size=0, max_size=30))
def test_a_secret_value_never_appears_in_a_message(option: object, noise: str) -> None:
    value = noise + SECRET + noise[::-1]
    try:
        option.parse(value)  # type: ignore[attr-defined]
    except usage.UsageError as e:
        assert SECRET not in str(e)


ARG_WORDS = st.one_of(st.sampled_from(["-d", "-h", "-w", "-s", "--header", "--host", "--use-ssl", "--no-use-ssl",
                                       "--timeout", "--call-credentials-token", "--", "-", "--watch-dir",
                                       "--sidecar-allow", "--dashboard", "--shard-index", "--batch-id"]),
                      hostile_text.filter(lambda a: "\0" not in a and not a.startswith(("--he", "--v", "--_"))))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ARG_WORDS, max_size=8))
def test_any_command_line_is_one_line_or_accepted(infile: Path, argv: list[str]) -> None:
    for cls in (ProcessorOptions, DaemonOptions):
        options = cls(environ={})
        try:
            options.parseOptions(["-i", str(infile), *argv])
        except usage.UsageError as e:
            assert one_line(str(e))

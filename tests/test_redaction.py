"""The redaction rule's properties (issue 25): random URLs and random JSON lines with credentials in them.

The real-command tests are in ``tests/test_redaction_cli.py``; these check what no hand-picked case
covers: whatever a URL holds, its query and user part are never in :func:`show_path` or
:func:`batch_name`; whatever a record holds, an encoded line that went through :meth:`Secrets.line`
is strict JSON without the secret, or the line is refused (:class:`SecretInAnswer`).
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from seldon_batch_tx.outputs.writer import LineBuffer
from seldon_batch_tx.redaction import (
    REDACTED,
    SecretInAnswer,
    Secrets,
    batch_name,
    config_secrets,
    show_path,
)

SAFE = st.text(st.characters(codec="utf-8", exclude_characters="?#@/=:"), min_size=1, max_size=12)
SECRET = st.text(st.characters(codec="utf-8", exclude_characters="[]"), min_size=4, max_size=16).filter(
    lambda s: s not in REDACTED and s.strip() == s)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@given(scheme=st.sampled_from(["s3", "https", "gs", "abfs", "file"]), host=SAFE, name=SAFE, query=SAFE, user=SAFE)
def test_a_url_never_shows_its_query_or_user_part(scheme: str, host: str, name: str, query: str, user: str) -> None:
    url = f"{scheme}://{user}:{query}@{host}/dir/{name}?X-Amz-Signature={query}&sig={user}"
    shown = show_path(url)
    after_scheme = shown.split("://", 1)[1]  # the user part is looked for after the scheme ("s:" is in "https:")
    assert f"={query}" not in shown and f"{user}:" not in after_scheme
    assert not shown.startswith(f"{scheme}://{user}")
    assert "?" not in batch_name(url) and "@" not in batch_name(url)


def test_batch_names_and_plain_paths() -> None:
    assert batch_name("https://h/b/in.txt?AWSAccessKeyId=A&Signature=S") == "in.txt"
    assert batch_name("/data/in.txt") == "in.txt"
    assert batch_name("-") == "-"
    assert show_path("/local/what?ever.txt") == "/local/what?ever.txt"  # a local name may hold "?"
    assert show_path("s3://k:s@bucket/key?versionId=1") == "s3://***@bucket/key?***"
    assert show_path("http://[bad/x?q") == "http://***"


class _Lines(LineBuffer):
    def flush(self, now: float | None = None) -> None:
        pass


@settings(max_examples=300)
@given(secret=SECRET, value=JSON_VALUES, spot=st.integers(0, 3))
def test_an_output_line_never_holds_a_secret(secret: str, value: Any, spot: int) -> None:
    """The secret put in a string, a key, alone as a string, or as the record itself."""
    record = [{"data": value, "quoted": f"x{secret}y"}, {secret: value}, {"data": [secret]},
              {"data": value, "n": secret}][spot]
    lines = _Lines()
    lines.secrets = Secrets([secret])
    try:
        lines.write(record)
    except SecretInAnswer:
        return
    out = lines.take().decode("utf-8", "surrogatepass")
    assert secret not in out
    assert json.dumps(secret, ensure_ascii=False)[1:-1] not in out
    json.loads(out)


def test_a_secret_outside_a_string_is_refused_and_nothing_is_written() -> None:
    lines = _Lines()
    lines.secrets = Secrets(["98765432"])
    try:
        lines.write({"data": {"ndarray": [[98765432]]}})
    except SecretInAnswer:
        assert lines.take() == b""
    else:
        raise AssertionError("a bare number equal to a secret was written")


def test_no_secret_means_no_search() -> None:
    assert not Secrets() and not Secrets(["abc"])  # shorter than MIN_SECRET: not searched
    lines = _Lines()
    lines.write({"a": "anything"})
    assert lines.take() == b'{"a":"anything"}\n'


def test_the_config_credentials_are_the_token_secret_headers_and_storage_secrets() -> None:
    class Config:
        call_credentials_token = "tok-123456"
        headers = (("Authorization", "Bearer bearer-value"), ("seldon-model", "public-name"))
        storage_options = json.dumps({"key": "AKIAKEY", "client_kwargs": {"aws_secret_access_key": "SKEY1"},
                                      "endpoint_url": "http://minio:9000"})

    found = set(config_secrets(Config()))
    assert found == {"tok-123456", "Bearer bearer-value", "bearer-value", "AKIAKEY", "SKEY1"}


def test_option_messages_show_urls_by_the_same_rule() -> None:
    from seldon_batch_tx.checks import shown

    assert shown("https://u:pw@h/in.txt?Signature=S1") == "https://***@h/in.txt?***"

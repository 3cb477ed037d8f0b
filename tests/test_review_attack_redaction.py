"""Review attack: a server that quotes the run's credential escaped (JSON ``\\u`` escapes, ``\\/``,
percent-encoding) in the error it answers. The reason quotes that text as is, so the credential
reached the error line and the debug log; it must be ``[redacted]`` there like a plain quote.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from seldon_batch_tx.redaction import REDACTED, Secrets, redact, unescaped
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.v2_runs import PROCESSOR

TOKEN = "sekrit/TOKEN-1234"


def escape(secret: str, how: list[int]) -> str:
    """``secret`` with each character written plainly, as a JSON ``\\u`` escape, or percent-encoded."""
    def one(c: str, h: int) -> str:
        if h == 1:  # a character past the BMP is a surrogate pair
            return f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1]
        return "".join(f"%{b:02X}" for b in c.encode()) if h == 2 else c

    return "".join(one(c, h) for c, h in zip(secret, how, strict=False)) + secret[len(how):]


@given(st.text(st.characters(codec="utf-8", exclude_characters="\\%"), min_size=4, max_size=24),
       st.lists(st.integers(0, 2), max_size=24), st.text(max_size=20), st.text(max_size=20))
def test_escaped_secret_never_shown(secret: str, how: list[int], before: str, after: str) -> None:
    assume(secret not in REDACTED)
    shown = Secrets([secret]).text(before + escape(secret, how) + after)
    assert secret not in unescaped(shown) and secret not in shown
    assert REDACTED in shown


def test_plain_text_unchanged() -> None:
    text = r'HTTP 400: {"info": "caf\u00e9 at 100% load"}'
    assert redact(text, [TOKEN]) == text


def test_slash_escaped_and_twice_percent_encoded() -> None:
    assert redact(r'{"t": "sekrit\/TOKEN-1234"}', [TOKEN]) == '{"t": "[redacted]"}'
    assert redact("q=sekrit%252FTOKEN-1234", [TOKEN]) == "q=[redacted]"


def test_real_run_error_line_and_log(tmp_path: Path) -> None:
    """The CLI against a server answering 400 with the X-Auth-Token quoted escaped and percent-encoded."""
    esc = "".join(f"\\u{ord(c):04x}" if c in "TOKEN" else c for c in TOKEN)
    body = json.dumps({"status": {"info": "refused"}})[:-2] + f', "token": "{esc}", "q": "sekrit%2FTOKEN-1234"}}}}'
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[[1, 2]]\n")
    with HostileServer(tmp_path / "requests.log") as server:
        answer = {"mode": "raw", "status": 400, "body_b64": base64.b64encode(body.encode()).decode()}
        server.script("B1", default=answer)
        proc = subprocess.run([PROCESSOR, "-d", "script", "-g", "istio", "-n", "ns", "-h", server.rest_host, "-u", "B1",
                               "--call-credentials-token", TOKEN, "-i", str(src), "-o", str(out), "-l", "debug"],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
        assert server.received()[0]["auth"] == TOKEN  # the server did get it: the answer quotes it
    record = json.loads(out.read_text())
    reason = record["status"]["reason"]
    assert reason.startswith("HTTP 400") and reason.count(REDACTED) == 2, reason
    for text in (out.read_text(), proc.stderr, proc.stdout):
        assert "TOKEN" not in unescaped(unescaped(text)) and "TOKEN" not in text


def test_excerpt_cut_inside_the_secret(tmp_path: Path) -> None:
    """An answer long enough that the reason's excerpt (4,096 characters) ends inside the credential."""
    assert redact("HTTP 400: xx sekrit/TOK...", [TOKEN]) == "HTTP 400: xx [redacted]..."
    assert redact("HTTP 400: xx sekr...", [TOKEN]) == "HTTP 400: xx [redacted]..."
    assert redact("HTTP 400: xx sek...", [TOKEN]) == "HTTP 400: xx sek..."  # shorter than MIN_SECRET
    body = "A" * 4090 + TOKEN
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[[1, 2]]\n")
    with HostileServer(tmp_path / "requests.log") as server:
        answer = {"mode": "raw", "status": 400, "body_b64": base64.b64encode(body.encode()).decode()}
        server.script("B2", default=answer)
        proc = subprocess.run([PROCESSOR, "-d", "script", "-g", "istio", "-n", "ns", "-h", server.rest_host, "-u", "B2",
                               "--call-credentials-token", TOKEN, "-i", str(src), "-o", str(out), "-l", "debug"],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
    reason = json.loads(out.read_text())["status"]["reason"]
    assert reason.endswith("A" + REDACTED + "..."), reason[-40:]
    assert "sekrit" not in out.read_text() + proc.stderr + proc.stdout

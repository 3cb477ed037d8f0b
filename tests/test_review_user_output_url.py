"""An output URL with ``?`` or ``#`` is refused for that reason first, before any call to the store.

Found in review: ``-o 's3://b/k?x=1'`` was first sent to the store's access check, so a user without
credentials read "NoCredentialsError" and, once that was fixed, a second refusal for the ``?``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.loopback import loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


@pytest.mark.parametrize("url", ["s3://bucket/key.txt?X-Amz-Signature=secret", "s3://bucket/key.txt#part"])
def test_refused_before_the_store_is_asked(url: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("[1, 2]\n")
    env = loopback_env()
    # A store that would refuse every connection: a refusal naming the URL's '?' or '#' proves it was not asked.
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.run([PROCESSOR, "-d", "m", "-g", "seldon", "-h", "127.0.0.1:1", "-i", str(src), "-o", url],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("seldon-batch-processor: error: --output-data-path ")
    assert "may not hold '?' or '#'" in lines[0]
    assert "secret" not in proc.stderr + proc.stdout

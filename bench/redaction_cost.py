"""What redacting the run's credentials costs per output line (issue 25).

Encodes a typical echo answer through :class:`seldon_batch_tx.outputs.writer.LineBuffer` with no
credential configured (no search at all), with three (a token, a header, a storage secret: one
substring search per form of each), and with one quoted in every line (the replace and the JSON
check). Run by hand: ``.venv/bin/python bench/redaction_cost.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from seldon_batch_tx.outputs.writer import LineBuffer
from seldon_batch_tx.redaction import Secrets

SECRETS = ["call-T0KEN-123456", "hdr-s3cret-value", "st0rage-s3cret"]
RECORD: dict[str, Any] = {
    "data": {"names": ["t:0", "t:1", "t:2"], "ndarray": [[1.5, 2.0, 3.25]]},
    "meta": {"tags": {"batch_id": "1a58361c-7772-4c64-aadb-36f3fed19aca", "batch_index": 12345,
                      "batch_instance_id": "2d243f23-efb0-54f3-a059-430d7ddb7a30"}},
}


class _Discard(LineBuffer):
    def flush(self, now: float | None = None) -> None:
        self.take()


def per_line_us(secrets: Secrets, record: dict[str, Any], lines: int) -> float:
    out = _Discard()
    out.secrets = secrets
    started = time.perf_counter()
    for _ in range(lines):
        out.write(record)
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    lines = parser.parse_args().lines
    quoted = {**RECORD, "data": {"ndarray": [[f"echo of {SECRETS[0]}"]]}}
    rows = [("no credential", Secrets(), RECORD), ("3 credentials", Secrets(SECRETS), RECORD),
            ("3, one quoted", Secrets(SECRETS), quoted)]
    print("| case | us/line |\n|---|---|")
    for name, secrets, record in rows:
        print(f"| {name} | {per_line_us(secrets, record, lines):.2f} |")


if __name__ == "__main__":
    main()

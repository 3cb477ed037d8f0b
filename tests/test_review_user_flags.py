"""Flags reach BatchConfig as booleans, whatever their spelling (found in review).

Twisted's ``usage.Options`` stores a bare flag as ``1``: the gRPC log said ``tls=1`` and settings
written out (summaries, the API) held ``1`` where ``BatchConfig`` promises ``bool``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seldon_batch_tx.options import OPTIONS, ProcessorOptions

FLAGS = [o.name for o in OPTIONS if o.coerce is None]


def config_of(tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    src = tmp_path / "in.txt"
    src.write_text("[1]\n")
    options = ProcessorOptions()
    options.parseOptions(["-d", "m", "-g", "seldon", "-h", "127.0.0.1:9", "-i", str(src), *args])
    return options.config()


@pytest.mark.parametrize("form", [["--use-ssl"], ["--use-ssl", "true"], ["--use-ssl=yes"]])
def test_bare_and_valued_flags_are_true(tmp_path: Path, form: list[str]) -> None:
    config = config_of(tmp_path, *form, "--ordered", "-b")
    assert config.use_ssl is True and config.ordered is True and config.benchmark is True


def test_every_flag_is_a_bool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given, negated, from the environment or left alone: every flag field holds True or False."""
    monkeypatch.setenv("SELDON_BATCH_JOIN_INPUT", "true")
    config = config_of(tmp_path, "--use-ssl", "--no-ssl-verify", "--adaptive")
    for name in FLAGS:
        field = name.replace("-", "_")
        if hasattr(config, field):
            assert type(getattr(config, field)) is bool, (name, getattr(config, field))
    assert config.join_input is True and config.ssl_verify is False and config.adaptive is True

"""The fast per-batch instance id maker gives exactly the uuid5 ids that resumes rely on."""

from __future__ import annotations

import io

from seldon_batch_tx.pipeline.reader import instance_id, instance_ids, read_items


def test_instance_ids_match_uuid5() -> None:
    """Every index, including large ones, maps to the same id as ``instance_id`` (uuid5)."""
    for batch_id in ("b7e0c6c2-7f53-4a57-9c0e-2f4f1b7d9a10", "x", "ünïcode"):
        make = instance_ids(batch_id)
        for index in [*range(2000), 10**6, 2**40]:
            assert make(index) == instance_id(batch_id, index)


def test_read_items_uses_the_same_ids() -> None:
    items = list(read_items(io.BytesIO(b"[1]\n[2]\r\n[3]"), "batch"))
    assert [(i.index, i.instance_id, i.line) for i in items] == [
        (n, instance_id("batch", n), line) for n, line in enumerate([b"[1]", b"[2]", b"[3]"])]

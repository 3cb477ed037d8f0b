"""What the image and manifest tests share: where the files are, the manifests' documents, a container's
pod spec, and the real option parser a container's arguments go through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from seldon_batch_tx.options import ProcessorOptions

ROOT = Path(__file__).resolve().parent.parent


K8S = ROOT / "docker" / "k8s"


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


def find(kind: str, file: str | None = None) -> list[dict[str, Any]]:
    return [d for f, d in documents() if d["kind"] == kind and (file is None or f == file)]


class ClusterOptions(ProcessorOptions):
    """The processor's parser, minus the check that the cluster's input file exists here."""

    needs_input = False


def parse_processor(args: list[str], environ: dict[str, str] | None = None) -> ClusterOptions:
    options = ClusterOptions(environ=environ or {})
    options.parseOptions(args)
    return options

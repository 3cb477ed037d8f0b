"""The image, checked without Docker (not available here): the Dockerfile's instructions are parsed,
no secret ships in it, and the build context is built into a wheel holding both commands and the
twistd plugin.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.manifest_helpers import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"


SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL", re.I)


# -- the Dockerfile -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "a continuation line runs off the end"
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[list[tuple[str, str]]]:
    return stages(DOCKERFILE.read_text())


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def test_base_images_are_slim_python_311_pinned_by_tag(dockerfile: list[list[tuple[str, str]]]) -> None:
    """Every stage starts from python:3.11.<patch>-slim..., never an unpinned or latest tag."""
    assert len(dockerfile) >= 1
    for stage in dockerfile:
        image = args_of(stage, "FROM")[0].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
        assert "latest" not in image


def test_runtime_stage_is_non_root_with_the_processor_as_entrypoint(dockerfile: list[list[tuple[str, str]]]) -> None:
    """The final image runs as a numeric non-root user and starts seldon-batch-processor; twistd
    and seldon-batch come from the same venv on PATH."""
    runtime = dockerfile[-1]
    users = args_of(runtime, "USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) >= 1000, user
    assert json.loads(args_of(runtime, "ENTRYPOINT")[-1]) == ["seldon-batch-processor"]
    env = " ".join(args_of(runtime, "ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert any(a.startswith("--from=") and "/opt/venv" in a for a in args_of(runtime, "COPY"))
    assert [k for k, _ in runtime].index("USER") > max(i for i, (k, _) in enumerate(runtime) if k in ("RUN", "COPY"))


def test_package_is_installed_from_the_repo_and_no_toolchain_ships(dockerfile: list[list[tuple[str, str]]]) -> None:
    """The build stage pip-installs the checked-out package; the runtime stage installs nothing
    (no apt-get, no compilers, no pip), it only copies the finished venv."""
    build = " ".join(args_of(dockerfile[0], "RUN"))
    assert re.search(r"pip install (--[\w-]+ )*\"\.\[s3\]\"( |$)", build), build  # with object storage
    assert "twisted.plugin" in build, "the twistd plugin cache is built while site-packages is writable"
    runtime = " ".join(args_of(dockerfile[-1], "RUN"))
    for banned in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert banned not in runtime, banned


def test_no_secrets_in_the_image(dockerfile: list[list[tuple[str, str]]]) -> None:
    """No ENV/ARG carries a token or password, and credentials never enter the build context."""
    for stage in dockerfile:
        for keyword, args in stage:
            if keyword in ("ENV", "ARG"):
                names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
                for name in names:
                    assert not SECRET_WORDS.search(name), f"{keyword} {name}"
            if keyword in ("COPY", "ADD"):
                assert not re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa|\.netrc|\.aws|\.kube", args), args
    text = DOCKERFILE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN", text)
    ignored = ignore_patterns()
    for needed in (".git", ".venv", ".venvs", "tests", ".env", "**/*.pem", "**/*.key"):
        assert needed in ignored, needed


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a path is out when it or a parent matches."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def build_context(target: Path) -> list[str]:
    """Copy what `docker build .` would send (the repo minus .dockerignore) into ``target``."""
    patterns = ignore_patterns()
    sent = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, patterns)]
        for name in filenames:
            rel = rel_dir + name
            if ignored(rel, patterns):
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)
            sent.append(rel)
    return sent


def test_build_context_builds_the_package_with_both_commands_and_the_twistd_plugin(tmp_path: Path) -> None:
    """`COPY . /src` + `pip install .` work from the context .dockerignore leaves: the wheel holds
    the package, the twistd plugin and both console scripts, and nothing of tests or venvs."""
    context = tmp_path / "context"
    sent = build_context(context)
    assert "setup.py" in sent and "seldon_batch_tx/cli.py" in sent
    assert not [p for p in sent if p.startswith((".venv", ".git/", "tests/", "bench/"))]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(context)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("seldon_batch_tx-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "seldon_batch_tx/outputs/merge.py" in names and "seldon_batch_tx/cli.py" in names
    assert any(n.startswith("twisted/plugins/") and n.endswith(".py") for n in names)
    assert "seldon-batch-processor = seldon_batch_tx.cli:main" in entry_points
    assert "seldon-batch = seldon_batch_tx.tools:main" in entry_points
    assert re.search(r"^Requires-Dist: twisted", metadata, re.M | re.I), "twistd comes with Twisted"

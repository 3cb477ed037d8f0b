"""The watch directory with a fake clock, real files and an in-memory model (StubTreq)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.inputs import check_input, is_candidate
from seldon_batch_tx.daemon.service import WatchDirService
from seldon_batch_tx.daemon.sidecars import apply_sidecar
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.targets import target_of


class EchoModel(Resource):
    """Answers like the Seldon echo model; with ``hold`` it keeps requests open until released."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.held: list[Request] = []
        self.bodies: list[dict[str, Any]] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = json.loads(request.content.read())
        self.bodies.append(body)
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return json.dumps(body).encode()

    def release(self) -> int:
        """Answer every held request; how many there were."""
        held, self.held = self.held, []
        for request in held:
            assert request.content is not None
            request.write(request.content.getvalue())
            request.finish()
        return len(held)


class Daemon:
    """One WatchDirService on ``root`` driven by a Clock and a StubTreq model."""

    def __init__(self, root: Path, clock: Clock, model: EchoModel, **kw: Any) -> None:
        self.root, self.clock, self.model = root, clock, model
        self.stub = StubTreq(model)
        self.registry = BatchRegistry(clock)
        base = BatchConfig(deployment_name="echo", input_data_path="unused", output_data_path="unused",
                           gateway_type="seldon", host="model.test", workers=2, retries=0,
                           drain_timeout=kw.pop("drain_timeout", 5.0))
        self.service = WatchDirService(str(root), base, clock, self.registry, poll_interval=1.0,
                                       transport_factory=lambda c, r: RestTransport(c, clock, client=self.stub,
                                                                             target=target_of(c)),
                                       use_inotify=False, **kw)

    def pump(self, until: Callable[[], bool] = lambda: False, seconds: float = 10.0) -> None:
        """Let time pass in 0.1 s steps (answering requests) until ``until()`` or ``seconds``."""
        for _ in range(int(seconds * 10)):
            self.stub.flush()
            if until():
                return
            self.clock.advance(0.1)
        self.stub.flush()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "watch", Clock(), EchoModel())
    yield d
    if d.service.running:
        d.service.stopService()
        d.pump(seconds=6)


def write_lines(path: Path, count: int, start: int = 0) -> None:
    with open(path, "a") as f:
        for i in range(start, start + count):
            f.write(json.dumps([[i, 1.5]]) + "\n")


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_names_that_are_never_inputs() -> None:
    """Hidden files, partial names, markers and sidecars are not inputs."""
    assert is_candidate("data.txt") and is_candidate("data")
    for name in (".data.txt", "data.txt.part", "data.txt.partial", "data.txt.tmp", "data.txt.ready",
                 "data.txt.json", ""):
        assert not is_candidate(name), name


def test_file_unchanged_over_two_polls_is_taken_and_done(daemon: Daemon) -> None:
    """A file still growing waits; once size and mtime hold for two polls it runs and lands in done/."""
    daemon.service.startService()
    src = daemon.path("incoming", "grow.txt")
    write_lines(src, 3)
    daemon.clock.advance(1)  # first sighting
    assert files(daemon.path("incoming")) == ["grow.txt"]
    write_lines(src, 2, start=3)
    os.utime(src, ns=(1, 1_000_000_000))  # a different mtime even on coarse clocks
    daemon.clock.advance(1)  # changed since last poll: still waiting
    assert files(daemon.path("incoming")) == ["grow.txt"]
    daemon.clock.advance(0.5)
    daemon.service.poll()  # an early scan half an interval later is not a second poll
    assert files(daemon.path("incoming")) == ["grow.txt"]
    daemon.pump(lambda: (daemon.path("done", "grow.txt.summary.json")).exists(), seconds=3)
    assert files(daemon.path("done")) == ["grow.out.txt", "grow.txt", "grow.txt.summary.json"]
    assert files(daemon.path("incoming")) == [] and files(daemon.path("processing")) == []
    out = [json.loads(line) for line in daemon.path("done", "grow.out.txt").read_text().splitlines()]
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == [0, 1, 2, 3, 4]
    summary = json.loads(daemon.path("done", "grow.txt.summary.json").read_text())
    assert (summary["lines"], summary["succeeded"], summary["failed"], summary["restarted"]) == (5, 5, 0, False)
    entry = daemon.registry.get(summary["batch_id"])
    assert entry is not None and entry.stats.state == "done" and entry.benchmark is not None


def test_ready_marker_and_rename_take_a_file_at_once(daemon: Daemon) -> None:
    """NAME.ready, or a rename into incoming/ (inotify), make a file complete on the next poll."""
    incoming = _mkdirs(daemon)
    write_lines(incoming / "marked.txt", 2)
    (incoming / "marked.txt.ready").touch()
    daemon.service.startService()  # the first poll sees the marker
    assert files(incoming) == []  # claimed, marker removed
    daemon.pump(lambda: daemon.path("done", "marked.txt.summary.json").exists(), seconds=2)
    assert daemon.path("done", "marked.txt.summary.json").exists()

    write_lines(daemon.path("incoming", "moved.txt"), 2)
    daemon.service.note_renamed_in("moved.txt")
    daemon.clock.advance(0)  # the early poll it schedules
    assert files(daemon.path("incoming")) == []
    daemon.pump(lambda: daemon.path("done", "moved.txt.summary.json").exists(), seconds=2)
    assert daemon.path("done", "moved.out.txt").read_text().count("\n") == 2


def _mkdirs(daemon: Daemon) -> Path:
    for sub in ("incoming", "processing", "done", "failed"):
        daemon.path(sub).mkdir(parents=True, exist_ok=True)
    return daemon.path("incoming")


def test_temporary_names_are_left_alone(daemon: Daemon) -> None:
    """Files being written under a temporary name are never claimed, however long they sit."""
    incoming = _mkdirs(daemon)
    for name in (".hidden.txt", "upload.txt.part", "upload.txt.tmp"):
        write_lines(incoming / name, 1)
    daemon.service.startService()
    daemon.pump(seconds=3)
    assert files(incoming) == [".hidden.txt", "upload.txt.part", "upload.txt.tmp"]
    assert daemon.registry.entries() == []


def test_claim_is_atomic_between_two_daemons(tmp_path: Path) -> None:
    """Two daemons see the same complete file; only one claims and processes it."""
    clock, model = Clock(), EchoModel()
    first = Daemon(tmp_path / "watch", clock, model)
    second = Daemon(tmp_path / "watch", clock, model)
    incoming = _mkdirs(first)
    write_lines(incoming / "shared.txt", 4)
    (incoming / "shared.txt.ready").touch()
    second.service._scan_incoming()  # the second daemon has queued it ...
    assert [e.stats.state for e in second.registry.entries()] == ["queued"]
    first.service.startService()  # ... but the first claims it first
    second.service._start_queued()
    assert second.registry.entries() == [] and not second.service._running
    first.pump(lambda: first.path("done", "shared.txt.summary.json").exists(), seconds=2)
    assert len(model.bodies) == 4
    first.service.stopService()


def test_file_locked_by_another_daemon_is_not_claimed(daemon: Daemon) -> None:
    """A file another daemon holds the lock on (mid-claim, or running in processing/) is left alone."""
    incoming = _mkdirs(daemon)
    write_lines(incoming / "busy.txt", 2)
    (incoming / "busy.txt.ready").touch()
    write_lines(daemon.path("processing", "theirs.txt"), 2)
    fds = [os.open(incoming / "busy.txt", os.O_RDONLY), os.open(daemon.path("processing", "theirs.txt"), os.O_RDONLY)]
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        daemon.service.startService()
        daemon.pump(seconds=2)
        assert files(incoming) == ["busy.txt", "busy.txt.ready"]
        assert files(daemon.path("processing")) == ["theirs.txt"]
        assert model_requests(daemon) == 0
    finally:
        for fd in fds:
            os.close(fd)
    daemon.pump(lambda: daemon.path("done", "busy.txt.summary.json").exists() and
                daemon.path("done", "theirs.txt.summary.json").exists(), seconds=5)
    assert files(daemon.path("processing")) == []


def model_requests(daemon: Daemon) -> int:
    return len(daemon.model.bodies)


def test_sidecar_settings_apply_and_are_validated(daemon: Daemon) -> None:
    """NAME.json overrides per-file settings through the option table; a bad one sends the file to failed/."""
    incoming = _mkdirs(daemon)
    (incoming / "texts.txt").write_text('"hello"\n"world"\n')
    (incoming / "texts.txt.json").write_text(json.dumps({"data_type": "str", "workers": 3, "batch-id": "mine"}))
    (incoming / "texts.txt.ready").touch()
    write_lines(incoming / "zero.txt", 1)
    (incoming / "zero.txt.json").write_text(json.dumps({"workers": 0}))
    (incoming / "zero.txt.ready").touch()
    write_lines(incoming / "sneaky.txt", 1)
    (incoming / "sneaky.txt.json").write_text(json.dumps({"output-data-path": "/etc/passwd"}))
    (incoming / "sneaky.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(lambda: len(files(daemon.path("failed"))) >= 6 and
                daemon.path("done", "texts.txt.summary.json").exists(), seconds=5)
    summary = json.loads(daemon.path("done", "texts.txt.summary.json").read_text())
    # workers 3 is capped at the daemon's own 2: a sidecar cannot push harder than its operator allows
    assert summary["settings"]["workers"] == 2 and summary["settings"]["data_type"] == "str"
    assert summary["batch_id"] == "mine"
    assert [b["strData"] for b in daemon.model.bodies] == ["hello", "world"]
    assert daemon.path("done", "texts.txt.json").exists()  # kept beside the input as a record
    assert "workers" in daemon.path("failed", "zero.txt.reason.txt").read_text()
    assert "must be at least 1" in daemon.path("failed", "zero.txt.reason.txt").read_text()
    assert "not a per-file option" in daemon.path("failed", "sneaky.txt.reason.txt").read_text()
    assert len(daemon.model.bodies) == 2  # nothing sent for the rejected files


def test_sidecar_parsing_is_the_option_table() -> None:
    """Sidecar values are coerced like command-line values: flags, choices and numbers (keys the operator
    allowed with --sidecar-allow included)."""
    base = BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sidecar-{os.getpid()}.json"
    allow = frozenset({"use-ssl", "transport"})
    try:
        path.write_text(json.dumps({"use-ssl": "true", "transport": "grpc", "timeout": 2, "max-failures": None}))
        config = apply_sidecar(base, str(path), allow)
        assert (config.use_ssl, config.transport, config.timeout, config.max_failures) == (True, "grpc", 2.0, None)
        path.write_text(json.dumps({"transport": "carrier-pigeon"}))
        with pytest.raises(Exception, match="not one of"):
            apply_sidecar(base, str(path), allow)
    finally:
        path.unlink()


def test_unreadable_or_malformed_files_go_to_failed_and_the_daemon_goes_on(daemon: Daemon) -> None:
    """Binary, empty, non-JSON and non-regular files land in failed/ with a reason; good files still run."""
    incoming = _mkdirs(daemon)
    (incoming / "binary.bin").write_bytes(b"\x00\x01\x02garbage\xff\n")
    (incoming / "empty.txt").write_text("")
    (incoming / "prose.txt").write_text("Dear model,\nplease score this.\n")
    (incoming / "latin1.txt").write_bytes('"caf\xe9"\n'.encode("latin-1"))
    (incoming / "a-directory").mkdir()
    write_lines(incoming / "good.txt", 3)
    (incoming / "one-bad-line.txt").write_text('[[1]]\nnot json\n[[3]]\n')
    daemon.service.startService()
    daemon.pump(lambda: len(files(daemon.path("done"))) == 6, seconds=6)
    reasons = {p.name[: -len(".reason.txt")]: p.read_text() for p in daemon.path("failed").glob("*.reason.txt")}
    assert set(reasons) == {"binary.bin", "empty.txt", "prose.txt", "latin1.txt", "a-directory"}
    assert "binary" in reasons["binary.bin"] and "empty" in reasons["empty.txt"]
    assert "JSON" in reasons["prose.txt"] and "UTF-8" in reasons["latin1.txt"]
    assert "not a regular file" in reasons["a-directory"]
    assert files(daemon.path("done")) == ["good.out.txt", "good.txt", "good.txt.summary.json", "one-bad-line.out.txt",
                                          "one-bad-line.txt", "one-bad-line.txt.summary.json"]
    summary = json.loads(daemon.path("done", "one-bad-line.txt.summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (2, 1)  # one bad line is an error line, not a rejection
    if os.geteuid() != 0:  # root reads any file, so only an unprivileged run can test permissions
        write_lines(incoming / "secret.txt", 1)
        (incoming / "secret.txt").chmod(0)
        (incoming / "secret.txt.ready").touch()
        daemon.pump(lambda: daemon.path("failed", "secret.txt.reason.txt").exists(), seconds=3)
        assert "cannot" in daemon.path("failed", "secret.txt.reason.txt").read_text()


def test_check_input_accepts_json_lines() -> None:
    """A normal JSON-lines file passes the sniff test."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ok-{os.getpid()}.txt"
    try:
        path.write_text('\n[[1, 2]]\n{"a": 1}\n')
        check_input(str(path))
    finally:
        path.unlink()


def test_poll_survives_errors(daemon: Daemon) -> None:
    """A scan that fails (incoming/ vanished) is logged; polling goes on and later files are taken."""
    daemon.service.startService()
    daemon.path("incoming").rmdir()
    polls = daemon.service.polls
    for _ in range(3):
        daemon.clock.advance(1)
    assert daemon.service.polls == polls + 3
    daemon.path("incoming").mkdir()
    write_lines(daemon.path("incoming", "later.txt"), 1)
    daemon.pump(lambda: daemon.path("done", "later.txt.summary.json").exists(), seconds=4)
    assert daemon.path("done", "later.out.txt").exists()


def test_files_left_in_processing_resume_where_they_stopped(daemon: Daemon) -> None:
    """After a crash, a file in processing/ resumes under its batch id: lines already written are kept, the
    torn last line is cut off, and only the lines without output are sent again."""
    _mkdirs(daemon)
    processing = daemon.path("processing")
    write_lines(processing / "crashed.txt", 3)
    (processing / ".crashed.txt.state.json").write_text(json.dumps({"batch_id": "B-old"}))
    kept = {"data": {"ndarray": [[0, 1.5]]}, "meta": {"tags": {"batch_id": "B-old", "batch_instance_id": "i0",
                                                                "batch_index": 0}}}
    (processing / ".crashed.txt.output").write_text(json.dumps(kept) + '\n{"torn"')
    model = daemon.model
    daemon.service.startService()
    daemon.pump(lambda: daemon.path("done", "crashed.txt.summary.json").exists(), seconds=3)
    out = [json.loads(line) for line in daemon.path("done", "crashed.out.txt").read_text().splitlines()]
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == [0, 1, 2]
    assert out[0] == kept
    assert {o["meta"]["tags"]["batch_id"] for o in out} == {"B-old"}
    assert sorted(b["meta"]["tags"]["batch_index"] for b in model.bodies) == [1, 2]
    summary = json.loads(daemon.path("done", "crashed.txt.summary.json").read_text())
    assert summary["restarted"] is True and summary["batch_id"] == "B-old" and summary["resumed"] == 1
    assert files(processing) == []


def test_stop_keeps_whole_lines_and_leaves_the_file_for_the_next_start(tmp_path: Path) -> None:
    """Stopping mid-batch waits for requests in flight up to the grace time; the file stays in processing/."""
    clock, model = Clock(), EchoModel()
    daemon = Daemon(tmp_path / "watch", clock, model, drain_timeout=2.0)
    incoming = _mkdirs(daemon)
    write_lines(incoming / "long.txt", 20)
    (incoming / "long.txt.ready").touch()
    model.hold = True
    daemon.service.startService()
    answered = 0
    for _ in range(2):
        daemon.pump(lambda: len(model.held) == 2, seconds=1)
        answered += model.release()
    daemon.pump(lambda: len(model.held) == 2, seconds=1)
    assert answered == 4 and len(model.held) == 2, "two requests should be in flight"
    stopped: list[Any] = []
    daemon.service.stopService().addBoth(stopped.append)
    daemon.pump(lambda: bool(stopped), seconds=5)
    assert stopped, "stopService did not finish within the grace time"
    assert files(daemon.path("processing")) == [".long.txt.output", ".long.txt.state.json", "long.txt"]
    text = daemon.path("processing", ".long.txt.output").read_text()
    assert text.endswith("\n") or text == ""
    assert len([json.loads(line) for line in text.splitlines()]) == answered
    [entry] = daemon.registry.entries()
    assert entry.stats.state == "stopped"

    again = Daemon(tmp_path / "watch", Clock(), EchoModel())
    again.service.startService()
    again.pump(lambda: again.path("done", "long.txt.summary.json").exists(), seconds=5)
    assert again.path("done", "long.out.txt").read_text().count("\n") == 20
    again.service.stopService()


def test_several_batches_at_once_when_asked(tmp_path: Path) -> None:
    """--concurrent-batches 2 runs two files at the same time; the third waits, queued."""
    clock, model = Clock(), EchoModel()
    model.hold = True
    daemon = Daemon(tmp_path / "watch", clock, model, concurrent=2)
    incoming = _mkdirs(daemon)
    for name in ("a.txt", "b.txt", "c.txt"):
        write_lines(incoming / name, 2)
        (incoming / (name + ".ready")).touch()
    daemon.service.startService()
    daemon.pump(seconds=1)
    states = sorted(e.stats.state for e in daemon.registry.entries())
    assert states == ["queued", "running", "running"]
    assert files(incoming) == ["c.txt", "c.txt.ready"]
    daemon.service.stopService()
    daemon.pump(seconds=7)

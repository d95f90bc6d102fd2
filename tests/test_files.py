"""File transfer: whole files and streams, intact on every backend, failures accounted for.

Real backends: the host's qemu-ga on its socket, the tiny guest through libvirt
(``lab.ok``) and the tiny guest on a raw chardev socket (``lab.sock``). Failures part-way
come from an in-memory guest filesystem behind a FakeTransport.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import threading
import uuid
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    ConnectionLostError,
    FakeTransport,
    GuestAgent,
    Reply,
    Request,
    SocketTransport,
    TransferError,
)
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.libvirt import LibvirtTransport

from .lab import LOCAL_URI, Lab

SIZE = (6 << 20) + 4321  # 6 MiB (over libvirt's 4 MiB messages) and a tail no chunk divides


# --- an in-memory guest filesystem ----------------------------------------------------


class FakeFiles:
    """Answers guest-file-* from memory, like qemu-ga; ``fail`` breaks the Nth call of a
    command, ``short_by`` makes writes take fewer bytes than sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.handles: dict[int, tuple[str, int]] = {}  # handle -> (path, position)
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, tuple[int, Exception | Reply]] = {}
        self.short_by = 0
        self._next = itertools.count(1000)

    def __call__(self, request: Request) -> Any:
        command, args = request.command, dict(request.arguments or {})
        self.calls[command] += 1
        if command in self.fail and self.calls[command] == self.fail[command][0]:
            failure = self.fail[command][1]
            if isinstance(failure, Reply):
                return failure
            raise failure
        if command == "guest-file-open":
            return self._open(args["path"], args.get("mode", "r"))
        path, position = self.handles[args["handle"]]
        data = self.files[path]
        if command == "guest-file-read":
            chunk = bytes(data[position : position + args["count"]])
            self.handles[args["handle"]] = (path, position + len(chunk))
            eof = position + len(chunk) >= len(data)
            return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": eof}
        if command == "guest-file-write":
            chunk = base64.b64decode(args["buf-b64"])
            chunk = chunk[: max(0, len(chunk) - self.short_by)]
            data[position : position + len(chunk)] = chunk
            self.handles[args["handle"]] = (path, position + len(chunk))
            return {"count": len(chunk), "eof": False}
        if command == "guest-file-seek":
            base = {"set": 0, "cur": position, "end": len(data)}[args["whence"]]
            self.handles[args["handle"]] = (path, base + args["offset"])
            return {"position": base + args["offset"], "eof": False}
        if command == "guest-file-close":
            del self.handles[args["handle"]]
            return {}
        raise AssertionError(f"unexpected {command}")

    def _open(self, path: str, mode: str) -> Any:
        if "r" in mode and path not in self.files:
            return Reply(error_class="GenericError", desc=f"failed to open file '{path}'")
        if "w" in mode:
            self.files[path] = bytearray()
        data = self.files.setdefault(path, bytearray())
        handle = next(self._next)
        self.handles[handle] = (path, len(data) if "a" in mode else 0)
        return handle


CHUNK = 3072  # what the limits below give: (4096 + 256 - 256) // 4 * 3


@pytest.fixture
def files() -> FakeFiles:
    return FakeFiles()


@pytest.fixture
def fake(files: FakeFiles) -> GuestAgent:
    transport = FakeTransport(files, max_request_bytes=4096 + 256, max_reply_bytes=4096 + 256)
    agent = GuestAgent(transport)
    assert (agent.read_chunk, agent.write_chunk) == (CHUNK, CHUNK)
    return agent


def requests(agent: GuestAgent) -> list[Request]:
    assert isinstance(agent.transport, FakeTransport)
    return agent.transport.requests


def commands(agent: GuestAgent) -> list[str]:
    return [r.command for r in requests(agent)]


def test_a_download_failing_part_way_leaves_no_file_and_says_how_far(
    fake: GuestAgent, files: FakeFiles, tmp_path: Path
) -> None:
    files.files["/data"] = bytearray(os.urandom(10_000))
    lost = ConnectionLostError("the connection broke", target="fake agent")
    files.fail["guest-file-read"] = (3, lost)
    target = tmp_path / "data"

    with pytest.raises(TransferError) as caught:
        fake.download("/data", target, progress=lambda done, total: None)

    error = caught.value
    assert (error.transferred, error.total, error.path) == (2 * CHUNK, 10_000, "/data")
    assert f"after {2 * CHUNK} of 10000 bytes" in str(error)
    assert error.__cause__ is lost
    assert error.code == lost.code
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part
    assert commands(fake)[-1] == "guest-file-close"
    assert files.handles == {}


def test_a_read_failing_part_way_without_progress_has_no_total(
    fake: GuestAgent, files: FakeFiles
) -> None:
    files.files["/data"] = bytearray(10_000)
    files.fail["guest-file-read"] = (2, Reply(error_class="GenericError", desc="I/O error"))
    with pytest.raises(TransferError, match=f"after {CHUNK} of \\? bytes") as caught:
        fake.read_file("/data")
    assert isinstance(caught.value.__cause__, AgentCommandError)
    assert "guest-file-seek" not in commands(fake)  # no progress, no size asked
    assert files.handles == {}


def test_an_upload_failing_part_way_closes_its_handle(
    fake: GuestAgent, files: FakeFiles, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(10_000))
    files.fail["guest-file-write"] = (3, Reply(error_class="GenericError", desc="No space"))
    with pytest.raises(TransferError) as caught:
        fake.upload(source, "/data", atomic=False)  # in place: the partial data shows
    assert (caught.value.transferred, caught.value.total) == (2 * CHUNK, 10_000)
    assert "No space" in str(caught.value)
    assert commands(fake)[-1] == "guest-file-close"
    assert files.handles == {}
    assert bytes(files.files["/data"]) == source.read_bytes()[: 2 * CHUNK]


def test_a_short_write_is_a_transfer_error(fake: GuestAgent, files: FakeFiles) -> None:
    files.short_by = 1
    with pytest.raises(TransferError, match="stopped short") as caught:
        fake.write_file("/data", b"x" * 5000, atomic=False)
    assert caught.value.transferred == CHUNK - 1
    assert commands(fake)[-1] == "guest-file-close"
    assert files.handles == {}


def test_a_file_that_does_not_open_needs_no_close(fake: GuestAgent) -> None:
    with pytest.raises(AgentCommandError, match="failed to open"):
        fake.read_file("/missing")
    assert commands(fake) == ["guest-file-open"]


def test_a_cancelled_download_closes_the_handle_and_leaves_no_file(
    fake: GuestAgent, files: FakeFiles, tmp_path: Path
) -> None:
    files.files["/data"] = bytearray(10_000)

    def cancel(done: int, total: int | None) -> None:
        if done > CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake.download("/data", tmp_path / "data", progress=cancel)
    assert list(tmp_path.iterdir()) == []
    assert commands(fake)[-1] == "guest-file-close"
    assert files.handles == {}


def test_an_abandoned_stream_closes_its_handle(fake: GuestAgent, files: FakeFiles) -> None:
    files.files["/data"] = bytearray(10_000)
    stream = fake.iter_file("/data")
    assert isinstance(stream, Generator)  # closable, though typed as an Iterator
    assert len(next(stream)) == CHUNK
    stream.close()
    assert commands(fake)[-1] == "guest-file-close"
    assert files.handles == {}


def test_progress_on_a_file_that_cannot_seek_has_no_total(
    fake: GuestAgent, files: FakeFiles
) -> None:
    files.files["/pipe"] = bytearray(b"hello")
    files.fail["guest-file-seek"] = (
        1,
        Reply(error_class="GenericError", desc="failed to seek file: Illegal seek"),
    )
    calls: list[tuple[int, int | None]] = []
    assert fake.read_file("/pipe", progress=lambda *call: calls.append(call)) == b"hello"
    assert calls == [(5, None)]


def test_write_then_append_in_memory(fake: GuestAgent, files: FakeFiles) -> None:
    assert fake.write_file("/log", b"a" * 4000, atomic=False) == 4000
    assert fake.write_file("/log", b"b" * 10, append=True) == 10
    assert bytes(files.files["/log"]) == b"a" * 4000 + b"b" * 10
    opens = [r.arguments for r in requests(fake) if r.command == "guest-file-open"]
    assert [o["mode"] for o in opens if o] == ["wb", "ab"]


# --- real agents ----------------------------------------------------------------------


@dataclass
class Remote:
    """An agent of one backend and a scratch directory on its side."""

    agent: GuestAgent
    directory: str
    created: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        path = f"{self.directory}/{name}-{uuid.uuid4().hex[:8]}"
        self.created.append(path)
        return path


BACKENDS = [
    pytest.param("host", marks=pytest.mark.agent),
    pytest.param("libvirt", marks=pytest.mark.vm),
    pytest.param("vm-socket", marks=pytest.mark.vm),
]


@pytest.fixture(params=BACKENDS)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "host":
        host: HostAgent = request.getfixturevalue("system_host_agent")
        agent = GuestAgent.from_socket(host.socket, 60)
        directory = tmp_path / "guest"
        directory.mkdir()
        yield Remote(agent, str(directory))
        agent.close()
        return
    lab: Lab = request.getfixturevalue("lab")
    domain = lab.ok if request.param == "libvirt" else lab.sock
    agent = GuestAgent.from_domain(domain, LOCAL_URI, 60)
    expected = LibvirtTransport if request.param == "libvirt" else SocketTransport
    assert isinstance(agent.transport, expected)
    remote = Remote(agent, "/tmp")
    yield remote
    if remote.created:
        agent.exec("/bin/rm", ["-f", *remote.created])
    agent.close()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_progress(calls: list[tuple[int, int | None]], total: int) -> None:
    done = [d for d, _ in calls]
    assert len(done) >= 2, "a multi-chunk transfer reports more than once"
    assert all(a < b for a, b in itertools.pairwise(done)), done
    assert done[-1] == total
    assert {t for _, t in calls} == {total}


def test_write_file_and_read_file_keep_6_mib_intact(remote: Remote) -> None:
    data = os.urandom(SIZE)
    path = remote.path("whole")
    assert remote.agent.write_file(path, data) == SIZE
    assert digest(remote.agent.read_file(path)) == digest(data)
    remote.agent.ping()


def test_upload_and_download_keep_6_mib_intact_and_report_progress(
    remote: Remote, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    source, back = local / "source.bin", local / "back.bin"
    source.write_bytes(os.urandom(SIZE))
    path = remote.path("stream")
    sent: list[tuple[int, int | None]] = []
    received: list[tuple[int, int | None]] = []

    assert remote.agent.upload(source, path, progress=lambda *c: sent.append(c)) == SIZE
    assert remote.agent.download(path, back, progress=lambda *c: received.append(c)) == SIZE

    assert digest(back.read_bytes()) == digest(source.read_bytes())
    assert_progress(sent, SIZE)
    assert_progress(received, SIZE)
    assert len(sent) == -(-SIZE // remote.agent.write_chunk)
    assert sorted(p.name for p in local.iterdir()) == ["back.bin", "source.bin"]  # no .part
    remote.agent.ping()


def test_append_mode(remote: Remote, tmp_path: Path) -> None:
    path = remote.path("append")
    more = tmp_path / "more"
    more.write_bytes(b"<uploaded>")
    remote.agent.write_file(path, b"first;")
    remote.agent.write_file(path, b"second;", append=True)
    remote.agent.upload(more, path, append=True)
    assert remote.agent.read_file(path) == b"first;second;<uploaded>"
    remote.agent.write_file(path, b"fresh")  # without append: truncated
    assert remote.agent.read_file(path) == b"fresh"


@pytest.mark.agent
def test_progress_on_a_real_pipe(host_agent: HostAgent, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(b"through a pipe",))
    writer.start()
    calls: list[tuple[int, int | None]] = []
    with GuestAgent.from_socket(host_agent.socket) as agent:
        data = agent.read_file(str(fifo), progress=lambda *call: calls.append(call))
    writer.join(5)
    assert data == b"through a pipe"
    assert calls == [(len(data), None)]


# --- nothing half-written, sane modes ---------------------------------------------------


def guest_mode(agent: GuestAgent, path: str) -> int:
    return int(agent.run(["stat", "-c", "%a", path], check=True).stdout_text(), 8)


def leftovers(agent: GuestAgent, path: str) -> list[str]:
    """Temporary upload files left beside ``path``."""
    head, _, name = path.rpartition("/")
    listing = agent.run(["ls", "-a", head], check=True).stdout_text().split()
    return [entry for entry in listing if entry.startswith(f".{name}.qga-")]


def test_a_failed_upload_leaves_the_destination_as_it_was(remote: Remote, tmp_path: Path) -> None:
    agent = remote.agent
    path = remote.path("keep")
    agent.write_file(path, b"precious old content")
    source = tmp_path / "big"
    source.write_bytes(os.urandom(4 * agent.write_chunk))
    calls = 0

    def interrupt(done: int, total: int | None) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # Ctrl-C part-way

    with pytest.raises(KeyboardInterrupt):
        agent.upload(source, path, progress=interrupt)
    assert agent.read_file(path) == b"precious old content"
    assert leftovers(agent, path) == []
    agent.upload(source, path)
    assert agent.read_file(path) == source.read_bytes()
    assert leftovers(agent, path) == []


def test_new_files_get_0644_or_the_mode_asked_and_keep_an_existing_mode(remote: Remote) -> None:
    agent = remote.agent
    new, secret = remote.path("new"), remote.path("secret")
    agent.write_file(new, b"data")
    assert guest_mode(agent, new) == 0o644
    agent.write_file(secret, b"key", mode=0o600)
    assert guest_mode(agent, secret) == 0o600
    agent.write_file(secret, b"new key")  # replaced: keeps its mode
    assert guest_mode(agent, secret) == 0o600
    assert agent.read_file(secret) == b"new key"


def test_downloads_honour_the_umask(remote: Remote, tmp_path: Path) -> None:
    path = remote.path("down")
    remote.agent.write_file(path, b"x")
    old = os.umask(0o022)
    try:
        remote.agent.download(path, tmp_path / "fresh")
    finally:
        os.umask(old)
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o644
    existing = tmp_path / "existing"
    existing.write_bytes(b"")
    existing.chmod(0o600)
    remote.agent.download(path, existing)
    assert existing.stat().st_mode & 0o777 == 0o600

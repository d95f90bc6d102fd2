"""Agents to test against: a real qemu-ga on a unix socket, and a scripted fake one.

- :class:`HostAgent` runs the host's own qemu-ga (or another build of it:
  :func:`agent_binaries`) as a real agent on a unix socket, for tests, benchmarks and
  demos. It answers every QGA command for real, so the commands that would change the
  machine it runs on are blocked (:data:`BLOCKED`).
- :class:`FakeAgent` is a scripted agent on a unix socket, for what no real qemu-ga does
  on demand: replies and errors of your choosing, delays, stale or garbage lines,
  connections cut mid-reply. An example test, with pytest's ``tmp_path``::

      import pytest
      from qga_libvirt import AgentTimeoutError, CommandNotFoundError, GuestAgent
      from qga_libvirt.testing import Delay, Error, FakeAgent, Return

      def test_my_inventory_code(tmp_path):
          with FakeAgent(tmp_path / "qga.sock") as fake:
              fake.script("guest-get-host-name", Return({"host-name": "web1"}))
              fake.script("guest-get-load", Error("CommandNotFound",
                          "The command guest-get-load has not been found"))
              fake.script("guest-get-time", Delay(1.0), Return(0))
              with GuestAgent.from_socket(fake.path, timeout=0.5) as agent:
                  assert agent.get_host_name() == "web1"
                  with pytest.raises(CommandNotFoundError):
                      agent.get_load()
                  with pytest.raises(AgentTimeoutError):
                      agent.get_time()
              assert [r["execute"] for r in fake.requests].count("guest-get-host-name") == 1
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "AGENT_CACHE_DIR",
    "BACKPORTS_AGENT",
    "BLOCKED",
    "SYSTEM_AGENT",
    "Delay",
    "Disconnect",
    "Error",
    "FakeAgent",
    "Handler",
    "HostAgent",
    "NoReply",
    "Peer",
    "Return",
    "Send",
    "Step",
    "agent_binaries",
    "agent_version",
    "line",
]

SYSTEM_AGENT = Path("/usr/sbin/qemu-ga")
"""The machine's own qemu-ga (Debian 12: 7.2)."""
AGENT_CACHE_DIR = Path(os.environ.get("QGA_AGENT_CACHE", "/var/cache/qga-libvirt/agents"))
"""Where ``scripts/setup.sh`` unpacks other qemu-ga builds (``$QGA_AGENT_CACHE``)."""
BACKPORTS_AGENT = AGENT_CACHE_DIR / "bookworm-backports" / "root" / "usr" / "sbin" / "qemu-ga"
"""qemu-ga from Debian's bookworm-backports (10.0), as ``scripts/setup.sh`` unpacks it."""


def agent_version(binary: str | os.PathLike[str]) -> str:
    """The version a qemu-ga binary reports (``qemu-ga -V``), e.g. ``"10.0.2"``.

    Raises:
        RuntimeError: the binary does not run or does not print a version.
    """
    try:
        done = subprocess.run([os.fspath(binary), "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{binary} does not run: {exc}") from exc
    found = re.search(r"\d+\.\d+(?:\.\d+)?", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{binary} -V printed no version: {done.stdout}{done.stderr}")
    return found[0]


def agent_binaries() -> dict[str, Path]:
    """The qemu-ga builds on this machine, by generation (``"7.2"``, ``"10.0"``), oldest first.

    The system's own and the bookworm-backports build that ``scripts/setup.sh`` fetches;
    those that are missing are left out.
    """
    found: dict[str, Path] = {}
    for binary in (SYSTEM_AGENT, BACKPORTS_AGENT):
        if binary.exists():
            generation = ".".join(agent_version(binary).split(".")[:2])
            found.setdefault(generation, binary)
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))


BLOCKED = (
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-set-time",
    "guest-set-user-password",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
)
"""Commands that would change the host if its own qemu-ga ran them."""


class HostAgent:
    """A qemu-ga process in ``unix-listen`` mode, in a directory of its own.

    Use as a context manager; :attr:`socket` is the path to connect to. :meth:`restart`
    stops and starts it on the same path (an agent restart, as a guest reboot would do).
    ``binary`` picks the qemu-ga to run (default: the system's; see :func:`agent_binaries`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        blocked: tuple[str, ...] = BLOCKED,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="qga-agent-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "qga.sock"
        self.blocked = blocked
        self.binary = str(binary or shutil.which("qemu-ga") or SYSTEM_AGENT)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start qemu-ga and wait until its socket accepts connections.

        Raises:
            RuntimeError: qemu-ga is missing or did not start (its stderr is quoted).
        """
        if not os.path.exists(self.binary):
            raise RuntimeError(f"{self.binary} not found: apt-get install qemu-guest-agent")
        self.socket.unlink(missing_ok=True)
        command = [self.binary, "-m", "unix-listen", "-p", str(self.socket)]
        command += ["-t", str(self.directory), "-f", str(self.directory / "qga.pid")]
        if self.blocked:
            command += ["-b", ",".join(self.blocked)]
        log = open(self.directory / "qga.log", "wb")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not _listening(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qemu-ga did not start: {self.log()}")
            time.sleep(0.005)

    def log(self) -> str:
        path = self.directory / "qga.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


# --- the scripted fake agent ------------------------------------------------------------

Handler = Callable[["Peer", dict[str, Any]], bool]
"""Gets each request; returns True when it answered it itself."""


def line(message: object) -> bytes:
    """``message`` as one line of the wire protocol."""
    return json.dumps(message).encode() + b"\n"


class Peer:
    """One accepted connection, as a handler or a :class:`Step` sees it."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def send(self, data: bytes, *, bytewise: bool = False) -> None:
        """Send raw bytes; ``bytewise`` sends them one at a time."""
        if not bytewise:
            self.conn.sendall(data)
            return
        for i in range(len(data)):
            self.conn.sendall(data[i : i + 1])
            time.sleep(0.0001)

    def reply(self, request: dict[str, Any], value: Any, **kw: bool) -> None:
        """Answer ``request`` with ``{"return": value}`` (and its id, if it had one)."""
        message: dict[str, Any] = {"return": value}
        if "id" in request:
            message["id"] = request["id"]
        self.send(line(message), **kw)

    def error(self, request: dict[str, Any], error_class: str, desc: str) -> None:
        """Answer ``request`` with an agent error."""
        message: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
        if "id" in request:
            message["id"] = request["id"]
        self.send(line(message))

    def close(self) -> None:
        """Cut the connection (the client sees it lost)."""
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class Step:
    """One thing the fake agent does for a scripted request (see :meth:`FakeAgent.script`)."""

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Return(Step):
    """Answer with ``{"return": value}``."""

    value: Any

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        peer.reply(request, self.value)


@dataclass(frozen=True)
class Error(Step):
    """Answer with an agent error, e.g. ``Error("GenericError", "no such file")``."""

    error_class: str
    desc: str

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        peer.error(request, self.error_class, self.desc)


@dataclass(frozen=True)
class Delay(Step):
    """Wait ``seconds`` before the next step (a slow agent; past the timeout, a late reply)."""

    seconds: float

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        time.sleep(self.seconds)


@dataclass(frozen=True)
class Send(Step):
    """Send raw bytes, or a message as one line: a stale reply, garbage, a stray 0xFF."""

    data: bytes | dict[str, Any]

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        peer.send(self.data if isinstance(self.data, bytes) else line(self.data))


@dataclass(frozen=True)
class Disconnect(Step):
    """Cut the connection (after what the earlier steps sent)."""

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        peer.close()


@dataclass(frozen=True)
class NoReply(Step):
    """Send nothing: an agent that hangs on this request."""

    def run(self, peer: Peer, request: dict[str, Any]) -> None:
        pass


class FakeAgent:
    """A scripted agent serving ``path`` from a thread, one client at a time, until :meth:`stop`.

    It speaks enough QGA to be a peer (the 0xFF resynchronisation, guest-sync-delimited,
    guest-sync, guest-ping, guest-info; ``{}`` for anything else; no reply for
    guest-shutdown and guest-suspend-ram). :meth:`script` changes the answer to a
    command; ``handler`` (called with every request first) can do anything.
    :attr:`requests` records every request as decoded, :attr:`connections` counts the
    clients served. ``path`` defaults to a socket in a temporary directory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        handler: Handler | None = None,
        *,
        backlog: int = 4,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="qga-fake-") if path is None else None
        self.path = Path(path) if path is not None else Path(self._tmp.name) / "qga.sock"  # type: ignore[union-attr]
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._scripts: dict[str, list[tuple[tuple[Step, ...], int | None]]] = {}
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(backlog)
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def script(self, command: str, *steps: Step, times: int | None = 1) -> None:
        """Answer the next ``times`` requests for ``command`` (None: all) with ``steps``.

        Scripts for one command queue up: the first is used until it is spent. A command
        left without a script gets the default answer.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._lock:
            self._scripts.setdefault(command, []).append((steps, times))

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_steps(self, command: str) -> tuple[Step, ...] | None:
        with self._lock:
            queue = self._scripts.get(command)
            if not queue:
                return None
            steps, times = queue[0]
            if times is not None:
                if times <= 1:
                    queue.pop(0)
                else:
                    queue[0] = (steps, times - 1)
            return steps

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._talk(Peer(conn))

    def _talk(self, peer: Peer) -> None:
        peer.conn.settimeout(0.1)
        buffer = b""
        while not self._stop.is_set():
            try:
                data = peer.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                peer.conn.close()
                return
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if raw.startswith(b"\xff"):
                    raw = raw.lstrip(b"\xff")
                    peer.send(line({"error": {"class": "GenericError", "desc": "stray '\\uFFFD'"}}))
                try:
                    request = json.loads(raw)
                except ValueError:
                    peer.send(
                        line({"error": {"class": "GenericError", "desc": "JSON parse error"}})
                    )
                    continue
                self.requests.append(request)
                try:
                    self._answer(peer, request)
                except OSError:
                    return
                if peer.conn.fileno() < 0:
                    return

    def _answer(self, peer: Peer, request: dict[str, Any]) -> None:
        if self.handler is not None and self.handler(peer, request):
            return
        steps = self._next_steps(str(request.get("execute")))
        if steps is None:
            self._default(peer, request)
            return
        for step in steps:
            step.run(peer, request)
            if peer.conn.fileno() < 0:
                return

    @staticmethod
    def _default(peer: Peer, request: dict[str, Any]) -> None:
        command = request["execute"]
        arguments = request.get("arguments", {})
        if command == "guest-sync-delimited":
            message: dict[str, Any] = {"return": arguments["id"]}
            if "id" in request:
                message["id"] = request["id"]
            peer.send(b"\xff" + line(message))
        elif command == "guest-sync":
            peer.reply(request, arguments["id"])
        elif command == "guest-info":
            peer.reply(request, {"version": "fake-1.0", "supported_commands": []})
        elif command in ("guest-shutdown", "guest-suspend-ram"):
            pass  # no reply on success
        else:
            peer.reply(request, {})


def _listening(path: Path) -> bool:
    """Whether a unix socket at ``path`` accepts connections: it exists between bind()
    and listen() too, and a connect in that window is refused. /proc/net/unix marks a
    listening socket with the __SO_ACCEPTCON flag (0x10000), without connecting to it."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return path.exists()
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == target and int(fields[3], 16) & 0x10000:
            return True
    return False

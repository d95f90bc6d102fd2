"""The socket backend survives what the first reliability run did not cover (issue 10):
interrupts mid-call, agents that come back, busy chardevs, hostile replies, arguments
the agent cannot parse. Each test failed before the fix."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    AgentTimeoutError,
    AgentUnreachableError,
    ConnectionLostError,
    GuestAgent,
    InvalidArgumentError,
    ProtocolError,
    ReplyTooLargeError,
)
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.socket import SocketTransport

from .fakeagent import FakeAgent, Peer, line
from .lab import Lab


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


def slow_sync(delay: float) -> Callable[[Peer, dict[str, Any]], bool]:
    """guest-sync answers after ``delay`` seconds, from a thread (the agent stays live)."""

    def handler(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] != "guest-sync":
            return False

        def later() -> None:
            time.sleep(delay)
            with contextlib.suppress(OSError):  # the client went away: that is the point
                peer.reply(request, request["arguments"]["id"])

        threading.Thread(target=later, daemon=True).start()
        return True

    return handler


class AppError(Exception):
    """Any exception at all, from the application's own signal handler."""


def interrupt_after(seconds: float, exc: BaseException) -> None:
    """A real signal arrives mid-call, and its handler raises ``exc``. (SIGUSR1, not
    SIGALRM: pytest-timeout's own alarm uses that.)"""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise exc

    signal.signal(signal.SIGUSR1, handler)
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1)).start()


@pytest.fixture
def alarm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    time.sleep(0.05)  # a late timer's signal lands on our handler, not the default (exit)
    signal.signal(signal.SIGUSR1, previous)


def clients(sock_path: Path) -> dict[str, Callable[[], GuestAgent]]:
    def from_fd() -> GuestAgent:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock_path))
        return GuestAgent.from_fd(s, timeout=5)

    return {
        "from_fd": from_fd,
        "idle_none": lambda: GuestAgent.from_socket(sock_path, timeout=5, idle_timeout=None),
        "idle_default": lambda: GuestAgent.from_socket(sock_path, timeout=5),
    }


@pytest.mark.parametrize("kind", ["from_fd", "idle_none", "idle_default"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RecursionError("deep"), AppError()])
def test_an_interrupt_mid_call_propagates_and_the_next_call_works(
    sock_path: Path, alarm: None, kind: str, exc: BaseException
) -> None:
    with FakeAgent(sock_path, slow_sync(0.6)):
        client = clients(sock_path)[kind]()
        try:
            assert client.ping() is None  # connected and synced
            interrupt_after(0.15, exc)
            started = time.monotonic()
            with pytest.raises(type(exc)) as caught:
                client.sync(1)
            assert caught.value is exc  # unchanged
            assert time.monotonic() - started < 0.5  # it interrupted the wait
            # Not wedged: no RuntimeError, and the late reply to sync(1) never shows up.
            time.sleep(0.6)  # the late reply is now on the wire (or the socket is gone)
            assert client.sync(2) == 2
            assert client.ping() is None
        finally:
            client.close()


def test_sigint_to_a_process_mid_call_leaves_the_agent_usable(tmp_path: Path) -> None:
    """Ctrl-C in a real process, in the middle of a call: KeyboardInterrupt comes out
    as it is, and the same agent object answers the next call correctly."""
    path = tmp_path / "fake.sock"
    script = f"""
import sys, time
from qga_libvirt import GuestAgent
agent = GuestAgent.from_socket({str(path)!r}, timeout=10, idle_timeout=None)
agent.ping()
print("calling", flush=True)
try:
    agent.sync(1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
time.sleep(1.0)
print("after", agent.sync(2), agent.sync(3), flush=True)
"""
    with FakeAgent(path, slow_sync(0.8)):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "calling"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["interrupted", "after", "2", "3"]


def test_a_timed_out_request_is_never_written_so_it_never_runs_later(sock_path: Path) -> None:
    """While the agent is down, only the resync goes out: nothing waits in the chardev to
    run when the agent comes back."""
    down = threading.Event()
    down.set()

    def handler(peer: Peer, request: dict[str, Any]) -> bool:
        return down.is_set()  # swallow everything while "down"

    with FakeAgent(sock_path, handler) as fake:
        client = GuestAgent.from_socket(sock_path, timeout=0.3, idle_timeout=None)
        try:
            for _ in range(3):
                with pytest.raises(AgentTimeoutError) as caught:
                    client.call("guest-exec", {"path": "/bin/touch", "arg": ["/tmp/x"]})
                assert "nothing was sent" in str(caught.value)
                assert caught.value.is_unreachable
            down.clear()  # the agent is back
            assert client.ping() is None
            executed = [r["execute"] for r in fake.requests]
            assert "guest-exec" not in executed
            assert executed.count("guest-ping") == 1
        finally:
            client.close()


def test_a_fresh_connection_costs_one_resync_and_a_reused_one_none(host_agent: HostAgent) -> None:
    transport = SocketTransport(host_agent.socket, idle_timeout=None)
    client = GuestAgent(transport)
    try:
        client.ping()
        conv = transport._conversation
        assert conv.synced_once
        sync_id = conv._sync_id
        client.ping()
        client.info()
        assert transport._conversation is conv
        assert not conv.needs_resync
        assert conv._sync_id == sync_id is None
    finally:
        client.close()


def test_a_busy_chardev_is_retried_until_the_deadline_then_says_so(sock_path: Path) -> None:
    """QEMU queues a couple of connections; past that connect() fails with EAGAIN."""
    with FakeAgent(sock_path, backlog=0):
        holder = GuestAgent.from_socket(sock_path, idle_timeout=None)
        holder.ping()  # served: the fake talks to one client at a time
        queued = [socket.socket(socket.AF_UNIX) for _ in range(4)]
        filled = []
        for s in queued:
            s.setblocking(False)
            try:
                s.connect(str(sock_path))
                filled.append(s)
            except BlockingIOError:
                s.close()
                break
        else:
            pytest.fail("the listen queue never filled")
        try:
            late = GuestAgent.from_socket(sock_path, timeout=0.8)
            started = time.monotonic()
            with pytest.raises(AgentUnreachableError) as caught:
                late.ping()
            waited = time.monotonic() - started
            assert 0.7 < waited < 3.0  # retried until the call's deadline, not 0.00 s
            assert "busy" in str(caught.value)
            assert "share one GuestAgent" in str(caught.value)
            assert caught.value.hint is not None
            # Once the queue drains, a retrying call gets through within its timeout.
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(late.with_timeout(10).ping()))
            t.start()
            time.sleep(0.3)
            for s in filled:
                s.close()
            holder.close()
            t.join(15)
            assert result == [None]
        finally:
            for s in filled:
                s.close()
            holder.close()


def test_a_reply_past_the_cap_is_dropped_and_the_next_call_works(sock_path: Path) -> None:
    sent = threading.Event()

    def giant(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] != "guest-get-osinfo":
            return False

        def flood() -> None:
            try:
                peer.send(b'{"return": "' + b"A" * (8 << 20))  # no newline, ever
            except OSError:
                sent.set()

        threading.Thread(target=flood, daemon=True).start()
        return True

    with FakeAgent(sock_path, giant) as fake:
        transport = SocketTransport(sock_path, idle_timeout=None, max_reply_line=1 << 20)
        client = GuestAgent(transport, timeout=10)
        try:
            started = time.monotonic()
            with pytest.raises(ReplyTooLargeError) as caught:
                client.call("guest-get-osinfo")
            assert time.monotonic() - started < 5  # not the timeout
            assert caught.value.command == "guest-get-osinfo"
            assert transport._conversation.buffered == 0
            assert client.ping() is None
            assert fake.connections == 2  # the rest was not drained: a new connection
        finally:
            client.close()


def test_a_deeply_nested_reply_is_a_protocol_error(sock_path: Path) -> None:
    def deep(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-get-osinfo":
            peer.send(b'{"id": %d, "return": ' % request["id"] + b"[" * 100_000 + b"\n")
            return True
        return False

    with FakeAgent(sock_path, deep):
        client = GuestAgent.from_socket(sock_path, idle_timeout=None)
        try:
            with pytest.raises(ProtocolError) as caught:
                client.call("guest-get-osinfo")
            assert "nested too deeply" in str(caught.value)
            assert client.ping() is None
        finally:
            client.close()


def test_arguments_the_agent_cannot_parse_fail_at_once_with_the_real_agent(
    agent: GuestAgent,
) -> None:
    """Before: qemu-ga answered with an id-less parse error, dropped, and the call waited
    its whole timeout saying the command "may still be running"."""
    for arguments in ({"path": "/tmp/\udce9"}, {"path": "/bin/true", "arg": ["\ud800"]}):
        started = time.monotonic()
        with pytest.raises(InvalidArgumentError) as caught:
            agent.call("guest-exec", arguments, timeout=3)
        assert time.monotonic() - started < 1
        assert caught.value.command == "guest-exec"
    with pytest.raises(InvalidArgumentError, match="argument time is NaN"):
        agent.call("guest-set-time", {"time": float("nan")}, timeout=3)
    assert agent.ping() is None


def test_an_id_less_parse_error_answers_our_request_at_once(sock_path: Path) -> None:
    """qemu-ga answers a request it cannot parse with an error without an id; it used to
    be dropped, and the call waited its whole timeout ("may still be running")."""

    def unparsed(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-get-osinfo":
            peer.send(line({"error": {"class": "GenericError", "desc": "JSON parse error"}}))
            return True
        return False

    with FakeAgent(sock_path, unparsed):
        client = GuestAgent.from_socket(sock_path, timeout=5, idle_timeout=None)
        try:
            started = time.monotonic()
            with pytest.raises(AgentCommandError, match="JSON parse error"):
                client.call("guest-get-osinfo")
            assert time.monotonic() - started < 2
            assert client.ping() is None
        finally:
            client.close()


def test_arguments_nested_too_deeply_are_refused(sock_path: Path) -> None:
    nested: Any = []
    for _ in range(5000):
        nested = [nested]
    with FakeAgent(sock_path) as fake, GuestAgent.from_socket(sock_path) as client:
        with pytest.raises(InvalidArgumentError, match="nested too deeply"):
            client.call("guest-ping", {"x": nested})
        assert client.ping() is None
        assert [r["execute"] for r in fake.requests] == ["guest-sync-delimited", "guest-ping"]


def test_unreachable_means_no_answer_from_the_agent(sock_path: Path) -> None:
    """issue 15: a timeout after the first exchange and a lost connection are unreachable."""

    def cut(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-get-osinfo":
            peer.close()
            return True
        if request["execute"] == "guest-nosuch-fake":
            peer.error(
                request, "CommandNotFound", "The command guest-nosuch-fake has not been found"
            )
            return True
        return bool(request["execute"] == "guest-get-time")  # never answered

    with FakeAgent(sock_path, cut):
        client = GuestAgent.from_socket(sock_path, timeout=0.3, idle_timeout=None)
        try:
            client.ping()
            with pytest.raises(AgentTimeoutError) as timed_out:
                client.call("guest-get-time")
            assert timed_out.value.is_unreachable
            with pytest.raises(ConnectionLostError) as lost:
                client.call("guest-get-osinfo")
            assert lost.value.is_unreachable
            with pytest.raises(AgentCommandError) as refused:
                client.call("guest-nosuch-fake")
            assert not refused.value.is_unreachable
        finally:
            client.close()


@pytest.mark.vm
def test_a_busy_qemu_chardev_is_retried_then_said_busy(lab: Lab) -> None:
    """The same against QEMU's own chardev (the lab's raw-socket guest): it queues a
    couple of connections, then connect() fails with EAGAIN."""
    holder = GuestAgent.from_domain(lab.sock, lab.conn, idle_timeout=None)
    assert isinstance(holder.transport, SocketTransport)
    path = holder.transport.path
    assert path is not None
    holder.ping()  # holds the chardev
    filled: list[socket.socket] = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            filled.append(s)
        else:
            pytest.fail("QEMU's queue never filled")
        late = GuestAgent.from_socket(path, timeout=1)
        started = time.monotonic()
        with pytest.raises(AgentUnreachableError, match="busy"):
            late.ping()
        assert time.monotonic() - started > 0.9
    finally:
        for s in filled:
            s.close()
        holder.close()
    assert GuestAgent.from_domain(lab.sock, lab.conn).with_timeout(30).ping() is None


def test_waiting_for_another_threads_call_counts_against_the_timeout(sock_path: Path) -> None:
    """One call at a time per connection: a call queued behind a slow one gives up at its
    own deadline (it used to wait for the lock first, then start its timeout)."""
    with FakeAgent(sock_path, slow_sync(2.0)):
        client = GuestAgent.from_socket(sock_path, timeout=10, idle_timeout=None)
        try:
            client.ping()
            slow = threading.Thread(target=client.sync, args=(1,))
            slow.start()
            time.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(AgentTimeoutError) as caught:
                client.call("guest-ping", timeout=0.5)
            assert time.monotonic() - started < 1.2
            assert "not sent" in str(caught.value)
            slow.join(10)
            assert client.sync(3) == 3
        finally:
            client.close()


def test_a_stopped_real_agent_runs_none_of_the_requests_that_were_not_sent(
    tmp_path: Path,
) -> None:
    """The issue's case on the real qemu-ga. On a healthy connection the first request
    goes out at once (no round trip is spent proving the agent is there), so when the
    agent stops, that one may run later, and its error says so. Every call after that
    timeout resyncs first and sends nothing: when the agent resumes, none of them runs
    (they all used to)."""
    markers = [tmp_path / f"ran-{i}" for i in range(3)]
    with HostAgent(tmp_path / "agent") as host:
        assert host.process is not None
        client = GuestAgent.from_socket(host.socket, timeout=5, idle_timeout=None)

        def touch(marker: Path) -> AgentTimeoutError:
            with pytest.raises(AgentTimeoutError) as caught:
                client.call("guest-exec", {"path": "/bin/touch", "arg": [str(marker)]}, timeout=0.5)
            return caught.value

        try:
            client.ping()  # connected and synced: the stop hits an open connection
            host.process.send_signal(signal.SIGSTOP)
            try:
                assert "may still be running" in str(touch(markers[0]))
                assert "nothing was sent" in str(touch(markers[1]))
                assert "nothing was sent" in str(touch(markers[2]))
            finally:
                host.process.send_signal(signal.SIGCONT)
            assert client.ping() is None
            deadline = time.monotonic() + 10
            while not markers[0].exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # anything else queued has run by now
            assert [m.exists() for m in markers] == [True, False, False]
        finally:
            client.close()

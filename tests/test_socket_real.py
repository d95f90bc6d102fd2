"""The raw-socket backend against the machine's real qemu-ga."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from qga_libvirt import (
    ERR_FROM_AGENT,
    ERR_NO_CONNECT,
    AgentCommandError,
    AgentInfo,
    AgentTimeoutError,
    AgentUnreachableError,
    CommandDisabledError,
    CommandNotFoundError,
    GuestAgent,
)
from qga_libvirt.testing import HostAgent


def test_ping_and_info(agent: GuestAgent) -> None:
    assert agent.ping() is None
    info = agent.info()
    assert isinstance(info, AgentInfo)
    assert info.version.split(".")[0].isdigit()
    names = {c.name for c in info.supported_commands}
    assert {"guest-ping", "guest-info", "guest-exec"} <= names
    shutdown = info.command("guest-shutdown")
    assert shutdown is not None
    assert not shutdown.enabled  # blocked by the test agent
    assert not shutdown.success_response


def test_sync_and_sync_delimited_echo(agent: GuestAgent) -> None:
    assert agent.sync(123456) == 123456
    assert agent.sync_delimited(654321) == 654321


def test_call_returns_the_raw_value(agent: GuestAgent) -> None:
    assert agent.call("guest-sync", {"id": 99}) == 99
    assert isinstance(agent.call("guest-get-host-name")["host-name"], str)


def test_agent_errors_are_typed(agent: GuestAgent) -> None:
    with pytest.raises(CommandDisabledError) as disabled:
        agent.call("guest-set-time")
    assert disabled.value.code == ERR_FROM_AGENT
    assert disabled.value.error_class == "CommandNotFound"
    assert "has been disabled" in disabled.value.desc
    assert agent.info().version in str(disabled.value)
    with pytest.raises(CommandNotFoundError) as unknown:
        agent.call("guest-no-such-command")
    assert "has not been found" in unknown.value.desc
    with pytest.raises(AgentCommandError) as generic:
        agent.call("guest-file-open", {"path": "/nonexistent/qga-test"})
    assert type(generic.value) is AgentCommandError
    assert generic.value.error_class == "GenericError"
    assert "/nonexistent/qga-test" in str(generic.value)
    assert not generic.value.is_unreachable
    agent.ping()  # still usable


def test_missing_socket_is_unreachable_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "nope.sock"
    with pytest.raises(AgentUnreachableError) as caught:
        GuestAgent.from_socket(path).ping()
    error = caught.value
    assert error.code == ERR_NO_CONNECT
    assert error.is_unreachable
    assert str(path) in str(error)
    assert "is the VM running" in str(error)
    assert isinstance(error.__cause__, FileNotFoundError)


def test_refused_socket_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody listens
    with pytest.raises(AgentUnreachableError, match="nothing is listening"):
        GuestAgent.from_socket(path).ping()


def test_from_fd_wraps_a_connected_socket(host_agent: HostAgent) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(host_agent.socket))
    with GuestAgent.from_fd(sock.detach()) as agent:
        assert agent.sync(7) == 7
        assert agent.info().version


def test_threads_are_serialised_never_interleaved(agent: GuestAgent) -> None:
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(100):
                assert agent.sync(base + i) == base + i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_reconnects_after_the_agent_restarts(tmp_path: Path) -> None:
    with HostAgent(tmp_path) as host:
        agent = GuestAgent.from_socket(host.socket, idle_timeout=None)
        assert agent.sync(1) == 1
        host.restart()
        assert agent.sync(2) == 2  # no error: the dead connection is found and replaced
        agent.close()


def test_idle_connection_is_given_back_to_other_clients(tmp_path: Path) -> None:
    with HostAgent(tmp_path) as host:
        first = GuestAgent.from_socket(host.socket, idle_timeout=0.2)
        first.ping()
        assert first.transport.connected  # type: ignore[attr-defined]
        time.sleep(0.6)
        assert not first.transport.connected  # type: ignore[attr-defined]
        second = GuestAgent.from_socket(host.socket, timeout=2)
        second.ping()  # would wait forever behind a held connection
        second.close()
        first.ping()  # reconnects on demand
        first.close()


def test_a_held_connection_locks_others_out(tmp_path: Path) -> None:
    """Why the idle policy exists: the agent serves one client at a time."""
    with HostAgent(tmp_path) as host:
        holder = GuestAgent.from_socket(host.socket, idle_timeout=None)
        holder.ping()
        other = GuestAgent.from_socket(host.socket, timeout=0.5)
        with pytest.raises(AgentTimeoutError) as caught:
            other.ping()
        assert "another client may also be holding the socket" in str(caught.value)
        holder.close()
        other.close()


def test_connect_per_call_policy(tmp_path: Path) -> None:
    with HostAgent(tmp_path) as host:
        agent = GuestAgent.from_socket(host.socket, idle_timeout=0)
        assert agent.sync(5) == 5
        assert not agent.transport.connected  # type: ignore[attr-defined]
        assert agent.sync(6) == 6
        agent.close()


def test_timeout_view_and_override(agent: GuestAgent) -> None:
    slow = agent.with_timeout(30)
    assert slow.timeout == 30
    assert agent.timeout == 5
    assert slow.transport is agent.transport
    assert agent.call("guest-sync", {"id": 3}, timeout=0.5) == 3


def test_closed_agent_says_so(host_agent: HostAgent) -> None:
    agent = GuestAgent.from_socket(host_agent.socket)
    agent.ping()
    agent.close()
    with pytest.raises(AgentUnreachableError, match="closed"):
        agent.ping()

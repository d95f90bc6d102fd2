"""reboot, poweroff, halt, wait_until_gone: a scripted agent, a stand-in domain, real guests.

The real part boots throwaway tiny guests of its own (the lab's are shared by other
tests): one through libvirt is rebooted (its agent comes back, its uptime restarts) and
powered off (the domain stops); one on a raw socket is halted.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from qga_libvirt import (
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnresponsiveError,
    CommandDisabledError,
    FakeTransport,
    GuestAgent,
    ShutdownTimeoutError,
    SocketTransport,
)
from qga_libvirt.transports.base import Features, Identity, features_of
from qga_libvirt.transports.libvirt import LibvirtTransport
from scripts import tinyguest

from .fakeagent import FakeAgent, Peer
from .lab import Lab

# --- a scripted agent on a socket (the guest-sync fence) --------------------------------


class Rebooting:
    """Takes guest-shutdown like qemu-ga, then goes silent for ``down`` seconds."""

    def __init__(self, down: float = 0.0, refuse: bool = False) -> None:
        self.down = down
        self.refuse = refuse
        self.going = False
        self.silent_until = 0.0
        self.modes: list[str | None] = []

    def __call__(self, peer: Peer, request: dict[str, Any]) -> bool:
        command = request["execute"]
        if time.monotonic() < self.silent_until:
            return True  # the guest is rebooting: nobody answers
        if command == "guest-shutdown":
            self.modes.append(request.get("arguments", {}).get("mode"))
            if self.refuse:
                peer.error(request, "CommandNotFound", "Command guest-shutdown has been disabled")
            self.going = not self.refuse
            return True  # no reply on success
        if command == "guest-sync" and self.going:  # the fence: answered, then down
            peer.reply(request, request["arguments"]["id"])
            self.going = False
            self.silent_until = time.monotonic() + self.down
            return True
        return False


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


def test_reboot_on_a_socket_is_confirmed_by_the_fence(sock_path: Path) -> None:
    handler = Rebooting()
    with FakeAgent(sock_path, handler) as fake:
        agent = GuestAgent.from_socket(sock_path, timeout=2)
        agent.reboot()
        agent.close()
    assert handler.modes == ["reboot"]
    commands = [r["execute"] for r in fake.requests]
    assert commands[-2:] == ["guest-shutdown", "guest-sync"]


def test_a_refused_shutdown_raises(sock_path: Path) -> None:
    with FakeAgent(sock_path, Rebooting(refuse=True)):
        agent = GuestAgent.from_socket(sock_path, timeout=2)
        with pytest.raises(CommandDisabledError):
            agent.poweroff()
        with pytest.raises(CommandDisabledError):
            agent.halt(wait=5)
        agent.close()


def test_reboot_with_wait_sees_the_agent_go_and_come_back(sock_path: Path) -> None:
    handler = Rebooting(down=1.5)
    with FakeAgent(sock_path, handler):
        agent = GuestAgent.from_socket(sock_path, timeout=2)
        start = time.monotonic()
        agent.reboot(wait=20)
        assert time.monotonic() - start >= 1.4  # it waited for the way back
        agent.ping()
        agent.close()


def test_wait_until_gone_returns_when_the_agent_stops(sock_path: Path) -> None:
    fake = FakeAgent(sock_path)
    agent = GuestAgent.from_socket(sock_path, timeout=2)
    agent.ping()
    threading.Timer(0.3, fake.stop).start()
    start = time.monotonic()
    agent.wait_until_gone(10)
    assert 0.2 < time.monotonic() - start < 5
    agent.close()


def test_wait_until_gone_times_out_while_the_agent_answers(sock_path: Path) -> None:
    with FakeAgent(sock_path):
        agent = GuestAgent.from_socket(sock_path, timeout=2)
        with pytest.raises(ShutdownTimeoutError, match="still answers"):
            agent.wait_until_gone(0.5)
        agent.close()


# --- a stand-in libvirt domain ----------------------------------------------------------


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    error = libvirt.libvirtError(message)
    error.err = (code, 10, message, 2, None, None, None, 0, 0)
    return error


class StandInConnection:
    """The domain's connection, alive (the transport probes it, see issue 10)."""

    def getURI(self) -> str:  # noqa: N802 - libvirt's name
        return "test:///stand-in"

    def isAlive(self) -> int:  # noqa: N802 - libvirt's name
        return 1

    def getLibVersion(self) -> int:  # noqa: N802 - libvirt's name
        return 9000000


class StandInDomain:
    """Records the typed power calls libvirt would get."""

    def __init__(self, fail: libvirt.libvirtError | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.active = True
        self.fail = fail

    def name(self) -> str:
        return "stand-in"

    def UUIDString(self) -> str:  # noqa: N802 - libvirt's name
        return "00000000-0000-0000-0000-00000000c0de"

    def connect(self) -> StandInConnection:
        return StandInConnection()

    def reboot(self, flags: int) -> int:
        self.calls.append(("reboot", flags))
        if self.fail is not None:
            raise self.fail
        return 0

    def shutdownFlags(self, flags: int) -> int:  # noqa: N802 - libvirt's name
        self.calls.append(("shutdownFlags", flags))
        self.active = False
        return 0

    def isActive(self) -> int:  # noqa: N802 - libvirt's name
        return int(self.active)


def test_libvirt_reboot_and_poweroff_use_the_typed_api() -> None:
    domain = StandInDomain()
    agent = GuestAgent(LibvirtTransport(domain))
    agent.reboot()
    agent.poweroff(wait=5)  # the stand-in stops at once: gone, and stopped
    assert domain.calls == [
        ("reboot", libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT),
        ("shutdownFlags", libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT),
    ]


def test_transports_declare_their_features() -> None:
    virt = LibvirtTransport(StandInDomain())
    features = features_of(virt)
    assert features.power is virt
    assert features.agent_events is virt
    assert features.identity == Identity(
        uri="test:///stand-in", domain_uuid="00000000-0000-0000-0000-00000000c0de"
    )
    assert features_of(SocketTransport("/run/x.sock")) == Features(
        identity=Identity(socket="/run/x.sock")
    )
    left, right = socket.socketpair()
    with right, GuestAgent.from_fd(left) as by_fd:  # no path: another process cannot open it
        assert features_of(by_fd.transport) == Features()
    # A transport that declares nothing (written to the bare contract) has no features,
    # and power goes through the agent's own guest-shutdown.
    fake = FakeTransport(lambda request: None)
    assert features_of(fake) == Features()
    GuestAgent(fake).reboot()
    assert [(r.command, r.arguments) for r in fake.requests] == [
        ("guest-shutdown", {"mode": "reboot"})
    ]


def test_libvirt_errors_of_the_typed_api_are_mapped() -> None:
    fail = libvirt_error(
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        "Guest agent is not responding: QEMU guest agent is not connected",
    )
    agent = GuestAgent(LibvirtTransport(StandInDomain(fail)))
    with pytest.raises(AgentNotConnectedError) as caught:
        agent.reboot()
    assert caught.value.command == "guest-shutdown"
    assert caught.value.__cause__ is fail


def test_libvirt_halt_takes_a_channel_closed_mid_command_as_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    answer = "Guest agent is not responding: Guest agent disappeared while executing command"

    def agent_command(domain: Any, text: str, timeout: int, flags: int) -> str:
        sent.append(text)
        raise libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, answer)

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", agent_command)
    agent = GuestAgent(LibvirtTransport(StandInDomain()))
    agent.halt()
    assert json.loads(sent[0]) == {"execute": "guest-shutdown", "arguments": {"mode": "halt"}}
    answer = "Guest agent is not responding: Guest agent not available for now"
    with pytest.raises(AgentUnresponsiveError):
        agent.halt()


# --- real throwaway guests --------------------------------------------------------------


@pytest.fixture(scope="module")
def guests(lab: Lab) -> Iterator[tuple[str, str]]:
    """Two tiny guests of this module's own: libvirt channel, and raw socket."""
    conn = lab.conn
    names = (f"qgapower{os.getpid()}-virt", f"qgapower{os.getpid()}-sock")
    try:
        tinyguest.start(conn, names[0], agent="libvirt", data_disk=False)
        tinyguest.start(conn, names[1], agent="socket", data_disk=False)

        def up(name: str) -> None:
            GuestAgent.from_domain(name, conn).wait_for_agent(180)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(up, names))
        yield names
    finally:
        for name in names:
            tinyguest.destroy(conn, name)


def uptime(agent: GuestAgent) -> float:
    return float(agent.read_file("/proc/uptime").split()[0])


@pytest.mark.vm
def test_vm_reboot_with_wait_then_poweroff(lab: Lab, guests: tuple[str, str]) -> None:
    agent = GuestAgent.from_domain(guests[0], lab.conn, timeout=30)
    agent.run(["/bin/sleep", "3"])  # so the uptime after the reboot is surely smaller
    before = uptime(agent)
    agent.reboot(wait=180)
    assert uptime(agent) < before  # it did reboot, and its agent answers again
    agent.poweroff(wait=120)
    with pytest.raises(libvirt.libvirtError):
        lab.conn.lookupByName(guests[0]).isActive()  # transient: gone once it stopped


@pytest.mark.vm
def test_vm_halt_on_the_socket_backend(lab: Lab, guests: tuple[str, str]) -> None:
    agent = GuestAgent.from_domain(guests[1], lab.conn, timeout=10)
    assert agent.get_host_name()
    agent.halt(wait=120)  # returns once the agent is gone
    with pytest.raises(AgentTimeoutError):
        agent.call("guest-ping", timeout=2)
    assert lab.conn.lookupByName(guests[1]).isActive()  # halted, not powered off

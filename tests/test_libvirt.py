"""The libvirt backend against a real libvirtd and real tiny guests."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import libvirt
import pytest

from qga_libvirt import (
    AgentInfo,
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    CommandNotFoundError,
    DomainNotFoundError,
    DomainNotRunningError,
    GuestAgent,
    GuestAgentError,
    RequestTooLargeError,
)
from qga_libvirt.discovery import agent_channel_from_xml, list_domains
from qga_libvirt.models import OsInfo
from qga_libvirt.quiet import quiet_libvirt_errors
from qga_libvirt.transports import domain as domain_transports
from qga_libvirt.transports.libvirt import LibvirtTransport
from qga_libvirt.transports.socket import SocketTransport

from .lab import TCP_URI, Lab

pytestmark = pytest.mark.vm


def test_osinfo_by_name_uuid_and_id_locally_and_over_tcp(lab: Lab) -> None:
    dom = lab.domain(lab.ok)
    for uri in (None, TCP_URI):
        for key in (lab.ok, dom.UUIDString(), dom.ID(), str(dom.ID())):
            agent = GuestAgent.from_domain(key, uri)
            osinfo = agent.get_osinfo()
            assert isinstance(osinfo, OsInfo)
            assert os.path.isdir(f"/lib/modules/{osinfo.kernel_release}")  # the host's kernel
            assert isinstance(agent.transport, LibvirtTransport)
            assert agent.target == f"domain '{lab.ok}'"


def test_open_domain_and_connection_objects_are_accepted(lab: Lab) -> None:
    dom = lab.domain(lab.ok)
    assert GuestAgent.from_domain(dom).get_host_name()
    assert GuestAgent.from_domain(lab.ok, lab.conn).get_host_name()


def test_nonexistent_domain(lab: Lab) -> None:
    with pytest.raises(DomainNotFoundError) as caught:
        GuestAgent.from_domain("qga-no-such-domain")
    assert "'qga-no-such-domain'" in str(caught.value)
    assert "virsh list --all" in str(caught.value)
    assert caught.value.is_unreachable


def test_shut_off_domain(lab: Lab) -> None:
    with pytest.raises(DomainNotRunningError) as caught:
        GuestAgent.from_domain(lab.off)
    assert f"'{lab.off}'" in str(caught.value)
    assert f"virsh start {lab.off}" in str(caught.value)


def test_domain_without_agent_channel(lab: Lab) -> None:
    with pytest.raises(AgentNotConfiguredError) as caught:
        GuestAgent.from_domain(lab.none)
    assert f"'{lab.none}'" in str(caught.value)
    assert "org.qemu.guest_agent.0" in str(caught.value)


def test_agent_not_connected(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.never)
    with pytest.raises(AgentNotConnectedError) as caught:
        agent.ping()
    assert f"'{lab.never}'" in str(caught.value)
    assert "not running in the guest" in str(caught.value)


def test_the_four_errors_are_distinct_types() -> None:
    kinds = {DomainNotFoundError, DomainNotRunningError, AgentNotConfiguredError}
    kinds.add(AgentNotConnectedError)
    assert len(kinds) == 4
    for one in kinds:
        assert issubclass(one, AgentUnreachableError)
        assert not any(issubclass(one, other) for other in kinds - {one})


def test_list_domains_reports_every_kind(lab: Lab) -> None:
    domains = {d.name: d for d in list_domains()}
    ok, never, none, off, sock = (
        domains[n] for n in (lab.ok, lab.never, lab.none, lab.off, lab.sock)
    )
    assert ok.state == "running"
    assert ok.agent_channel is not None
    assert ok.agent_channel.state == "connected"
    assert ok.agent_channel.held_by_libvirt
    assert ok.agent_channel.socket_path
    assert os.path.exists(ok.agent_channel.socket_path)
    assert ok.id == lab.domain(lab.ok).ID()
    assert ok.uuid == lab.domain(lab.ok).UUIDString()
    assert never.agent_channel is not None
    assert never.agent_channel.state == "disconnected"
    assert none.state == "running"
    assert none.agent_channel is None
    assert off.state == "shut off"
    assert off.id is None
    assert off.agent_channel is not None  # configured, just not running
    assert sock.agent_channel is not None
    assert not sock.agent_channel.held_by_libvirt
    assert sock.agent_channel.socket_path
    assert os.path.exists(sock.agent_channel.socket_path)
    assert {d.name for d in list_domains(TCP_URI)} >= set(lab.created)


def test_socket_backend_on_a_channel_libvirt_does_not_hold(lab: Lab) -> None:
    auto = GuestAgent.from_domain(lab.sock)
    assert isinstance(auto.transport, SocketTransport)
    assert os.path.isdir(f"/lib/modules/{auto.get_osinfo().kernel_release}")
    auto.close()
    with pytest.raises(AgentNotConfiguredError, match="backend='socket'"):
        GuestAgent.from_domain(lab.sock, backend="libvirt")
    with pytest.raises(AgentUnreachableError, match="held by libvirt"):
        GuestAgent.from_domain(lab.ok, backend="socket")


READ_ONLY = [
    "ping",
    "info",
    "get_osinfo",
    "get_host_name",
    "get_users",
    "get_timezone",
    "get_time",
    "network_get_interfaces",
    "get_fsinfo",
    "get_disks",
    "get_vcpus",
    "get_cpustats",
    "get_diskstats",
    "get_memory_block_info",
    "fsfreeze_status",
]


@pytest.mark.parametrize("backend", ["libvirt", "socket"])
@pytest.mark.parametrize("method", READ_ONLY)
def test_read_only_commands_on_both_backends(lab: Lab, backend: str, method: str) -> None:
    name = lab.ok if backend == "libvirt" else lab.sock
    with GuestAgent.from_domain(name) as agent:
        try:
            result = getattr(agent, method)()
        except CommandNotFoundError:
            pytest.skip(f"{method} is newer than the guest's agent")
        if method != "ping":
            assert result is not None
            assert not isinstance(result, dict)


def test_sync_and_sync_delimited_through_libvirt(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok)
    assert agent.sync(31337) == 31337
    assert agent.sync_delimited(4242) == 4242  # emulated: 0xFF would break libvirt's channel
    agent.ping()


def test_agent_errors_through_libvirt_keep_class_and_desc(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok)
    with pytest.raises(CommandNotFoundError) as unknown:
        agent.call("guest-no-such-command")
    assert unknown.value.error_class == "CommandNotFound"
    assert "has not been found" in unknown.value.desc
    assert agent.info().version in str(unknown.value)
    with pytest.raises(GuestAgentError) as failed:
        agent.file_open("/nonexistent/qga")
    assert "/nonexistent/qga" in str(failed.value)
    assert f"'{lab.ok}'" in str(failed.value)


def test_large_request_is_refused_before_it_breaks_the_channel(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok)
    handle = agent.file_open("/tmp/qga-big", "wb")
    try:
        with pytest.raises(RequestTooLargeError, match="65536"):
            agent.file_write(handle, b"x" * (256 << 10))
    finally:
        agent.file_close(handle)
    agent.ping()  # the channel is fine


def test_16_mib_round_trip_through_libvirt(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok, timeout=30)
    data = os.urandom(16 << 20)
    assert agent.write_file("/tmp/qga-16m.bin", data) == len(data)
    back = agent.read_file("/tmp/qga-16m.bin")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    agent.ping()
    assert agent.info().version
    agent.call("guest-exec", {"path": "/bin/rm", "arg": ["/tmp/qga-16m.bin"]})


def test_chunk_sizes_respect_libvirt_limits(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok)
    assert agent.write_chunk * 4 // 3 + 256 <= 64 * 1024
    assert agent.read_chunk <= 2 << 20 + (1 << 19)


def test_wait_for_agent_gives_up_on_an_agent_that_never_starts(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.never)
    with pytest.raises(AgentTimeoutError) as caught:
        agent.wait_for_agent(1.0)
    assert isinstance(caught.value.__cause__, AgentNotConnectedError)


def test_wait_for_agent_returns_at_once_when_it_answers(lab: Lab) -> None:
    GuestAgent.from_domain(lab.ok).wait_for_agent(5)


class FakeLibvirtError(libvirt.libvirtError):  # type: ignore[misc]
    def __init__(self, code: int, message: str) -> None:
        Exception.__init__(self, message)
        self.err = (code, libvirt.VIR_FROM_QEMU, message, 2, message, None, None, 0, 0)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (86, "Guest agent is not responding: QEMU guest agent is not connected", "NotConnected"),
        (
            86,
            "Guest agent is not responding: QEMU guest agent is not available due to an error",
            "Unresponsive",
        ),
        (86, "Guest agent is not responding: Guest agent not available for now", "Unresponsive"),
        (112, "Guest agent command timed out", "Unresponsive"),
        (
            86,
            "Guest agent is not responding: Guest agent disappeared while executing command",
            "ConnectionLost",
        ),
        (74, "argument unsupported: QEMU guest agent is not configured", "NotConfigured"),
        (55, "Requested operation is not valid: domain is not running", "DomainNotRunning"),
        (42, "Domain not found", "DomainNotFound"),
        (7, "Unable to encode message payload", "ReplyTooLarge"),
        (1, "internal error: something else", "LibvirtError"),
    ],
)
def test_libvirt_error_mapping(lab: Lab, code: int, message: str, expected: str) -> None:
    transport = LibvirtTransport(lab.domain(lab.ok))
    error = transport.map_error(FakeLibvirtError(code, message), command="guest-ping")
    assert expected in type(error).__name__
    assert f"'{lab.ok}'" in str(error)


def test_every_backend_is_registered_once() -> None:
    # The Backend type, the openers and what the CLI offers (--backend, completion) agree.
    backends = domain_transports.BACKENDS
    assert backends[0] == "auto"
    assert set(backends[1:]) == set(domain_transports._OPENERS)
    assert len(set(backends)) == len(backends)


def test_agent_channel_from_xml_unit() -> None:
    xml = """<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><devices/>
      <qemu:commandline>
        <qemu:arg value='-chardev'/><qemu:arg value='socket,path=/run/a,,b.sock,server=on,id=c0'/>
        <qemu:arg value='-device'/>
        <qemu:arg value='virtserialport,chardev=c0,name=org.qemu.guest_agent.0'/>
      </qemu:commandline></domain>"""
    channel = agent_channel_from_xml(xml)
    assert channel is not None
    assert channel.socket_path == "/run/a,b.sock"
    assert not channel.held_by_libvirt
    assert agent_channel_from_xml("<domain><devices/></domain>") is None


def test_libvirt_errors_are_not_printed_once_a_program_asks(lab: Lab, capfd: Any) -> None:
    """qga and qga-mcp ask; a library user's process keeps libvirt's own handler
    (tests/test_libvirt_handler.py)."""
    quiet_libvirt_errors()  # libvirt is loaded already: effective at once
    with pytest.raises(DomainNotFoundError):
        GuestAgent.from_domain("qga-no-such-domain-2")
    assert capfd.readouterr().err == ""


def test_info_is_typed_through_libvirt(lab: Lab) -> None:
    info = GuestAgent.from_domain(lab.ok).info()
    assert isinstance(info, AgentInfo)
    assert any(c.name == "guest-exec" and c.enabled for c in info.supported_commands)


EVENT_SCRIPT = """
import sys, time
from qga_libvirt import GuestAgent
from qga_libvirt.discovery import start_event_loop
start_event_loop()
agent = GuestAgent.from_domain(sys.argv[1])
with agent.transport.agent_connected_events() as event:
    assert event is not None, "no event delivery with the loop running"
    agent.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", "sleep 0.2; killall qemu-ga"]})
    time.sleep(1)
    event.clear()
    woke = event.wait(60)  # init respawns the agent: libvirt reports it connected
agent.wait_for_agent(60)
print("woke" if woke else "no event")
"""


def test_wait_for_agent_wakes_on_the_lifecycle_event(lab: Lab) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EVENT_SCRIPT, lab.ok], capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "woke"
    GuestAgent.from_domain(lab.ok).wait_for_agent(60)


def test_no_event_loop_means_polling(lab: Lab) -> None:
    transport = GuestAgent.from_domain(lab.ok).transport
    assert isinstance(transport, LibvirtTransport)
    with transport.agent_connected_events() as event:
        assert event is None  # this process runs no libvirt event loop

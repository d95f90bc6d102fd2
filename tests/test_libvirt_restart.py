"""libvirt survives what the first reliability run did not cover (issue 10): libvirtd
restarting under running calls, libvirtd down, an agent that hangs (libvirt's own sync
bound), a paused domain.

libvirtd restarts are played by a TCP forwarder in front of the shared daemon
(tests/daemonproxy.py): to a client, a restart is its connection closing, connections
refused for a while, then a daemon that answers. The real daemon, and the connection the
other tests share, are never touched.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import libvirt_qemu
import pytest

from qga_libvirt import (
    AgentTimeoutError,
    ConnectionLostError,
    DomainNotRunningError,
    GuestAgent,
    InvalidArgumentError,
    LibvirtConnectionError,
    ProtocolError,
    fleet_ping,
    list_domains,
)
from qga_libvirt.transports.base import Request
from qga_libvirt.transports.libvirt import LibvirtTransport, repeatable
from scripts import tinyguest

from .daemonproxy import DaemonProxy
from .lab import Lab

pytestmark = pytest.mark.vm


@pytest.fixture
def proxy() -> Iterator[DaemonProxy]:
    with DaemonProxy() as running:
        yield running


def hang_agent(agent: GuestAgent, name: str, seconds: float) -> None:
    """Stop the guest's qemu-ga for ``seconds``: a child it runs stops it, says so on the
    serial console (the agent cannot), then resumes it. Returns once it is stopped."""
    token = f"qga-stopped-{time.monotonic_ns()}"
    script = f"kill -STOP $PPID; echo {token} >/dev/console; sleep {seconds}; kill -CONT $PPID"
    agent.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", script]}, timeout=30)
    console = tinyguest.console_log_path(name)
    deadline = time.monotonic() + 30
    while token not in console.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the agent was not stopped"
        time.sleep(0.1)


def test_the_retry_rule_follows_the_declarations() -> None:
    assert repeatable(Request("guest-ping"))
    assert repeatable(Request("guest-get-osinfo"))
    assert repeatable(Request("guest-ssh-get-authorized-keys", {"username": "root"}))
    assert not repeatable(Request("guest-exec", {"path": "/bin/true"}))
    assert not repeatable(Request("guest-file-write", {"handle": 1, "buf-b64": ""}))
    assert not repeatable(Request("guest-file-read", {"handle": 1000}))  # the next chunk
    assert not repeatable(Request("guest-exec-status", {"pid": 7}))  # forgotten once told
    assert not repeatable(Request("guest-shutdown", None, False))
    assert not repeatable(Request("guest-not-declared"))


def test_libvirtd_restarting_between_calls_is_survived(lab: Lab, proxy: DaemonProxy) -> None:
    agent = GuestAgent.from_domain(lab.ok, proxy.uri, timeout=30)
    assert agent.ping() is None
    proxy.restart()
    assert agent.ping() is None  # repeatable: reopened and sent again
    assert agent.get_host_name() == lab.ok
    proxy.restart()
    # Not repeatable: the connection is probed first, so the dead one is found before
    # anything is sent, and the command runs exactly once.
    pid = agent.call("guest-exec", {"path": "/bin/true"})["pid"]
    assert agent.collect(pid).exitcode == 0
    proxy.restart()
    assert agent.transport.domain.UUIDString() == lab.domain(lab.ok).UUIDString()  # type: ignore[attr-defined]
    assert agent.ping() is None


def test_while_libvirtd_is_down_calls_fail_fast_typed_and_name_the_uri(
    lab: Lab, proxy: DaemonProxy
) -> None:
    agent = GuestAgent.from_domain(lab.ok, proxy.uri)
    agent.ping()
    proxy.down()
    try:
        for command in ("guest-ping", "guest-exec"):
            started = time.monotonic()
            args = {"path": "/bin/true"} if command == "guest-exec" else None
            with pytest.raises(LibvirtConnectionError) as caught:
                agent.call(command, args, timeout=1)
            assert time.monotonic() - started < 4
            assert caught.value.is_unreachable
            assert proxy.uri in str(caught.value)
            assert "libvirtd is not answering" in str(caught.value)
            assert "not sent" in str(caught.value)
    finally:
        proxy.up()
    assert agent.ping() is None


def test_libvirtd_restarting_mid_call(lab: Lab, proxy: DaemonProxy) -> None:
    """A repeatable command is sent again; one that may have run is reported as such."""
    agent = GuestAgent.from_domain(lab.ok, proxy.uri, timeout=40)
    direct = GuestAgent.from_domain(lab.ok, lab.conn, timeout=30)
    hang_agent(direct, lab.ok, 6)
    threading.Timer(1.0, proxy.restart).start()
    started = time.monotonic()
    assert agent.get_osinfo().pretty_name  # answered once the agent resumed
    assert time.monotonic() - started > 1.0  # it did span the restart
    direct.wait_for_agent(60)

    hang_agent(direct, lab.ok, 6)
    threading.Timer(1.0, proxy.restart).start()
    marker = f"/tmp/issue10-{time.monotonic_ns()}"
    with pytest.raises(ConnectionLostError) as caught:
        agent.call("guest-exec", {"path": "/bin/touch", "arg": [marker]})
    assert "may or may not have run" in str(caught.value)
    assert proxy.uri in str(caught.value)
    direct.wait_for_agent(60)
    assert agent.ping() is None
    direct.run(["/bin/rm", "-f", marker])


def test_lookups_listings_fleets_recover_after_a_restart(lab: Lab, proxy: DaemonProxy) -> None:
    """What the MCP server and `qga fleet` do per call: look the domain up on the shared
    connection for the URI (which a restart killed), then talk to it."""
    assert [r.ok for r in fleet_ping([lab.ok], uri=proxy.uri)] == [True]
    assert lab.ok in [d.name for d in list_domains(proxy.uri)]
    proxy.restart()
    assert lab.ok in [d.name for d in list_domains(proxy.uri)]
    proxy.restart()
    assert [r.ok for r in fleet_ping([lab.ok], uri=proxy.uri)] == [True]
    proxy.restart()
    assert GuestAgent.from_domain(lab.ok, proxy.uri).ping() is None


def test_the_mcp_server_recovers_after_a_restart(lab: Lab, proxy: DaemonProxy) -> None:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from .test_mcp_server import structured as data
    from .test_mcp_vm import QGA_MCP

    async def session() -> None:
        params = StdioServerParameters(command=QGA_MCP, args=["--connect", proxy.uri])
        async with Client(stdio_client(params)) as client:
            first = data(await client.call_tool("get_osinfo", {"domain": lab.ok}))
            proxy.restart()
            again = data(await client.call_tool("get_osinfo", {"domain": lab.ok}))
            assert again == first
            proxy.restart()
            listed = data(await client.call_tool("list_domains", {}))
            assert lab.ok in json.dumps(listed)

    anyio.run(session)


def test_a_hung_agent_says_libvirts_own_sync_bound(lab: Lab) -> None:
    """libvirt waits for its own guest-sync up to 5 s whatever the timeout asked: the
    error says so instead of "no answer within 12 s ... retry with a longer timeout"."""
    agent = GuestAgent.from_domain(lab.ok, lab.conn)
    hang_agent(agent, lab.ok, 14)
    try:
        with pytest.raises(AgentTimeoutError):
            agent.call("guest-ping", timeout=1)  # times out; libvirt resyncs next time
        started = time.monotonic()
        with pytest.raises(AgentTimeoutError) as caught:
            agent.call("guest-ping", timeout=12)
        waited = time.monotonic() - started
        assert waited < 11
        assert "libvirt's own guest-sync" in str(caught.value)
        assert "at most 5 s" in str(caught.value)
        assert "longer timeout cannot help" in str(caught.value)
        assert caught.value.is_unreachable
    finally:
        agent.wait_for_agent(60)


def test_a_paused_domain_says_resume(lab: Lab) -> None:
    dom = lab.domain(lab.ok)
    agent = GuestAgent.from_domain(lab.ok, lab.conn)
    dom.suspend()
    try:
        with pytest.raises(DomainNotRunningError) as caught:
            agent.ping()
        assert f"virsh resume {lab.ok}" in str(caught.value)
        assert "virsh start" not in str(caught.value)
        with pytest.raises(DomainNotRunningError) as opening:
            GuestAgent.from_domain(lab.ok, lab.conn)
        assert f"virsh resume {lab.ok}" in str(opening.value)
    finally:
        dom.resume()
    agent.wait_for_agent(30)


def test_nested_reply_through_libvirt_is_a_protocol_error(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = LibvirtTransport(lab.domain(lab.ok))

    def deep(_dom: Any, _text: str, _timeout: int, _flags: int) -> str:
        return '{"return": ' + "[" * 100_000 + "]" * 100_000 + "}"

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", deep)
    with pytest.raises(ProtocolError) as caught:
        transport.execute(Request("guest-get-osinfo"), 5)
    assert "nested too deeply" in str(caught.value)
    assert caught.value.target == f"domain '{lab.ok}'"


def test_unparseable_arguments_are_refused_through_libvirt(lab: Lab) -> None:
    agent = GuestAgent.from_domain(lab.ok, lab.conn)
    started = time.monotonic()
    with pytest.raises(InvalidArgumentError) as caught:
        agent.call("guest-file-open", {"path": "/tmp/\udcff"}, timeout=5)
    assert time.monotonic() - started < 1
    assert caught.value.target == f"domain '{lab.ok}'"
    assert agent.ping() is None

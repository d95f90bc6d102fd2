"""AsyncGuestAgent against the real qemu-ga (7.2 and 10.0) and a tiny guest via libvirt.

Each test runs its own event loop (``asyncio.run``); a stopped agent (SIGSTOP) stands
for a slow or hung one, a restarted one for a guest reboot.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from qga_libvirt import (
    AgentTimeoutError,
    AgentUnreachableError,
    AsyncGuestAgent,
    CommandDisabledError,
    CommandNotFoundError,
    GuestAgent,
)
from qga_libvirt.models import OsInfo
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.async_socket import AsyncSocketTransport
from qga_libvirt.transports.threaded import ThreadedTransport

from .lab import LOCAL_URI, Lab

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


@contextlib.contextmanager
def stopped(host: HostAgent) -> Iterator[None]:
    """The agent process stopped (SIGSTOP) for the block: calls get no reply."""
    assert host.process is not None
    host.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        host.process.send_signal(signal.SIGCONT)


def test_typed_commands_match_the_blocking_client(host_agent: HostAgent) -> None:
    async def main() -> tuple[Any, ...]:
        async with AsyncGuestAgent.from_socket(host_agent.socket) as agent:
            await agent.ping()
            info = await agent.info()
            osinfo = await agent.get_osinfo()
            name = await agent.get_host_name()
            raw = await agent.call("guest-get-host-name")
            supported = await agent.supports("get_osinfo")
            return info.version, osinfo, name, raw, supported

    version, osinfo, name, raw, supported = run(main)
    with GuestAgent.from_socket(host_agent.socket) as blocking:
        assert version == blocking.info().version
        assert osinfo == blocking.get_osinfo()
        assert name == blocking.get_host_name()
    assert isinstance(osinfo, OsInfo)
    assert osinfo.kernel_release
    assert raw == {"host-name": name}
    assert supported is True


def test_refusals_are_the_same_typed_errors_as_the_blocking_client(host_agent: HostAgent) -> None:
    async def main() -> tuple[BaseException, BaseException]:
        async with AsyncGuestAgent.from_socket(host_agent.socket) as agent:
            with pytest.raises(CommandNotFoundError) as unknown:
                await agent.call("guest-get-hostname")  # a typo of guest-get-host-name
            with pytest.raises(CommandDisabledError) as disabled:
                await agent.call("guest-shutdown")  # blocked by the test agent
            return unknown.value, disabled.value

    unknown, disabled = run(main)
    with GuestAgent.from_socket(host_agent.socket) as blocking:
        with pytest.raises(CommandNotFoundError) as sync_unknown:
            blocking.call("guest-get-hostname")
        with pytest.raises(CommandDisabledError) as sync_disabled:
            blocking.call("guest-shutdown")
    assert str(unknown) == str(sync_unknown.value)
    assert "guest-get-host-name" in str(unknown)  # the extra round trips ran, awaited
    assert str(disabled) == str(sync_disabled.value)


def test_concurrent_calls_share_one_connection_in_turn(host_agent: HostAgent) -> None:
    async def main() -> list[str]:
        async with AsyncGuestAgent.from_socket(host_agent.socket) as agent:
            return await asyncio.gather(*(agent.get_host_name() for _ in range(50)))

    names = run(main)
    assert len(names) == 50
    assert len(set(names)) == 1


def test_a_hung_agent_does_not_block_the_loop_and_times_out(host_agent: HostAgent) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        async with AsyncGuestAgent.from_socket(host_agent.socket, timeout=0.5) as agent:
            await agent.ping()
            task = asyncio.create_task(ticker())
            with stopped(host_agent), pytest.raises(AgentTimeoutError, match="no reply to"):
                await agent.get_host_name()
            task.cancel()
            assert ticks >= 10  # the loop ran while the call waited
            assert await agent.get_host_name()  # resynced after the timeout

    run(main)


def test_cancelling_a_call_mid_reply_leaves_the_agent_usable(host_agent: HostAgent) -> None:
    async def main() -> None:
        async with AsyncGuestAgent.from_socket(host_agent.socket, timeout=30) as agent:
            await agent.ping()
            with stopped(host_agent):
                task = asyncio.create_task(agent.get_osinfo())
                await asyncio.sleep(0.2)
                assert not task.done()
                task.cancel()
                started = time.monotonic()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert time.monotonic() - started < 1.0
                assert not agent.transport.connected  # type: ignore[attr-defined]
            # The reply to the cancelled call may still come: the resync skips it.
            assert (await agent.get_osinfo()).kernel_release
            assert await agent.call("guest-ping") == {}

    run(main)


def test_asyncio_timeout_cancels_like_a_task_cancel(host_agent: HostAgent) -> None:
    async def main() -> None:
        async with AsyncGuestAgent.from_socket(host_agent.socket, timeout=30) as agent:
            with stopped(host_agent), pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await agent.get_host_name()
            assert await agent.get_host_name()

    run(main)


def test_agent_restart_between_calls_reconnects(host_agent: HostAgent) -> None:
    async def main() -> None:
        async with AsyncGuestAgent.from_socket(host_agent.socket, idle_timeout=None) as agent:
            await agent.ping()
            await asyncio.to_thread(host_agent.restart)
            await agent.ping()  # the dead connection is found before the request is sent

    run(main)


def test_idle_connection_is_given_back_by_a_timer(host_agent: HostAgent) -> None:
    async def main() -> None:
        transport = AsyncSocketTransport(host_agent.socket, idle_timeout=0.2)
        async with AsyncGuestAgent(transport) as agent:
            await agent.ping()
            assert transport.connected
            await asyncio.sleep(0.6)
            assert not transport.connected
            # meanwhile another client can use the chardev-like socket, then us again
            with GuestAgent.from_socket(host_agent.socket, idle_timeout=0) as other:
                other.ping()
            await agent.ping()

    run(main)


def test_missing_socket_is_unreachable_and_wait_for_agent_waits(tmp_path: Path) -> None:
    host = HostAgent(tmp_path / "late")

    async def main() -> None:
        agent = AsyncGuestAgent.from_socket(host.socket, timeout=1)
        with pytest.raises(AgentUnreachableError, match="does not exist"):
            await agent.ping()
        with pytest.raises(AgentTimeoutError, match=r"did not answer within 0\.3 s"):
            await agent.wait_for_agent(0.3)
        threading.Timer(0.3, host.start).start()
        await agent.wait_for_agent(10)
        await agent.ping()
        await agent.aclose()

    try:
        run(main)
    finally:
        host.stop()


def test_closed_agent_says_so(host_agent: HostAgent) -> None:
    async def main() -> None:
        agent = AsyncGuestAgent.from_socket(host_agent.socket)
        await agent.ping()
        await agent.aclose()
        with pytest.raises(AgentUnreachableError, match="was closed"):
            await agent.ping()

    run(main)


# --- libvirt ------------------------------------------------------------------------------


@pytest.mark.vm
def test_libvirt_domain_through_threads(lab: Lab) -> None:
    async def main() -> None:
        agents = [await AsyncGuestAgent.from_domain(name, LOCAL_URI) for name in (lab.ok, lab.ok10)]
        assert all(isinstance(a.transport, ThreadedTransport) for a in agents)
        infos = await asyncio.gather(*(a.get_osinfo() for a in agents for _ in range(3)))
        assert all(info.kernel_release for info in infos)
        with GuestAgent.from_domain(lab.ok, LOCAL_URI) as blocking:
            assert (await agents[0].get_host_name()) == blocking.get_host_name()
        for agent in agents:
            await agent.aclose()

    run(main)


@pytest.mark.vm
def test_libvirt_socket_domain_is_native(lab: Lab) -> None:
    async def main() -> None:
        async with await AsyncGuestAgent.from_domain(lab.sock, LOCAL_URI) as agent:
            assert isinstance(agent.transport, AsyncSocketTransport)
            assert (await agent.get_osinfo()).kernel_release

    run(main)

"""AsyncGuestAgent: the typed client for asyncio, on the same core as GuestAgent.

Every typed command of :class:`~qga_libvirt.commands.Commands` is a coroutine method
here (``await agent.get_osinfo()``), from the same declarations; calls, typed errors,
capabilities and the wait for an agent are the programs of
:class:`~qga_libvirt.core.AgentCore`, driven with awaits (:mod:`qga_libvirt.steps`).
Nothing of a command is written twice.

Transports: a unix socket natively on the event loop
(:class:`~qga_libvirt.transports.async_socket.AsyncSocketTransport`), libvirt through a
bounded pool of threads (:class:`~qga_libvirt.transports.threaded.ThreadedTransport`,
since ``qemuAgentCommand`` blocks).

Cancelling a call (``task.cancel()``, ``asyncio.timeout``) raises ``CancelledError`` at
once. On a socket the conversation is abandoned and the next call resyncs; through
libvirt the request already handed over runs to its end in its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from . import wire
from .commands import Arguments, Command, Commands
from .core import DEFAULT_TIMEOUT, AgentCore, trace_reply, trace_request
from .protocol import Reply
from .steps import Program, drive_async
from .transports.async_socket import AsyncSocketTransport
from .transports.base import Request, features_of
from .transports.socket import DEFAULT_IDLE_TIMEOUT, SocketTransport
from .transports.threaded import ThreadedTransport

if TYPE_CHECKING:
    from .models import AgentInfo
    from .transports.domain import Backend

__all__ = ["AsyncGuestAgent", "AsyncTransport"]

T = TypeVar("T")


class AsyncTransport(Protocol):
    """What :class:`AsyncGuestAgent` needs of a transport: the blocking contract
    (:class:`~qga_libvirt.transports.base.Transport`) with awaitable calls."""

    @property
    def target(self) -> str: ...

    @property
    def max_request_bytes(self) -> int | None: ...

    @property
    def max_reply_bytes(self) -> int | None: ...

    async def execute(self, request: Request, timeout: float) -> Reply: ...

    async def aclose(self) -> None: ...


class AsyncGuestAgent(AgentCore, Commands):
    """A QEMU guest agent, reached from an asyncio event loop.

    Every QGA command is a coroutine method (see
    :class:`~qga_libvirt.commands.Commands`); :meth:`call` is the raw escape hatch. Use
    as ``async with``, or await :meth:`aclose`. The errors are those of
    :class:`~qga_libvirt.GuestAgent`.

    Args:
        transport: how to reach the agent (:class:`AsyncSocketTransport`,
            :class:`ThreadedTransport` around any blocking transport).
        timeout: default seconds to wait for each reply.
    """

    transport: AsyncTransport

    def __init__(self, transport: AsyncTransport, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(transport, timeout=timeout)

    @classmethod
    def from_socket(
        cls,
        path: str | os.PathLike[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> Self:
        """An agent on a unix-socket chardev; connects on the first call."""
        return cls(AsyncSocketTransport(path, idle_timeout=idle_timeout), timeout=timeout)

    @classmethod
    async def from_domain(
        cls,
        domain: str | int | Any,
        uri: str | Any | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        backend: Backend = "auto",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> Self:
        """The agent of a libvirt domain, as :meth:`GuestAgent.from_domain
        <qga_libvirt.GuestAgent.from_domain>` (same arguments, same errors); the lookup
        runs in a worker thread."""
        from .transports.domain import open_domain_transport

        blocking = await asyncio.to_thread(
            open_domain_transport, domain, uri, backend=backend, idle_timeout=idle_timeout
        )
        transport: AsyncTransport
        if isinstance(blocking, SocketTransport) and blocking.path is not None:
            transport = AsyncSocketTransport(
                blocking.path,
                idle_timeout=idle_timeout,
                target=blocking.target,
                max_reply_line=blocking.max_reply_line,
            )
        else:
            transport = ThreadedTransport(blocking)
        return cls(transport, timeout=timeout)

    # --- calling ----------------------------------------------------------------------

    async def call(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run any command by wire name; the reply's "return" value as sent (see
        :meth:`GuestAgent.call <qga_libvirt.GuestAgent.call>`)."""
        return await self._drive(self._call_steps(command, arguments, timeout))

    # Commands declares the blocking _invoke; the typed methods of this class return
    # awaitables (Command.__get__ tells them apart by this signature).
    async def _invoke(  # type: ignore[override]
        self, command: Command[Any, T], arguments: Arguments
    ) -> T:
        return await self._drive(self._invoke_steps(command, arguments))

    async def _drive(self, program: Program[T]) -> T:
        return await drive_async(program, self._execute)

    async def _execute(self, request: Request, timeout: float) -> Reply:
        if not wire.log.isEnabledFor(logging.DEBUG):
            return await self.transport.execute(request, timeout)
        start = trace_request(self.target, request)
        try:
            reply = await self.transport.execute(request, timeout)
        except BaseException as exc:
            trace_reply(self.target, request, start, failure=exc)
            raise
        trace_reply(self.target, request, start, reply=reply)
        return reply

    async def wait_for_agent(self, timeout: float = 60.0) -> None:
        """Wait until the agent answers a ping (see :meth:`GuestAgent.wait_for_agent
        <qga_libvirt.GuestAgent.wait_for_agent>`)."""
        events = features_of(self.transport).agent_events
        with (
            events.agent_connected_events() if events is not None else contextlib.nullcontext()
        ) as woken:
            await self._drive(self._wait_for_agent_steps(timeout, woken))

    # --- capabilities -----------------------------------------------------------------

    async def capabilities(self, *, refresh: bool = False) -> AgentInfo:
        """The agent's version and commands, asked once and then cached."""
        return await self._drive(self._capabilities_steps(refresh))

    async def supports(self, command: str | Command[Any, Any]) -> bool:
        """Whether the agent knows ``command`` and has it enabled."""
        return await self._drive(self._supports_steps(command))

    # --- lifetime ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection. A closed agent cannot be used again."""
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

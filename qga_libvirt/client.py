"""GuestAgent: the typed client, over any transport."""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from .commands import Arguments, Command, Commands, by_wire_name
from .errors import AgentCommandError, agent_error
from .models import AgentInfo
from .protocol import Reply
from .transports.base import Request, Transport
from .transports.socket import DEFAULT_IDLE_TIMEOUT, SocketTransport

__all__ = ["DEFAULT_TIMEOUT", "GuestAgent"]

DEFAULT_TIMEOUT = 5.0


class _Shared:
    """State shared by an agent and its :meth:`GuestAgent.with_timeout` views."""

    __slots__ = ("info",)

    def __init__(self) -> None:
        self.info: AgentInfo | None = None


class GuestAgent(Commands):
    """A QEMU guest agent, reached through a transport.

    Every QGA command is a typed method (see :class:`~qga_libvirt.commands.Commands`);
    :meth:`call` is the raw escape hatch. Use as a context manager, or call :meth:`close`.

    Args:
        transport: how to reach the agent (:class:`SocketTransport`, libvirt, a fake).
        timeout: default seconds to wait for each reply; :meth:`with_timeout` gives a view
            with another default, ``call(..., timeout=)`` overrides it once.
    """

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout
        self._shared = _Shared()

    @classmethod
    def from_socket(
        cls,
        path: str | os.PathLike[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> Self:
        """An agent on a unix-socket chardev (or a qemu-ga in ``unix-listen`` mode).

        Connects lazily, on the first call. ``idle_timeout`` is the sharing policy: the
        connection is given back after that many idle seconds (see
        :mod:`qga_libvirt.transports.socket`).
        """
        return cls(SocketTransport(path, idle_timeout=idle_timeout), timeout=timeout)

    @classmethod
    def from_fd(cls, fd: int | socket.socket, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Wrap an already connected stream socket (its fd is taken over and closed by us)."""
        sock = fd if isinstance(fd, socket.socket) else socket.socket(fileno=fd)
        return cls(SocketTransport(sock=sock, idle_timeout=None), timeout=timeout)

    @property
    def target(self) -> str:
        """What this agent is reached through, e.g. ``socket /run/qga.sock``."""
        return self.transport.target

    def with_timeout(self, timeout: float) -> Self:
        """A view of this agent whose calls wait up to ``timeout`` seconds.

        ``agent.with_timeout(60).fstrim()``: same connection, same cached info.
        """
        view = copy.copy(self)
        view.timeout = timeout
        return view

    def __repr__(self) -> str:
        return f"<GuestAgent {self.target}>"

    # --- calling ----------------------------------------------------------------------

    def call(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run any command by wire name and return the reply's "return" value as sent.

        Commands that send no reply on success (guest-shutdown, guest-suspend-*) return
        None once the agent accepted them.

        Raises:
            AgentCommandError: the agent answered with an error (typed subclasses for
                disabled and unknown commands).
            GuestAgentError: the agent could not be reached, timed out, or the
                conversation broke.
        """
        declared = by_wire_name(command)
        replies = declared.facts.replies if declared is not None else True
        request = Request(command, dict(arguments) if arguments else None, replies)
        reply = self.transport.execute(request, self.timeout if timeout is None else timeout)
        if reply.is_error:
            raise self._error(command, reply)
        return reply.value

    def _invoke(self, command: Command[Any, Any], arguments: Arguments) -> Any:
        request = Request(command.wire, arguments, command.facts.replies)
        reply = self.transport.execute(request, self.timeout)
        if reply.is_error:
            raise self._error(command.wire, reply)
        if command.reply is None:
            return None
        value = command.parse(reply.value)
        if isinstance(value, AgentInfo):
            self._shared.info = value
        return value

    def _error(self, command: str, reply: Reply) -> AgentCommandError:
        assert reply.error_class is not None
        assert reply.desc is not None
        version = None
        if reply.error_class == "CommandNotFound":
            version = self._version_for_message()
        return agent_error(
            reply.error_class,
            reply.desc,
            target=self.target,
            command=command,
            agent_version=version,
        )

    def _version_for_message(self) -> str | None:
        if self._shared.info is None:
            try:
                self.info()
            except Exception:  # the error being reported matters more than this detail
                return None
        return self._shared.info.version if self._shared.info else None

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. A closed agent cannot be used again."""
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

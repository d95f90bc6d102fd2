"""The contract every backend fulfils: one request in, one reply out.

A transport works at the level of requests and replies, not bytes: the raw-socket
backend frames JSON itself, libvirt does it inside the daemon, the fake answers from a
function. Agent errors come back as a :class:`~qga_libvirt.protocol.Reply` with an error
class (the client turns it into a typed error); everything else that goes wrong is raised
as a :class:`~qga_libvirt.errors.GuestAgentError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..protocol import Reply

__all__ = ["Reply", "Request", "Transport"]


class Request(NamedTuple):
    """One command for the agent, as it goes on the wire.

    ``replies`` is False for the commands that send no reply on success
    (guest-shutdown, guest-suspend-*).
    """

    command: str
    arguments: Mapping[str, Any] | None = None
    replies: bool = True

    def __repr__(self) -> str:
        # Arguments may carry a password or file contents: never in a repr or a log.
        keys = sorted(self.arguments) if self.arguments else []
        return f"Request({self.command!r}, arguments={keys}, replies={self.replies})"


@runtime_checkable
class Transport(Protocol):
    """A way to reach one guest agent."""

    @property
    def target(self) -> str:
        """What this transport talks to, for messages: ``socket /x``, ``domain 'web1'``."""
        ...

    @property
    def max_request_bytes(self) -> int | None:
        """The largest encoded request this backend carries safely (None: no limit)."""
        ...

    @property
    def max_reply_bytes(self) -> int | None:
        """The largest reply this backend carries safely (None: no limit)."""
        ...

    def execute(self, request: Request, timeout: float) -> Reply:
        """Run one request and return the agent's reply.

        Raises:
            GuestAgentError: the agent could not be reached, did not answer in time,
                or the conversation broke. Agent errors are returned, not raised.
        """
        ...

    def close(self) -> None:
        """Release the connection; a later :meth:`execute` may open a new one."""
        ...

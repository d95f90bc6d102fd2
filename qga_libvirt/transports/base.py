"""The contract every backend fulfils: one request in, one reply out.

A transport works at the level of requests and replies, not bytes: the raw-socket
backend frames JSON itself, libvirt does it inside the daemon, the fake answers from a
function. Agent errors come back as a :class:`~qga_libvirt.protocol.Reply` with an error
class (the client turns it into a typed error); everything else that goes wrong is raised
as a :class:`~qga_libvirt.errors.GuestAgentError`.

Beyond that contract a backend may declare :class:`Features`, which operations ask for
with :func:`features_of` (never by testing which class a transport is):

- ``power``: reboot and power off through the hypervisor's typed, agent-based calls, and
  whether the domain still runs (libvirt);
- ``agent_events``: an event set when the hypervisor reports the agent connected (libvirt,
  with an event loop running);
- ``identity``: how another process reaches the same agent: a socket path, or a libvirt
  URI and domain UUID (the thaw guard opens it).

A transport declares them in a ``features`` attribute; one without it has none.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..protocol import Reply

__all__ = [
    "AgentEvents",
    "DomainPower",
    "Features",
    "Identity",
    "Reply",
    "Request",
    "Transport",
    "features_of",
]


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


class DomainPower(Protocol):
    """Power through the hypervisor's own agent-based calls, where the raw guest-shutdown
    is unreliable (libvirt: ``virDomainReboot``/``virDomainShutdownFlags`` with the
    ``GUEST_AGENT`` flag, which return once QEMU saw the guest reset or power off)."""

    def reboot(self) -> None:
        """Reboot the guest through its agent.

        Raises:
            GuestAgentError: typed, as :meth:`Transport.execute` raises.
        """
        ...

    def poweroff(self) -> None:
        """Power the guest off through its agent.

        Raises:
            GuestAgentError: typed, as :meth:`Transport.execute` raises.
        """
        ...

    def running(self) -> bool:
        """Whether the domain still runs (False once it stopped or no longer exists)."""
        ...


class AgentEvents(Protocol):
    """The hypervisor's word that the agent connected (e.g. after a reboot)."""

    def agent_connected_events(self) -> AbstractContextManager[threading.Event | None]:
        """A context whose event is set whenever the agent connects; it yields None
        where no event can arrive (then poll)."""
        ...


@dataclass(frozen=True, slots=True)
class Identity:
    """How another process reaches the same agent: a unix socket, or libvirt."""

    socket: str | None = None
    uri: str | None = None
    domain_uuid: str | None = None


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport offers beyond :class:`Transport`; None where it does not."""

    power: DomainPower | None = None
    agent_events: AgentEvents | None = None
    identity: Identity | None = None


_NONE = Features()


def features_of(transport: object) -> Features:
    """The features ``transport`` (blocking or asyncio) declares (in a ``features``
    attribute; none without)."""
    features = getattr(transport, "features", None)
    return features if isinstance(features, Features) else _NONE

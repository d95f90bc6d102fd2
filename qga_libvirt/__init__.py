"""qga-libvirt: a typed QEMU Guest Agent client, over raw chardev sockets and libvirt.

Quick start::

    from qga_libvirt import GuestAgent

    with GuestAgent.from_socket("/run/qga.sock") as agent:
        agent.ping()
        print(agent.info().version)
"""

from .client import DEFAULT_TIMEOUT, GuestAgent
from .commands import Command, Commands
from .errors import (
    ERR_CANNOT_READ,
    ERR_CANNOT_WRITE,
    ERR_FROM_AGENT,
    ERR_NO_CONNECT,
    ERR_TIMED_OUT,
    AgentCommandError,
    AgentTimeoutError,
    AgentUnreachableError,
    CommandDisabledError,
    CommandNotFoundError,
    ConnectionLostError,
    GuestAgentError,
    GuestFrozenError,
    ProtocolError,
)
from .models import AgentInfo, CommandInfo, Model
from .transports import FakeTransport, Reply, Request, SocketTransport, Transport

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERR_CANNOT_READ",
    "ERR_CANNOT_WRITE",
    "ERR_FROM_AGENT",
    "ERR_NO_CONNECT",
    "ERR_TIMED_OUT",
    "AgentCommandError",
    "AgentInfo",
    "AgentTimeoutError",
    "AgentUnreachableError",
    "Command",
    "CommandDisabledError",
    "CommandInfo",
    "CommandNotFoundError",
    "Commands",
    "ConnectionLostError",
    "FakeTransport",
    "GuestAgent",
    "GuestAgentError",
    "GuestFrozenError",
    "Model",
    "ProtocolError",
    "Reply",
    "Request",
    "SocketTransport",
    "Transport",
]

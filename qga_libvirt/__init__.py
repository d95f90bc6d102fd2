"""qga-libvirt: a typed QEMU Guest Agent client, over raw chardev sockets and libvirt.

Quick start::

    from qga_libvirt import GuestAgent

    with GuestAgent.from_socket("/run/qga.sock") as agent:
        agent.ping()
        print(agent.info().version)

    agent = GuestAgent.from_domain("web1")          # a libvirt domain, by name/UUID/ID
    print(agent.get_osinfo().pretty_name)
"""

from .async_client import AsyncGuestAgent
from .client import DEFAULT_TIMEOUT, GuestAgent
from .commands import Arguments, Command, Commands, Facts, command
from .discovery import AgentChannel, DomainInfo, list_domains
from .errors import (
    ERR_CANNOT_READ,
    ERR_CANNOT_WRITE,
    ERR_FROM_AGENT,
    ERR_NO_CONNECT,
    ERR_TIMED_OUT,
    AgentCommandError,
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    AgentUnresponsiveError,
    CommandDisabledError,
    CommandFailedError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConnectionLostError,
    DomainNotFoundError,
    DomainNotRunningError,
    FreezeTimeoutError,
    GuestAgentError,
    GuestFrozenError,
    InvalidArgumentError,
    LibvirtConnectionError,
    LibvirtError,
    OutputLostError,
    ProtocolError,
    ReplyTooLargeError,
    RequestTooLargeError,
    ShutdownTimeoutError,
    ThawError,
    TransferError,
)
from .fleet import FleetResult, FleetTarget, fleet_call, fleet_ping
from .models import AgentInfo, CommandInfo, Model
from .operations.run import RunHandle, RunResult
from .transports import FakeTransport, Reply, Request, SocketTransport, Transport

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERR_CANNOT_READ",
    "ERR_CANNOT_WRITE",
    "ERR_FROM_AGENT",
    "ERR_NO_CONNECT",
    "ERR_TIMED_OUT",
    "AgentChannel",
    "AgentCommandError",
    "AgentInfo",
    "AgentNotConfiguredError",
    "AgentNotConnectedError",
    "AgentTimeoutError",
    "AgentUnreachableError",
    "AgentUnresponsiveError",
    "Arguments",
    "AsyncGuestAgent",
    "Command",
    "CommandDisabledError",
    "CommandFailedError",
    "CommandInfo",
    "CommandNotFoundError",
    "CommandTimeoutError",
    "Commands",
    "ConnectionLostError",
    "DomainInfo",
    "DomainNotFoundError",
    "DomainNotRunningError",
    "Facts",
    "FakeTransport",
    "FleetResult",
    "FleetTarget",
    "FreezeTimeoutError",
    "GuestAgent",
    "GuestAgentError",
    "GuestFrozenError",
    "InvalidArgumentError",
    "LibvirtConnectionError",
    "LibvirtError",
    "Model",
    "OutputLostError",
    "ProtocolError",
    "Reply",
    "ReplyTooLargeError",
    "Request",
    "RequestTooLargeError",
    "RunHandle",
    "RunResult",
    "ShutdownTimeoutError",
    "SocketTransport",
    "ThawError",
    "TransferError",
    "Transport",
    "command",
    "fleet_call",
    "fleet_ping",
    "list_domains",
]

"""qga-libvirt: a typed QEMU Guest Agent client, over raw chardev sockets and libvirt.

Quick start::

    from qga_libvirt import GuestAgent

    with GuestAgent.from_socket("/run/qga.sock") as agent:
        agent.ping()
        print(agent.info().version)

    agent = GuestAgent.from_domain("web1")          # a libvirt domain, by name/UUID/ID
    print(agent.get_osinfo().pretty_name)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
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
    from .models import AgentInfo, CommandInfo, Model, RunHandle, RunResult
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

# Every name is imported when first used (PEP 562), not with the package: importing
# everything would import pydantic, libvirt and lxml (~250 ms) for `qga --version` or a
# ping over a socket. The module that defines each name:
_WHERE: Final = {
    "DEFAULT_TIMEOUT": "client",
    "GuestAgent": "client",
    "AsyncGuestAgent": "async_client",
    "Arguments": "commands",
    "Command": "commands",
    "Commands": "commands",
    "Facts": "commands",
    "command": "commands",
    "AgentChannel": "discovery",
    "DomainInfo": "discovery",
    "list_domains": "discovery",
    "ERR_CANNOT_READ": "errors",
    "ERR_CANNOT_WRITE": "errors",
    "ERR_FROM_AGENT": "errors",
    "ERR_NO_CONNECT": "errors",
    "ERR_TIMED_OUT": "errors",
    "AgentCommandError": "errors",
    "AgentNotConfiguredError": "errors",
    "AgentNotConnectedError": "errors",
    "AgentTimeoutError": "errors",
    "AgentUnreachableError": "errors",
    "AgentUnresponsiveError": "errors",
    "CommandDisabledError": "errors",
    "CommandFailedError": "errors",
    "CommandNotFoundError": "errors",
    "CommandTimeoutError": "errors",
    "ConnectionLostError": "errors",
    "DomainNotFoundError": "errors",
    "DomainNotRunningError": "errors",
    "FreezeTimeoutError": "errors",
    "GuestAgentError": "errors",
    "GuestFrozenError": "errors",
    "InvalidArgumentError": "errors",
    "LibvirtConnectionError": "errors",
    "LibvirtError": "errors",
    "OutputLostError": "errors",
    "ProtocolError": "errors",
    "ReplyTooLargeError": "errors",
    "RequestTooLargeError": "errors",
    "ShutdownTimeoutError": "errors",
    "ThawError": "errors",
    "TransferError": "errors",
    "AgentInfo": "models",
    "CommandInfo": "models",
    "Model": "models",
    "RunHandle": "models",
    "RunResult": "models",
    "FleetResult": "fleet",
    "FleetTarget": "fleet",
    "fleet_call": "fleet",
    "fleet_ping": "fleet",
    "FakeTransport": "transports",
    "Reply": "transports",
    "Request": "transports",
    "SocketTransport": "transports",
    "Transport": "transports",
}


_SUBMODULES: Final = frozenset(
    {"client", "commands", "discovery", "enums", "errors", "models", "operations"}
    | {"protocol", "transports", "wire"}
)
"""The modules ``import qga_libvirt`` used to import, still reached as attributes."""


if not TYPE_CHECKING:  # for mypy, the names are the imports above: a typo stays an error

    def __getattr__(name: str) -> Any:
        if name in _SUBMODULES:  # qga_libvirt.models after a bare `import qga_libvirt`
            return importlib.import_module(f"{__name__}.{name}")
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})

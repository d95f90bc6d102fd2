"""The read-only inventory: the domains, the agent, its clock, waiting for it, and one tool
per declared command that takes no argument and only reads."""

from __future__ import annotations

import datetime
import inspect
import os
import time
from typing import Annotated, Any, ClassVar, Literal

from mcp.types import ToolAnnotations
from pydantic import (
    BaseModel,
    Field,
    create_model,
)

from qga_libvirt import GuestAgentError
from qga_libvirt.commands import Command, Commands, all_commands
from qga_libvirt.discovery import AgentChannel, open_connection
from qga_libvirt.discovery import list_domains as libvirt_domains

from ..policy import PolicyError
from ..runtime import Call
from .base import (
    CATALOGUE,
    DomainResult,
    Result,
    ToolSpec,
    checked,
    tool,
)

# --- inventory: the domains -----------------------------------------------------------


ChannelState = Literal["connected", "disconnected", "unknown", "none", "raw socket"]


class DomainEntry(BaseModel):
    """One domain (or socket agent) the server may touch."""

    domain: str = Field(description="what to pass as `domain` to the other tools")
    hypervisor: str | None = Field(
        default=None, description="its hypervisor; absent for a socket agent"
    )
    state: str = Field(
        description="running, shut off, paused, ...; 'socket' for an agent "
        "on a socket, 'socket missing' when that socket is not there"
    )
    agent_channel: ChannelState = Field(
        description="connected: an agent opened the channel in the guest; none: the domain "
        "has no agent channel, so agent tools cannot work on it"
    )


class HypervisorEntry(BaseModel):
    """One hypervisor and whether it could be reached."""

    name: str
    uri: str
    error: str | None = Field(default=None, description="why it could not be listed")


class DomainList(Result):
    """The domains the server may touch."""

    from_guest: ClassVar[bool] = False
    hypervisors: list[HypervisorEntry]
    domains: list[DomainEntry]

    def summary(self) -> str:
        running = sum(d.state == "running" for d in self.domains)
        return f"{len(self.domains)} domain(s), {running} running."


def _channel_state(channel: AgentChannel | None) -> ChannelState:
    if channel is None:
        return "none"
    if not channel.held_by_libvirt:
        return "raw socket"
    return channel.state or "unknown"


@tool(
    None,
    title="List domains",
    read_only=True,
    destructive=False,
    idempotent=True,
    takes_domain=False,
)
def list_domains(
    call: Call,
    hypervisor: Annotated[
        str | None, Field(description="only this hypervisor's domains (default: all)")
    ] = None,
) -> DomainList:
    """The VMs (domains) this server may touch: state and guest agent channel.

    Start here: pass an entry's `domain` to the other tools; only agent_channel
    "connected" or "raw socket" can answer them.
    """
    runtime = call.runtime
    names = [hypervisor] if hypervisor is not None else list(runtime.hypervisors)
    hypervisors, domains = [], []
    for name in names:
        uri = runtime.hypervisors.get(name)
        if uri is None:
            raise PolicyError(
                f"no hypervisor is named '{name}': this server has "
                f"{', '.join(runtime.hypervisors) or 'none'}"
            )
        try:
            infos = libvirt_domains(open_connection(uri))
        except GuestAgentError as exc:
            hypervisors.append(HypervisorEntry(name=name, uri=uri, error=str(exc)))
            continue
        hypervisors.append(HypervisorEntry(name=name, uri=uri))
        domains += [
            DomainEntry(
                domain=runtime.address(info.name, name),
                hypervisor=name,
                state=info.state,
                agent_channel=_channel_state(info.agent_channel),
            )
            for info in infos
            if call.policy.domain_allowed(info.name, name)
        ]
    for name, path in runtime.sockets.items() if hypervisor is None else ():
        if call.policy.domain_allowed(name):
            state = "socket" if os.path.exists(path) else "socket missing"
            domains.append(
                DomainEntry(domain=name, hypervisor=None, state=state, agent_channel="raw socket")
            )
    return DomainList(hypervisors=hypervisors, domains=domains)


# --- inventory: the agent -------------------------------------------------------------


class AgentSummary(DomainResult):
    """The guest agent's version and the commands it has enabled."""

    version: str
    enabled: list[str] = Field(description="wire names of the commands it runs")
    disabled: list[str] = Field(
        description="commands it knows but refuses (--block-rpcs, or while frozen)"
    )


@tool(None, title="Guest agent info", read_only=True, destructive=False, idempotent=True)
def agent_info(call: Call) -> AgentSummary:
    """The guest agent's version and which commands it has enabled.

    Use it when a tool says a command is disabled or unknown, or to see what an old
    agent can do.
    """
    info = call.agent.capabilities(refresh=True)
    commands = info.supported_commands
    return checked(
        call,
        AgentSummary(
            domain=call.domain,
            version=info.version,
            enabled=sorted(c.name for c in commands if c.enabled),
            disabled=sorted(c.name for c in commands if not c.enabled),
        ),
    )


class GuestTime(DomainResult):
    """The guest's clock."""

    ns: int = Field(description="nanoseconds since the epoch, as the guest reports")
    utc: str = Field(description="the same instant, ISO 8601 in UTC")
    skew_s: float = Field(
        description="guest clock minus this host's clock, in seconds (includes the call's "
        "latency); large values mean the guest clock is wrong"
    )


@tool(
    None,
    title="Guest clock",
    read_only=True,
    destructive=False,
    idempotent=True,
    description=f"{Commands.get_time.summary} Read-only; with its skew from the host's "
    "clock, to check the guest's time.",
)
def get_time(call: Call) -> GuestTime:
    ns = call.agent.get_time()
    when = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
    return GuestTime(domain=call.domain, ns=ns, utc=when.isoformat(), skew_s=ns / 1e9 - time.time())


class AgentReady(DomainResult):
    """The guest agent answers."""

    from_guest: ClassVar[bool] = False
    waited_s: float = Field(description="seconds it took")

    def summary(self) -> str:
        return f"the agent of {self.domain} answers (after {self.waited_s:.1f} s)."


@tool(
    None,
    title="Wait for the guest agent",
    read_only=True,
    destructive=False,
    idempotent=True,
    waits=True,
)
def wait_for_agent(
    call: Call,
    timeout_s: Annotated[float, Field(gt=0, description="seconds to wait at most")] = 60.0,
) -> AgentReady:
    """Wait until the guest's agent answers (after a boot, or "not connected")."""
    call.policy.check_wait(timeout_s)
    started = time.monotonic()
    call.agent.wait_for_agent(timeout=timeout_s)
    return AgentReady(domain=call.domain, waited_s=round(time.monotonic() - started, 2))


_HAND_WRITTEN = {"info", "get_time"}
_NAMES = {"get_host_name": "get_hostname"}


def _inventory_commands() -> list[Command[Any, Any]]:
    """The declared commands that take no argument and only read."""
    return [
        command
        for command in all_commands()
        if not command.facts.changes_guest
        and command.reply is not None
        and command.method not in _HAND_WRITTEN
        and not inspect.signature(command.build).parameters
    ]


def _derive(command: Command[Any, Any]) -> ToolSpec:
    name = _NAMES.get(command.method, command.method)
    output: type[DomainResult] = create_model(
        "".join(part.title() for part in name.split("_")) + "Result",
        __base__=DomainResult,
        __doc__=command.summary,
        result=(command.reply, Field(description=command.summary)),
    )

    def body(call: Call) -> Result:
        value = getattr(call.agent, command.method)()
        return checked(call, output.model_validate({"domain": call.domain, "result": value}))

    platforms = "" if command.facts.platforms == "all" else f"; {command.facts.platforms} guests"
    return ToolSpec(
        name=name,
        body=body,
        output=output,
        group=None,
        annotations=ToolAnnotations(
            title=command.summary.rstrip("."),
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        description=f"{command.summary} (agent {command.facts.since}+{platforms})",
    )


CATALOGUE.extend(_derive(command) for command in _inventory_commands())

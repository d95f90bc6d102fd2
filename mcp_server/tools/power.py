"""power: shut down or reboot the guest cleanly through its agent."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ..config import Group
from ..runtime import Call
from .base import (
    DomainResult,
    tool,
)

# --- power ----------------------------------------------------------------------------


class PowerRequested(DomainResult):
    """A power request the guest accepted."""

    from_guest: ClassVar[bool] = False
    action: Literal["powerdown", "halt", "reboot"]

    def summary(self) -> str:
        back = (
            "its agent answers again once it has booted (list_domains shows the channel)"
            if self.action == "reboot"
            else "it goes down now"
        )
        return f"{self.domain} accepted {self.action}: {back}."


@tool(
    Group.POWER,
    title="Shut the guest down",
    read_only=False,
    destructive=True,
    idempotent=True,
)
def shutdown(
    call: Call,
    mode: Annotated[
        Literal["powerdown", "halt"],
        Field(
            description="powerdown: the OS shuts down and the VM powers off; halt: the OS "
            "stops, the VM stays on"
        ),
    ] = "powerdown",
) -> PowerRequested:
    """Shut the guest's operating system down, cleanly, through its agent."""
    if mode == "halt":
        call.agent.halt()
    else:
        call.agent.poweroff()
    return PowerRequested(domain=call.domain, action=mode)


@tool(
    Group.POWER,
    title="Reboot the guest",
    read_only=False,
    destructive=True,
    idempotent=False,
)
def reboot(call: Call) -> PowerRequested:
    """Reboot the guest cleanly through its agent; its tools fail until it is back up."""
    call.agent.reboot()
    return PowerRequested(domain=call.domain, action="reboot")

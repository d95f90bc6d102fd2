"""raw: any guest agent command by its wire name."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    JsonValue,
)

from ..config import Group
from ..runtime import Call
from .base import (
    DomainResult,
    checked,
    tool,
)

# --- raw ------------------------------------------------------------------------------


class RawReply(DomainResult):
    """The agent's reply to a raw command, as sent."""

    command: str
    result: JsonValue = Field(
        default=None, description='the reply\'s "return" value (null for none)'
    )


@tool(
    Group.RAW,
    title="Any guest agent command",
    read_only=False,
    destructive=True,
    idempotent=False,
    open_world=True,
)
def agent_command(
    call: Call,
    command: Annotated[
        str,
        Field(pattern=r"^guest-[a-z0-9-]+$", description="the wire name, e.g. guest-get-host-name"),
    ],
    arguments: Annotated[
        dict[str, JsonValue] | None, Field(description="the command's arguments object")
    ] = None,
) -> RawReply:
    """Send any guest agent command by its wire name and return its raw reply.

    For what the other tools do not cover. Nothing is checked but the reply's size:
    prefer the typed tools when there is one.
    """
    value = call.agent.call(command, arguments)
    return checked(call, RawReply(domain=call.domain, command=command, result=value))

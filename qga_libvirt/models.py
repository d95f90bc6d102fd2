"""Typed replies. Field names are snake_case; the wire's kebab-case names are aliases.

Every model keeps the fields a newer agent adds that this version does not know:
they stay reachable in :attr:`Model.extras` (and ``model_extra``), never dropped, never
an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AgentInfo", "CommandInfo", "Model"]


def _wire_name(field: str) -> str:
    return field.replace("_", "-")


class Model(BaseModel):
    """Base of every reply model: frozen, wire aliases, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        alias_generator=_wire_name,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @property
    def extras(self) -> dict[str, Any]:
        """Fields the agent sent that this model does not declare (a newer agent's)."""
        return dict(self.model_extra or {})


class CommandInfo(Model):
    """One command the agent knows."""

    name: str
    enabled: bool
    success_response: bool


class AgentInfo(Model):
    """The agent's version and every command it knows (guest-info)."""

    version: str
    supported_commands: list[CommandInfo] = Field(alias="supported_commands")

    def command(self, name: str) -> CommandInfo | None:
        """The entry for a wire name, or None when this agent does not know it."""
        for info in self.supported_commands:
            if info.name == name:
                return info
        return None

"""freeze: filesystems frozen for a snapshot, thawed by the server at the latest."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from ..config import Group
from ..policy import PolicyError
from ..runtime import Call
from .base import (
    DomainResult,
    tool,
)

# --- freeze ---------------------------------------------------------------------------


class Frozen(DomainResult):
    """A freeze this server holds, and when it ends at the latest."""

    from_guest: ClassVar[bool] = False
    frozen: int = Field(description="how many filesystems are frozen")
    thaw_within_s: float = Field(description="the server thaws them by then at the latest")

    def summary(self) -> str:
        return (
            f"{self.frozen} filesystem(s) of {self.domain} frozen; writes in the guest block "
            f"until fsfreeze_thaw, or the forced thaw in {self.thaw_within_s:g} s."
        )


class Thawed(DomainResult):
    """The end of a freeze."""

    from_guest: ClassVar[bool] = False
    thawed: int | None = Field(default=None, description="filesystems thawed, when the agent says")

    def summary(self) -> str:
        return f"the filesystems of {self.domain} are thawed."


@tool(
    Group.FREEZE,
    title="Freeze guest filesystems",
    read_only=False,
    destructive=True,
    idempotent=False,
)
def fsfreeze_freeze(
    call: Call,
    mountpoints: Annotated[
        list[str] | None, Field(description="only these mount points (default: all)")
    ] = None,
    thaw_within_s: Annotated[
        float | None,
        Field(gt=0, description="thaw after this long at the latest (default: server's cap)"),
    ] = None,
) -> Frozen:
    """Freeze the guest's filesystems (sync, then block writes) for a consistent snapshot.

    Call fsfreeze_thaw as soon as the snapshot is taken: every writer in the guest
    hangs meanwhile. The server thaws by itself after thaw_within_s in any case.
    """
    cap = call.runtime.config.max_freeze_seconds
    if thaw_within_s is not None and thaw_within_s > cap:
        raise PolicyError(
            f"thaw_within_s={thaw_within_s:g} is over this server's cap of {cap:g} s "
            "(--max-freeze-seconds): pass at most that"
        )
    seconds = thaw_within_s or cap
    count = call.runtime.freeze(call.target, mountpoints, seconds)
    return Frozen(domain=call.domain, frozen=count, thaw_within_s=seconds)


@tool(
    Group.FREEZE,
    title="Thaw guest filesystems",
    read_only=False,
    destructive=False,
    idempotent=True,
)
def fsfreeze_thaw(call: Call) -> Thawed:
    """Thaw the guest's frozen filesystems; harmless when they are not frozen."""
    if call.runtime.thaw(call.target):
        return Thawed(domain=call.domain, thawed=None)
    return Thawed(domain=call.domain, thawed=call.agent.fsfreeze_thaw())

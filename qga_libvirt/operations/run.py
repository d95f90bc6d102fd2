"""Run a command in the guest and wait for it."""

from __future__ import annotations

from ..commands import Commands
from ..transports.base import Transport

__all__ = ["RunOps"]


class RunOps(Commands):
    """Run a command in the guest and wait for it.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    transport: Transport

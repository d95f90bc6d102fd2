"""Shut down, reboot and suspend the guest, and wait for the agent to go and come back."""

from __future__ import annotations

from ..commands import Commands
from ..transports.base import Transport

__all__ = ["PowerOps"]


class PowerOps(Commands):
    """Shut down, reboot and suspend the guest, and wait for the agent to go and come back.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    transport: Transport

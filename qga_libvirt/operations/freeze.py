"""Freeze the guest's filesystems for a snapshot, and always thaw them."""

from __future__ import annotations

from ..commands import Commands
from ..transports.base import Transport

__all__ = ["FreezeOps"]


class FreezeOps(Commands):
    """Freeze the guest's filesystems for a snapshot, and always thaw them.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    transport: Transport

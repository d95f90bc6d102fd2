"""Passwords and SSH authorized keys of guest users."""

from __future__ import annotations

from ..commands import Commands
from ..transports.base import Transport

__all__ = ["CredentialOps"]


class CredentialOps(Commands):
    """Passwords and SSH authorized keys of guest users.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    transport: Transport

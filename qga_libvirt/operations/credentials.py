"""Passwords and SSH authorized keys of guest users.

The commands themselves are declared in :class:`~qga_libvirt.commands.Commands`:
:meth:`~qga_libvirt.commands.Commands.set_user_password`,
:meth:`~qga_libvirt.commands.Commands.ssh_get_authorized_keys`,
:meth:`~qga_libvirt.commands.Commands.ssh_add_authorized_keys` and
:meth:`~qga_libvirt.commands.Commands.ssh_remove_authorized_keys`. This mixin adds what
they lack.

Secrets. A password travels only in the request's arguments, which no repr, log line or
error message of this package shows (:class:`~qga_libvirt.transports.base.Request`
hides them; the package logs nothing; errors quote the agent's reply, and qemu-ga's
replies to guest-set-user-password do not echo the password: "child process has failed
to set user password"). Through libvirt the request passes libvirtd, whose debug log,
when enabled, records agent commands as sent (the password base64-encoded).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import AgentBase

__all__ = ["CredentialOps"]


class CredentialOps(AgentBase):
    """Passwords and SSH authorized keys of guest users.

    Mixed into :class:`~qga_libvirt.GuestAgent`.
    """

    def ssh_replace_authorized_keys(self, username: str, keys: Sequence[str]) -> None:
        """Make ``keys`` the whole content of a user's authorized_keys (empty: no keys).

        One guest-ssh-add-authorized-keys with ``reset``: the agent rewrites the file at
        once (it writes a new file and renames it into place).

        Raises:
            AgentCommandError: no such user, or the guest could not write the file.
            GuestAgentError: as every call.
        """
        self.ssh_add_authorized_keys(username, keys, reset=True)

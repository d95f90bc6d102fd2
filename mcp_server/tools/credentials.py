"""credentials: passwords and SSH keys of guest users."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Annotated, ClassVar

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
)

from ..config import Group
from ..runtime import Call
from .base import (
    DomainResult,
    checked,
    tool,
)

# --- credentials ----------------------------------------------------------------------

Username = Annotated[str, Field(min_length=1, description="the guest user")]
SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def ssh_public_key(line: str) -> str:
    """``line`` if it is one OpenSSH public key: TYPE BASE64 [COMMENT], nothing before.

    Options (``command="..."``, ``from=``, ``environment=``...) would change what the key
    allows, so a line that does not start with a key type is refused.

    Raises:
        ValueError: what is wrong with the line.
    """
    words = line.split(None, 2)
    if not words or words[0] not in SSH_KEY_TYPES:
        raise ValueError(
            "a key line must start with its type ("
            + ", ".join(sorted(SSH_KEY_TYPES))
            + "); options such as command=... or from=... are not accepted"
        )
    if len(words) < 2:
        raise ValueError(f"the {words[0]} key has no base64 body")
    try:
        blob = base64.b64decode(words[1], validate=True)
    except binascii.Error:
        raise ValueError(f"the body of the {words[0]} key is not base64") from None
    kind = words[0].encode()
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4 : 4 + len(kind)] != kind:
        raise ValueError(f"the body of the key is not a {words[0]} key")
    if len(words) == 3 and not words[2].isprintable():
        raise ValueError("the key's comment has control characters")
    return line


SshKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=16384,
        description="one public key line: 'TYPE BASE64 [comment]', e.g. 'ssh-ed25519 AAAA... "
        "me@host'; no options",
    ),
    AfterValidator(ssh_public_key),
]


class PasswordSet(DomainResult):
    """A password was set (it is never echoed)."""

    from_guest: ClassVar[bool] = False
    username: str
    crypted: bool

    def summary(self) -> str:
        return f"the password of {self.username} on {self.domain} was set."


class AuthorizedKeys(DomainResult):
    """A user's authorized SSH keys."""

    username: str
    keys: list[str]


class KeysChanged(DomainResult):
    """Keys added to or removed from a user's authorized_keys."""

    from_guest: ClassVar[bool] = False
    username: str
    added: int = 0
    removed: int = 0

    def summary(self) -> str:
        return (
            f"authorized_keys of {self.username} on {self.domain}: {self.added} key(s) "
            f"added, {self.removed} removed."
        )


@tool(
    Group.CREDENTIALS,
    title="Set a guest user's password",
    read_only=False,
    destructive=True,
    idempotent=True,
)
def set_user_password(
    call: Call,
    username: Username,
    password: Annotated[SecretStr, Field(min_length=1, description="the new password")],
    crypted: Annotated[bool, Field(description="the password is already a crypt(3) hash")] = False,
) -> PasswordSet:
    """Set a guest user's password (replacing the old one). It is never logged or echoed."""
    call.agent.set_user_password(username, password.get_secret_value(), crypted)
    return PasswordSet(domain=call.domain, username=username, crypted=crypted)


@tool(
    Group.CREDENTIALS,
    title="List a user's SSH keys",
    read_only=True,
    destructive=False,
    idempotent=True,
)
def ssh_authorized_keys_get(call: Call, username: Username) -> AuthorizedKeys:
    """The public keys in a guest user's ~/.ssh/authorized_keys."""
    keys = call.agent.ssh_get_authorized_keys(username)
    return checked(call, AuthorizedKeys(domain=call.domain, username=username, keys=keys))


SshKeys = Annotated[list[SshKey], Field(min_length=1)]
keys_tool = functools.partial(
    tool, Group.CREDENTIALS, read_only=False, destructive=True, idempotent=True
)
"""Declares a tool that adds or removes keys: destructive (it changes who may log in)."""


@keys_tool(title="Add SSH keys")
def ssh_authorized_keys_add(call: Call, username: Username, keys: SshKeys) -> KeysChanged:
    """Add public keys to a guest user's authorized_keys (keys already there stay once)."""
    call.agent.ssh_add_authorized_keys(username, keys)
    return KeysChanged(domain=call.domain, username=username, added=len(keys))


@keys_tool(title="Remove SSH keys")
def ssh_authorized_keys_remove(call: Call, username: Username, keys: SshKeys) -> KeysChanged:
    """Remove public keys from a guest user's authorized_keys (absent ones are no error)."""
    call.agent.ssh_remove_authorized_keys(username, keys)
    return KeysChanged(domain=call.domain, username=username, removed=len(keys))

"""Passwords never show (logs, errors, reprs); SSH key helpers. Scripted, then the tiny guest.

The host's agent has set-user-password blocked; the tiny guest (``lab.ok``) runs it
for real through a minimal chpasswd.
"""

from __future__ import annotations

import base64
import logging
import secrets
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    FakeTransport,
    GuestAgent,
    GuestAgentError,
    InvalidArgumentError,
)
from qga_libvirt.protocol import Reply
from qga_libvirt.transports.base import Request

from .lab import Lab

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxLk3TnWpGgG2b6aYI5XQbMHh0fXyKk3QUMcC1Vz6aa a@qga"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKm0c8Gf2TB5HcL0n4RSuJ0D8a0f0l6mQn6oX0N3Xwbb b@qga"
KEY_C = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqN1Q8xH6y8C2j4Qy2m0d6Zl7bF4aWv1k1lJ7k3R8cc c@qga"


def secret_password() -> str:
    return f"pw-{secrets.token_hex(8)}"


def assert_nowhere(password: str, *texts: str) -> None:
    encoded = base64.b64encode(password.encode()).decode()
    for text in texts:
        assert password not in text
        assert encoded not in text


def everything_about(error: BaseException) -> list[str]:
    """Every text an error shows: str, repr, args, attributes, a formatted traceback."""
    texts = [str(error), repr(error), repr(error.args), repr(vars(error))]
    texts.append("".join(traceback.format_exception(error)))
    return texts


# --- scripted ---------------------------------------------------------------------------


def test_password_is_base64_on_the_wire_and_hidden_in_reprs() -> None:
    password = secret_password()
    fake = FakeTransport(lambda request: {})
    GuestAgent(fake).set_user_password("alice", password)
    request = fake.requests[0]
    assert request.arguments is not None
    assert base64.b64decode(request.arguments["password"]).decode() == password
    assert_nowhere(password, repr(fake.requests), str(fake.requests), repr(request))


def test_failing_password_change_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = secret_password()

    def refuse(request: Request) -> Any:
        return Reply(error_class="GenericError", desc="child process has failed to set user")

    fake = FakeTransport(refuse)
    with pytest.raises(AgentCommandError) as caught:
        GuestAgent(fake).set_user_password("nosuchuser", password)
    assert_nowhere(password, caplog.text, repr(fake.requests), *everything_about(caught.value))


def test_transport_failure_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = secret_password()

    def unreachable(request: Request) -> Any:
        raise GuestAgentError(f"cannot send {request!r}", command=request.command)

    with pytest.raises(GuestAgentError) as caught:
        GuestAgent(FakeTransport(unreachable)).set_user_password("alice", password)
    assert "guest-set-user-password" in str(caught.value)
    assert_nowhere(password, caplog.text, *everything_about(caught.value))


def test_password_with_a_lone_surrogate_is_refused_typed_and_unshown() -> None:
    """It raised an untyped UnicodeEncodeError whose repr held the password."""
    password = f"{secret_password()}\udc80"
    fake = FakeTransport(lambda request: {})
    with pytest.raises(InvalidArgumentError) as caught:
        GuestAgent(fake).set_user_password("alice", password)
    assert caught.value.argument == "argument password"
    assert fake.requests == []  # nothing sent
    visible = password[:-1]
    for text in everything_about(caught.value):
        assert visible not in text


def test_replace_authorized_keys_is_add_with_reset() -> None:
    fake = FakeTransport(lambda request: {})
    GuestAgent(fake).ssh_replace_authorized_keys("alice", (KEY_A, KEY_B))
    request = fake.requests[0]
    assert request.command == "guest-ssh-add-authorized-keys"
    assert request.arguments == {"username": "alice", "keys": [KEY_A, KEY_B], "reset": True}


# --- the tiny guest ---------------------------------------------------------------------


@pytest.fixture
def guest(lab: Lab) -> GuestAgent:
    return GuestAgent.from_domain(lab.ok, timeout=30)


def shadow_entry(agent: GuestAgent, user: str) -> str:
    for line in agent.read_file("/etc/shadow").decode().splitlines():
        if line.startswith(f"{user}:"):
            return line.split(":")[1]
    raise AssertionError(f"{user} not in /etc/shadow")


@pytest.mark.vm
def test_vm_set_password_changes_shadow(guest: GuestAgent) -> None:
    before = shadow_entry(guest, "tester")
    guest.set_user_password("tester", secret_password())
    after = shadow_entry(guest, "tester")
    assert after != before
    assert after.startswith("$6$")
    crypted = "$6$qgasalt$" + "x" * 86
    guest.set_user_password("tester", crypted, crypted=True)
    assert shadow_entry(guest, "tester") == crypted


@pytest.mark.vm
def test_vm_failing_password_change_shows_no_password(
    guest: GuestAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = secret_password()
    with pytest.raises(AgentCommandError) as caught:
        guest.set_user_password("nosuchuser", password)
    assert caught.value.desc  # the agent said why
    assert_nowhere(password, caplog.text, caught.value.desc, *everything_about(caught.value))


@pytest.fixture
def tester_keys(guest: GuestAgent) -> Iterator[GuestAgent]:
    yield guest
    guest.ssh_replace_authorized_keys("tester", [])


def keys_of(agent: GuestAgent, user: str) -> list[str]:
    """The user's keys, sorted: qemu-ga 7.2 lists them in reverse file order."""
    return sorted(agent.ssh_get_authorized_keys(user))


@pytest.mark.vm
def test_vm_ssh_keys_replace_add_remove(tester_keys: GuestAgent) -> None:
    agent = tester_keys
    agent.ssh_replace_authorized_keys("tester", [KEY_A, KEY_B])
    assert keys_of(agent, "tester") == sorted([KEY_A, KEY_B])
    agent.ssh_add_authorized_keys("tester", [KEY_C, KEY_A])  # KEY_A: not added twice
    assert keys_of(agent, "tester") == sorted([KEY_A, KEY_B, KEY_C])
    agent.ssh_remove_authorized_keys("tester", [KEY_B])
    assert keys_of(agent, "tester") == sorted([KEY_A, KEY_C])
    agent.ssh_replace_authorized_keys("tester", [KEY_B])
    assert keys_of(agent, "tester") == [KEY_B]
    agent.ssh_replace_authorized_keys("tester", [])
    assert keys_of(agent, "tester") == []
    with pytest.raises(AgentCommandError, match="nosuchuser"):
        agent.ssh_replace_authorized_keys("nosuchuser", [KEY_A])

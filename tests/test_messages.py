"""Refusals that know the command's history and platform, and typos, on the fake agent.

The real agents (7.2 and 10.0) give the same messages in test_commands_real.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    CommandDisabledError,
    CommandNotFoundError,
    GuestAgent,
)
from qga_libvirt.errors import older
from qga_libvirt.models import CaptureOutputMode
from qga_libvirt.testing import Error, FakeAgent, Return

LINUX = {"id": "debian", "kernel-release": "6.1.0", "kernel-version": "#1 SMP", "machine": "x86_64"}
WINDOWS = {
    "id": "mswindows",
    "name": "Microsoft Windows",
    "pretty-name": "Windows Server 2019 Standard",
    "kernel-release": "17763",
    "kernel-version": "10.0",
    "machine": "x86_64",
}


def not_found(wire: str) -> Error:
    return Error("CommandNotFound", f"The command {wire} has not been found")


def disabled(wire: str) -> Error:
    return Error("CommandNotFound", f"Command {wire} has been disabled")


@pytest.fixture
def guest() -> Iterator[tuple[FakeAgent, GuestAgent]]:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path, idle_timeout=None) as agent:
        yield fake, agent


def as_agent(fake: FakeAgent, version: str, osinfo: dict[str, Any] | None) -> None:
    commands = [{"name": "guest-ping", "enabled": True, "success-response": True}]
    fake.script(
        "guest-info", Return({"version": version, "supported_commands": commands}), times=None
    )
    if osinfo is None:
        fake.script("guest-get-osinfo", not_found("guest-get-osinfo"), times=None)
    else:
        fake.script("guest-get-osinfo", Return(osinfo), times=None)


def test_a_command_newer_than_the_agent_says_which_version_it_needs(
    guest: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, agent = guest
    as_agent(fake, "7.2.0", LINUX)
    fake.script("guest-get-load", not_found("guest-get-load"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.get_load()
    message = str(caught.value)
    assert "guest-get-load needs qemu-guest-agent 10.0 or newer; this guest runs 7.2.0" in message
    assert "--block-rpcs" not in message


@pytest.mark.parametrize("refusal", [not_found, disabled], ids=["10.0-style", "7.2-style"])
def test_a_windows_command_on_linux_says_so(
    guest: tuple[FakeAgent, GuestAgent], refusal: Any
) -> None:
    """7.2 lists guest-get-devices as disabled on Linux, 10.0 does not have it."""
    fake, agent = guest
    as_agent(fake, "7.2.0", LINUX)
    fake.script("guest-get-devices", refusal("guest-get-devices"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.get_devices()
    message = str(caught.value)
    assert "guest-get-devices exists only on Windows guests; this guest runs Linux" in message
    assert "--block-rpcs" not in message
    assert "upgrade" not in message


def test_a_linux_command_on_windows_says_so(guest: tuple[FakeAgent, GuestAgent]) -> None:
    fake, agent = guest
    as_agent(fake, "9.2.0", WINDOWS)
    fake.script("guest-get-cpustats", not_found("guest-get-cpustats"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.get_cpustats()
    assert "guest-get-cpustats exists only on Linux guests; this guest runs Windows" in str(
        caught.value
    )


def test_a_command_that_came_later_to_windows(guest: tuple[FakeAgent, GuestAgent]) -> None:
    """guest-network-get-route: Linux since 9.1, Windows since 11.0."""
    fake, agent = guest
    as_agent(fake, "10.0.0", WINDOWS)
    fake.script("guest-network-get-route", not_found("guest-network-get-route"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.network_get_route()
    assert "needs qemu-guest-agent 11.0 or newer; this guest runs 10.0.0" in str(caught.value)


def test_platform_without_the_guests_os_still_is_not_blamed_on_the_configuration(
    guest: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, agent = guest
    as_agent(fake, "10.0.2", None)  # get-osinfo refused: the OS stays unknown
    fake.script("guest-get-devices", not_found("guest-get-devices"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.get_devices()
    assert "exists only on Windows guests" in str(caught.value)


def test_a_disabled_command_is_still_the_configurations(
    guest: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, agent = guest
    as_agent(fake, "7.2.0", LINUX)
    fake.script("guest-get-cpustats", disabled("guest-get-cpustats"))
    with pytest.raises(CommandDisabledError) as caught:
        agent.get_cpustats()
    assert "--block-rpcs" in str(caught.value)


def test_a_typo_is_unknown_and_the_closest_name_is_suggested(
    guest: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, agent = guest
    as_agent(fake, "10.0.2", LINUX)
    fake.script("guest-get-laod", not_found("guest-get-laod"))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.call("guest-get-laod")
    message = str(caught.value)
    assert "guest-get-laod is unknown to the agent" in message
    assert "did you mean guest-get-load?" in message
    assert "upgrade" not in message


def test_capture_output_modes_need_8_0(guest: tuple[FakeAgent, GuestAgent]) -> None:
    fake, agent = guest
    as_agent(fake, "7.2.0", LINUX)
    fake.script(
        "guest-exec",
        Error("GenericError", "Invalid parameter type for 'capture-output', expected: boolean"),
    )
    with pytest.raises(AgentCommandError) as caught:
        agent.exec("/bin/true", capture_output=CaptureOutputMode.MERGED)
    assert "capture-output modes need qemu-guest-agent 8.0 or newer; this guest runs 7.2.0" in str(
        caught.value
    )


def test_other_failures_are_not_reinterpreted(guest: tuple[FakeAgent, GuestAgent]) -> None:
    fake, agent = guest
    as_agent(fake, "7.2.0", LINUX)
    fake.script("guest-exec", Error("GenericError", "Guest agent command failed: ENOENT"))
    with pytest.raises(AgentCommandError) as caught:
        agent.exec("/nonexistent")
    assert str(caught.value).startswith("guest-exec failed")
    assert "8.0" not in str(caught.value)
    assert [r["execute"] for r in fake.requests].count("guest-info") == 0  # no extra trip


@pytest.mark.parametrize(
    ("version", "than", "expected"),
    [
        ("7.2.0", "10.0", True),
        ("10.0.2", "10.0", False),
        ("9.1", "9.1", False),
        ("8.2.1-debian", "9.1", True),
        ("fake-1.0", "9.1", False),
        (None, "9.1", False),
    ],
)
def test_older(version: str | None, than: str, expected: bool) -> None:
    assert older(version, than) is expected

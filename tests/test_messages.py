"""Refusals that know the command's history and platform, and typos, on the fake agent.

The real agents (7.2 and 10.0) give the same messages in test_commands_real.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Refusal:
    """An agent (version, OS) refusing one command, and what the error must say."""

    version: str
    osinfo: dict[str, Any] | None
    wire: str
    answer: Error
    call: Callable[[GuestAgent], object]
    raises: type[AgentCommandError]
    says: str | tuple[str, ...]
    never: tuple[str, ...] = ()


REFUSALS = {
    "a command newer than the agent says which version it needs": Refusal(
        "7.2.0",
        LINUX,
        "guest-get-load",
        not_found("guest-get-load"),
        lambda agent: agent.get_load(),
        CommandNotFoundError,
        "guest-get-load needs qemu-guest-agent 10.0 or newer; this guest runs 7.2.0",
        ("--block-rpcs",),
    ),
    # 7.2 lists guest-get-devices as disabled on Linux, 10.0 does not have it.
    **{
        f"a windows command on linux says so ({style})": Refusal(
            "7.2.0",
            LINUX,
            "guest-get-devices",
            refusal("guest-get-devices"),
            lambda agent: agent.get_devices(),
            CommandNotFoundError,
            "guest-get-devices exists only on Windows guests; this guest runs Linux",
            ("--block-rpcs", "upgrade"),
        )
        for style, refusal in (("10.0-style", not_found), ("7.2-style", disabled))
    },
    "a linux command on windows says so": Refusal(
        "9.2.0",
        WINDOWS,
        "guest-get-cpustats",
        not_found("guest-get-cpustats"),
        lambda agent: agent.get_cpustats(),
        CommandNotFoundError,
        "guest-get-cpustats exists only on Linux guests; this guest runs Windows",
    ),
    # guest-network-get-route: Linux since 9.1, Windows since 11.0.
    "a command that came later to windows": Refusal(
        "10.0.0",
        WINDOWS,
        "guest-network-get-route",
        not_found("guest-network-get-route"),
        lambda agent: agent.network_get_route(),
        CommandNotFoundError,
        "needs qemu-guest-agent 11.0 or newer; this guest runs 10.0.0",
    ),
    # get-osinfo refused: the OS stays unknown.
    "a platform's command is not blamed on the configuration without the guest's OS": Refusal(
        "10.0.2",
        None,
        "guest-get-devices",
        not_found("guest-get-devices"),
        lambda agent: agent.get_devices(),
        CommandNotFoundError,
        "exists only on Windows guests",
    ),
    "a disabled command is still the configuration's": Refusal(
        "7.2.0",
        LINUX,
        "guest-get-cpustats",
        disabled("guest-get-cpustats"),
        lambda agent: agent.get_cpustats(),
        CommandDisabledError,
        "--block-rpcs",
    ),
    "a typo is unknown and the closest name is suggested": Refusal(
        "10.0.2",
        LINUX,
        "guest-get-laod",
        not_found("guest-get-laod"),
        lambda agent: agent.call("guest-get-laod"),
        CommandNotFoundError,
        ("guest-get-laod is unknown to the agent", "did you mean guest-get-load?"),
        ("upgrade",),
    ),
    "capture-output modes need 8.0": Refusal(
        "7.2.0",
        LINUX,
        "guest-exec",
        Error("GenericError", "Invalid parameter type for 'capture-output', expected: boolean"),
        lambda agent: agent.exec("/bin/true", capture_output=CaptureOutputMode.MERGED),
        AgentCommandError,
        "capture-output modes need qemu-guest-agent 8.0 or newer; this guest runs 7.2.0",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refusal_says_why(guest: tuple[FakeAgent, GuestAgent], case: Refusal) -> None:
    fake, agent = guest
    as_agent(fake, case.version, case.osinfo)
    fake.script(case.wire, case.answer)
    with pytest.raises(AgentCommandError) as caught:
        case.call(agent)
    assert type(caught.value) is case.raises
    message = str(caught.value)
    for right in (case.says,) if isinstance(case.says, str) else case.says:
        assert right in message
    for wrong in case.never:
        assert wrong not in message


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

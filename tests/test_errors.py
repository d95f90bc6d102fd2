"""The error tree: codes, flags, attributes, and the one mapping from agent errors."""

from __future__ import annotations

import pytest

import qga_libvirt
from qga_libvirt import errors
from qga_libvirt.errors import (
    AgentCommandError,
    AgentTimeoutError,
    AgentUnreachableError,
    CommandDisabledError,
    CommandNotFoundError,
    ConnectionLostError,
    GuestAgentError,
    GuestFrozenError,
    InvalidArgumentError,
    ProtocolError,
    ReplyTooLargeError,
    RequestTooLargeError,
    TransferError,
    agent_error,
)


def test_codes_are_the_v_clients() -> None:
    assert (
        errors.ERR_NO_CONNECT,
        errors.ERR_CANNOT_READ,
        errors.ERR_CANNOT_WRITE,
        errors.ERR_TIMED_OUT,
        errors.ERR_FROM_AGENT,
    ) == (1000, 1001, 1002, 1003, 1004)
    assert AgentUnreachableError("x").code == 1000
    assert AgentTimeoutError("x").code == 1003
    assert ConnectionLostError("x").code == 1001
    assert ConnectionLostError("x", writing=True).code == 1002
    assert ProtocolError("x").code == 1001
    assert CommandNotFoundError("x", error_class="C", desc="d").code == 1004


def test_every_error_is_a_guest_agent_error() -> None:
    for cls in (
        AgentUnreachableError,
        AgentTimeoutError,
        ConnectionLostError,
        ProtocolError,
        AgentCommandError,
        CommandDisabledError,
        GuestFrozenError,
        CommandNotFoundError,
    ):
        assert issubclass(cls, GuestAgentError)
        assert cls.__name__ in (errors.__doc__ or "")  # drawn in the module docstring


def test_unreachable_flag() -> None:
    """True whenever the agent's own answer was not obtained; False when it answered
    with an error, or when nothing was sent (issue 15)."""
    assert AgentUnreachableError("x").is_unreachable
    assert AgentTimeoutError("x").is_unreachable
    assert ConnectionLostError("x").is_unreachable
    assert ConnectionLostError("x", writing=True).is_unreachable
    assert ProtocolError("x").is_unreachable
    assert ReplyTooLargeError("x").is_unreachable
    assert not AgentCommandError("x", error_class="GenericError", desc="d").is_unreachable
    assert not RequestTooLargeError("x").is_unreachable
    assert not InvalidArgumentError("x", argument="arguments['a']").is_unreachable
    assert not AgentTimeoutError("x", is_unreachable=False).is_unreachable
    lost = ConnectionLostError("x")
    assert TransferError("t", transferred=0, total=1, path="/p", cause=lost).is_unreachable


@pytest.mark.parametrize(
    ("error_class", "desc", "expected"),
    [
        ("CommandNotFound", "Command guest-exec has been disabled", CommandDisabledError),
        (
            "CommandNotFound",
            "Command guest-exec has been disabled: the agent is in frozen state",
            GuestFrozenError,
        ),
        ("CommandNotFound", "The command guest-x has not been found", CommandNotFoundError),
        ("GenericError", "failed to open file", AgentCommandError),
    ],
)
def test_agent_error_mapping(error_class: str, desc: str, expected: type) -> None:
    error = agent_error(
        error_class, desc, target="socket /s", command="guest-exec", agent_version="9.9"
    )
    assert type(error) is expected
    assert (error.error_class, error.desc) == (error_class, desc)
    assert error.target == "socket /s"
    assert error.command == "guest-exec"
    assert desc in str(error)
    if error_class == "CommandNotFound":
        assert "9.9" in str(error)


def test_public_api_is_exported() -> None:
    for name in qga_libvirt.__all__:
        assert hasattr(qga_libvirt, name), name
    assert len(set(qga_libvirt.__all__)) == len(qga_libvirt.__all__)

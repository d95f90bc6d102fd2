"""The error tree: codes, flags, attributes, and the one mapping from agent errors."""

from __future__ import annotations

import ast
import inspect
import re
import types
from collections.abc import Callable

import pytest

import qga_libvirt
from qga_libvirt import errors, models
from qga_libvirt.errors import (
    AgentCommandError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    CommandDisabledError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConnectionLostError,
    FreezeTimeoutError,
    GuestAgentError,
    GuestFrozenError,
    InvalidArgumentError,
    LibvirtError,
    OutputLostError,
    ProtocolError,
    ReplyTooLargeError,
    RequestTooLargeError,
    ShutdownTimeoutError,
    ThawError,
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
    assert raised_from(TransferError("t", transferred=0, total=1, path="/p"), lost).is_unreachable


def raised_from(error: GuestAgentError, cause: BaseException) -> GuestAgentError:
    """``error`` as ``raise error from cause`` leaves it."""
    try:
        raise error from cause
    except GuestAgentError as caught:
        return caught


@pytest.mark.parametrize(
    "reporter",
    [
        lambda: GuestAgentError("could not"),
        lambda: TransferError("half", transferred=1, total=2, path="/p"),
        lambda: OutputLostError("lost", pid=1),
        lambda: ThawError("STILL FROZEN", attempts=5),
        lambda: LibvirtError("libvirt failed"),
    ],
)
def test_an_error_reports_the_one_it_is_raised_from(
    reporter: Callable[[], GuestAgentError],
) -> None:
    """One mechanism: ``raise ... from`` names the reported error; code and is_unreachable
    are that error's, for classes that fix no code of their own."""
    for cause, code, unreachable in [
        (ConnectionLostError("x", writing=True), 1002, True),
        (AgentTimeoutError("x"), 1003, True),
        (AgentCommandError("x", error_class="GenericError", desc="d"), 1004, False),
        (RequestTooLargeError("x"), 1002, False),
    ]:
        error = raised_from(reporter(), cause)
        assert error.__cause__ is cause
        assert (error.code, error.is_unreachable) == (code, unreachable)
    alone = reporter()
    assert (alone.code, alone.is_unreachable) == (errors.ERR_CANNOT_READ, True)
    local = raised_from(reporter(), OSError("disk full"))  # not an agent error: its own
    assert (local.code, local.is_unreachable) == (errors.ERR_CANNOT_READ, True)
    assert "cause" not in inspect.signature(GuestAgentError).parameters


def test_an_error_with_its_own_code_keeps_it_whatever_it_is_raised_from() -> None:
    agent_said_no = AgentCommandError("x", error_class="GenericError", desc="d")
    for error, code in [
        (ProtocolError("junk"), 1001),
        (AgentTimeoutError("slow"), 1003),
        (AgentNotConnectedError("no agent"), 1000),
        (ConnectionLostError("gone", writing=True), 1002),
    ]:
        raised = raised_from(error, agent_said_no)
        assert (raised.code, raised.is_unreachable) == (code, True)


@pytest.mark.parametrize(
    "error",
    [
        CommandTimeoutError("still running", pid=7, argv=["sleep", "9"], timeout=1.0),
        ShutdownTimeoutError("still up"),
        FreezeTimeoutError("thawed by the watchdog"),
    ],
)
def test_a_guest_that_is_not_done_is_not_an_agent_timeout(error: GuestAgentError) -> None:
    """The agent answered: ``except AgentTimeoutError`` must not catch these; they are
    timeouts all the same (code 1003: qga exits 6) but the agent was reached."""
    assert not isinstance(error, AgentTimeoutError)
    assert error.code == errors.ERR_TIMED_OUT
    assert not error.is_unreachable
    caught_by = None
    try:
        raise error
    except AgentTimeoutError:
        caught_by = "except AgentTimeoutError"
    except GuestAgentError:
        caught_by = "except GuestAgentError"
    assert caught_by == "except GuestAgentError"


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


def _public_classes(module: types.ModuleType) -> dict[str, type]:
    """The public classes a module defines (not those it imports), found in its source."""
    tree = ast.parse(inspect.getsource(module))
    names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    return {name: getattr(module, name) for name in names if not name.startswith("_")}


def test_every_public_error_is_exported_and_drawn() -> None:
    """Walks errors.py: a new error class cannot be left out of the package's API."""
    found = _public_classes(errors)
    raised = {name for name, cls in found.items() if issubclass(cls, GuestAgentError)}
    assert {"GuestAgentError", "ReplyTooLargeError", "CommandTimeoutError"} <= raised
    for name, cls in found.items():
        assert name in errors.__all__, name
        if name in raised:
            assert getattr(qga_libvirt, name) is cls, f"qga_libvirt does not export {name}"
            assert name in qga_libvirt.__all__, name
            assert re.search(rf"[─ ]{name}\b", errors.__doc__ or ""), f"{name} not drawn"


def test_every_public_model_is_exported() -> None:
    """Walks models.py: every public class is in its ``__all__``, the reply models the
    commands return among them."""
    found = _public_classes(models)
    assert len(found) > 30
    for name, cls in found.items():
        assert name in models.__all__, name
        assert getattr(models, name) is cls
    for name in ("AgentInfo", "CommandInfo", "Model"):
        assert getattr(qga_libvirt, name) is found[name]

"""The exit codes of ``qga``, and which error gives which.

``exec``, ``shell`` and ``freeze`` pass their command's own exit status through, so there
a status from 1 to 8 may also be that command's: the one line on stderr (or ``--json``)
tells them apart.
"""

from __future__ import annotations

from typing import Final

from ..errors import (
    ERR_NO_CONNECT,
    ERR_TIMED_OUT,
    AgentCommandError,
    AgentTimeoutError,
    CommandDisabledError,
    CommandNotFoundError,
    ConnectionLostError,
    GuestAgentError,
    OutputLostError,
    ProtocolError,
    ThawError,
    TransferError,
)

__all__ = ["EXIT_CODES", "exit_code_for", "exit_code_of_process"]

OK: Final = 0
FAILURE: Final = 1
USAGE: Final = 2
AGENT_ERROR: Final = 3
REFUSED: Final = 4
UNREACHABLE: Final = 5
TIMEOUT: Final = 6
BROKEN: Final = 7
PARTIAL: Final = 8
CANNOT_RUN: Final = 126
NOT_FOUND: Final = 127
SIGNAL_BASE: Final = 128
INTERRUPTED: Final = 130

EXIT_CODES: Final[tuple[tuple[str, str], ...]] = (
    (str(OK), "success"),
    (
        str(FAILURE),
        "any other failure: a local file error, a libvirt error, a guest left frozen "
        "(the message says how to thaw it), a bug",
    ),
    (str(USAGE), "usage error: unknown command or option, bad argument, missing input"),
    (str(AGENT_ERROR), "the agent ran the command and answered with an error"),
    (
        str(REFUSED),
        "the agent refused the command: disabled (--block-rpcs), unknown to its version, "
        "or refused while the guest's filesystems are frozen",
    ),
    (
        str(UNREACHABLE),
        "the agent could not be reached: libvirt down, no such domain, domain not "
        "running, no agent channel, no agent in the guest, no socket",
    ),
    (
        str(TIMEOUT),
        "no reply in time; `exec`/`shell`: the process outlived --timeout; `wait` gave "
        "up; `freeze`: the host command outlived --thaw-after",
    ),
    (
        str(BROKEN),
        "the conversation broke: connection lost, a reply that makes no sense, a "
        "process's output lost",
    ),
    (
        str(PARTIAL),
        "`fleet`: at least one target failed or exited non-zero; `list`: a hypervisor "
        "of several could not be reached",
    ),
    (f"{CANNOT_RUN}, {NOT_FOUND}", "`freeze`: the host command could not be run / found"),
    (f"{SIGNAL_BASE}+N", "`exec`, `shell`: the guest process was killed by signal N"),
    (f"{INTERRUPTED}", "interrupted (Ctrl-C)"),
    ("the command's", "`exec`, `shell`, `freeze`: the command's own exit status"),
)
"""(code, meaning) rows, for ``--help`` and docs/cli.md."""


def exit_code_of_process(exitcode: int | None, signal: int | None) -> int:
    """qga's exit code for a guest process that ended: its own, 128 + the signal that
    killed it, or FAILURE when the agent said neither."""
    if exitcode is not None:
        return exitcode
    if signal is not None:
        return SIGNAL_BASE + signal
    return FAILURE


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that stopped ``qga``."""
    if not isinstance(error, GuestAgentError) or isinstance(error, ThawError):
        return FAILURE  # a guest left frozen is not "a timeout", whatever the cause
    if isinstance(error, OutputLostError):
        return BROKEN
    if isinstance(error, TransferError) and isinstance(error.__cause__, GuestAgentError):
        return exit_code_for(error.__cause__)
    if isinstance(error, AgentTimeoutError) or error.code == ERR_TIMED_OUT:
        return TIMEOUT
    if error.code == ERR_NO_CONNECT:  # not is_unreachable: a broken reply is that too
        return UNREACHABLE
    if isinstance(error, CommandDisabledError | CommandNotFoundError):
        return REFUSED
    if isinstance(error, AgentCommandError):
        return AGENT_ERROR
    if isinstance(error, ConnectionLostError | ProtocolError):
        return BROKEN
    return FAILURE

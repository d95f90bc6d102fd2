"""The shapes every ``qga`` subcommand shares: what it is given, what it gives back."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .output import Output, human_lines, one_line

if TYPE_CHECKING:
    from ..client import GuestAgent
    from ..commands import Command
    from ..transports.domain import Backend

__all__ = [
    "Context",
    "GlobalOptions",
    "Outcome",
    "Prepare",
    "Runner",
    "Subcommand",
    "no_arguments",
]


@dataclass(frozen=True)
class GlobalOptions:
    """The options of the whole run: the target and how to talk and report, read from
    the words before the command (and ``--json``, ``--debug``, ``--trace``, ``--timeout``
    after it). Never changed: a later rule makes a new one (``dataclasses.replace``).

    Attributes:
        connects: every ``-c URI``, in order (several only for ``list`` and ``fleet``).
        domain: the domain, when the target is one (``-d``, the first word, or ``cp``'s).
        socket: ``--socket PATH``, when the target is an agent's socket.
        backend: ``--backend``.
        timeout: ``--timeout``, when given.
        json, debug, trace: ``--json``, ``--debug``, ``--trace``.
    """

    connects: tuple[str, ...] = ()
    domain: str | None = None
    socket: str | None = None
    backend: Backend = "auto"
    timeout: float | None = None
    json: bool = False
    debug: bool = False
    trace: bool = False

    @property
    def connect(self) -> str | None:
        """The libvirt URI of a one-hypervisor command (None: libvirt's default)."""
        return self.connects[0] if self.connects else None

    @classmethod
    def from_namespace(cls, parsed: argparse.Namespace) -> GlobalOptions:
        """The options the top-level parser read (its ``words`` are not options)."""
        return cls(
            connects=tuple(parsed.connect or ()),
            domain=parsed.domain,
            socket=parsed.socket,
            backend=parsed.backend,
            timeout=parsed.timeout,
            json=parsed.json,
            debug=parsed.debug,
            trace=parsed.trace,
        )


@dataclass(frozen=True)
class Context:
    """What a subcommand may use besides its own arguments."""

    out: Output
    options: GlobalOptions
    in_fleet: bool = False

    @property
    def timeout(self) -> float | None:
        """``--timeout``, when given."""
        return self.options.timeout

    @property
    def progress_allowed(self) -> bool:
        """A progress bar may be drawn: stderr is a terminal, no ``--json``, no fleet."""
        return not (self.out.json_mode or self.in_fleet) and self.out.stderr_is_terminal()


@dataclass(frozen=True)
class Outcome:
    """What a subcommand gives back, for ``--json``, for people, and for a fleet line.

    Attributes:
        value: the result; ``--json`` prints it (see :func:`~.output.to_json`).
        text: lines for people; None renders ``value`` generically.
        stdout, stderr: bytes written as they are, for people (``exec``).
        summary: the one-line form in ``fleet``; None derives it from ``value``.
        messages: lines for stderr (warnings), written in every mode.
        exit_code: qga's exit status.
        done: for an action that prints nothing: one line saying it was done, shown
            only when stdout is a terminal (scripts get silence, people an answer).
    """

    value: Any = None
    text: Sequence[str] | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    summary: str | None = None
    messages: tuple[str, ...] = ()
    exit_code: int = 0
    done: str = ""

    def show(self, out: Output) -> None:
        """Write the outcome: JSON or text on stdout, raw bytes, messages on stderr."""
        if out.json_mode:
            out.json(self.value)
        else:
            lines = human_lines(self.value) if self.text is None else self.text
            if self.text is None and isinstance(self.value, list) and not self.value:
                lines = ["(the agent reported none)"]
            out.lines(lines)
            if self.done and out.stdout_is_terminal():
                out.line(self.done)
            if self.stdout:
                out.raw(self.stdout)
            if self.stderr:
                out.raw(self.stderr, error=True)
        for message in self.messages:
            out.error(message)

    def one_line(self) -> str:
        """The outcome in one line."""
        return self.summary if self.summary is not None else one_line(self.value)


Runner = Callable[["GuestAgent"], Outcome]
"""Does the work against one agent (once, or per target in a fleet)."""

Prepare = Callable[[Context, argparse.Namespace], Runner]
"""Checks the arguments and reads what is read once (stdin, files, a password), then
gives the runner."""


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For subcommands that take no arguments of their own."""


@dataclass(frozen=True)
class Subcommand:
    """One subcommand that talks to an agent.

    Attributes:
        name: as typed after the target.
        summary: one line for the command list.
        prepare: see :data:`Prepare`.
        arguments: adds the subcommand's own arguments to its parser.
        runs: the declarations it runs (for the docs).
        description: the longer help, or a function that makes it (on demand: a
            declaration's may resolve its types); the summary when empty.
        in_fleet: whether ``fleet`` may run it across targets.
    """

    name: str
    summary: str
    prepare: Prepare
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
    runs: tuple[Command[Any, Any], ...] = field(default=())
    description: str | Callable[[], str] = ""
    in_fleet: bool = True

    @property
    def help(self) -> str:
        """The longer help (made now when made on demand), else the summary."""
        text = self.description() if callable(self.description) else self.description
        return text or self.summary

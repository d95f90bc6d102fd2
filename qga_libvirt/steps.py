"""Steps: what the client does, written once for the blocking and the asyncio clients.

Logic that talks to an agent is written as a generator (a *program*) that yields
steps and receives their outcome: :class:`Call` (one request; the reply comes back)
and :class:`Sleep` (wait; an optional :class:`threading.Event` wakes it early). It
never does I/O itself. A driver performs the steps: :func:`drive` with blocking calls
(:class:`~qga_libvirt.GuestAgent`), :func:`drive_async` with awaits
(:class:`~qga_libvirt.AsyncGuestAgent`). What a step raises (a transport error,
KeyboardInterrupt, asyncio's CancelledError) is thrown into the program at the
``yield``, so its ``try``/``finally`` blocks clean up the same way under both.

A program that needs another's result uses ``yield from``::

    def _uptime(self) -> Program[float]:
        info = yield from self._invoke_steps(Commands.get_osinfo, None)
        ...

This is the sans-I/O design of :mod:`~qga_libvirt.protocol` one level up: the protocol
turns bytes into replies without I/O, programs turn replies into results without I/O.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .protocol import Reply
from .transports.base import Request

__all__ = ["Call", "Program", "Sleep", "Step", "drive", "drive_async"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """Send ``request``; the program receives the :class:`Reply` (agent errors
    included) or has the transport's exception thrown in."""

    request: Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``; ``wake`` (set by another thread) ends the wait early."""

    seconds: float
    wake: threading.Event | None = None


Step = Call | Sleep
Program = Generator[Step, Any, T]
"""A generator of steps that returns a ``T``."""


def drive(program: Program[T], execute: Callable[[Request, float], Reply]) -> T:
    """Run ``program`` with blocking calls: ``execute`` for a :class:`Call`,
    ``time.sleep`` (or the event's wait) for a :class:`Sleep`."""
    outcome: Any = None
    failure: BaseException | None = None
    while True:
        try:
            step = program.send(outcome) if failure is None else program.throw(failure)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            failure = None  # no reference cycle through the traceback
        try:
            if isinstance(step, Call):
                outcome = execute(step.request, step.timeout)
            else:
                outcome = None
                if step.wake is not None:
                    step.wake.wait(max(step.seconds, 0.0))
                elif step.seconds > 0:
                    time.sleep(step.seconds)
        except BaseException as exc:  # thrown into the program, which decides
            outcome, failure = None, exc


async def drive_async(
    program: Program[T], execute: Callable[[Request, float], Awaitable[Reply]]
) -> T:
    """Run ``program`` with awaits: ``await execute(...)`` for a :class:`Call`,
    ``asyncio.sleep`` for a :class:`Sleep`. Cancelling the task throws
    ``CancelledError`` into the program at its current step."""
    outcome: Any = None
    failure: BaseException | None = None
    while True:
        try:
            step = program.send(outcome) if failure is None else program.throw(failure)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            failure = None
        try:
            if isinstance(step, Call):
                outcome = await execute(step.request, step.timeout)
            else:
                outcome = None
                if step.wake is not None:
                    await _wait_event(step.wake, step.seconds)
                elif step.seconds > 0:
                    await asyncio.sleep(step.seconds)
        except BaseException as exc:
            outcome, failure = None, exc


async def _wait_event(event: threading.Event, seconds: float) -> None:
    """Wait for a thread's event without blocking the loop: short sleeps, checked."""
    deadline = time.monotonic() + max(seconds, 0.0)
    while not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, 0.05))

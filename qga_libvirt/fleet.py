"""Fleets: one query across many agents at once, with bounded parallelism.

::

    from qga_libvirt import fleet_call

    results = fleet_call(["web1", "web2", "/run/db.qga.sock"], lambda a: a.get_osinfo())
    for r in results:
        print(r.target, r.value.pretty_name if r.ok else f"{r.error_type}: {r.error_message}")

Targets are libvirt domains by name, UUID or ID (:meth:`GuestAgent.from_domain
<qga_libvirt.GuestAgent.from_domain>`, on ``uri``), socket paths (a ``str`` containing
``/``, or a path object: :meth:`GuestAgent.from_socket
<qga_libvirt.GuestAgent.from_socket>`), or :class:`~qga_libvirt.GuestAgent` instances.
The agents a fleet opens it also closes; the instances it is given stay open.

One failure never spoils the batch: every exception met for a target (opening it, ``fn``,
closing it) is kept in that target's :class:`FleetResult`, typed, and the other targets
go on. Results come back in the order of the targets.

Time is bounded twice per target:

- ``timeout`` is the agent's: each call waits that long for its reply (the raw socket
  also bounds connecting by it). It is applied to given instances too, through
  :meth:`~qga_libvirt.GuestAgent.with_timeout`.
- ``wall_timeout`` bounds the whole of one target's work, from opening it to closing it,
  because ``fn`` may make many calls and libvirt's own resync before a command is not
  bounded by the call's timeout. When it passes, the target's result becomes an
  :class:`~qga_libvirt.AgentTimeoutError` at once and its slot goes to the next target,
  so a hung target holds neither the batch nor a worker. Python cannot stop a thread:
  the workers are daemon threads, and the one left behind with the hung target is
  replaced by a new one; it finishes in the background (its calls still end by their
  timeout, libvirt's resync aside), closes the agent it opened, drops what ``fn``
  returned, and goes back to the shared workers.
  A batch therefore ends within about ``ceil(len(targets) / max_workers) *
  wall_timeout``.

Parallelism follows the waiting: a fleet starts on one worker and adds one, up to
``max_workers``, each time every running target has kept its worker waiting for
:data:`RAMP` (2 ms). Fast local agents, whose answers cost CPU rather than waiting, so
run at the pace of a plain loop; slow or silent ones spread over ``max_workers``. The
worker threads are shared by all fleets and kept warm between them (daemon threads,
gone after 30 idle seconds).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from .client import DEFAULT_TIMEOUT, GuestAgent
from .errors import AgentTimeoutError, Hint, Remedy

__all__ = ["FleetResult", "FleetTarget", "fleet_call", "fleet_ping"]

T = TypeVar("T")

FleetTarget: TypeAlias = str | int | os.PathLike[str] | GuestAgent
"""A domain name, UUID or ID; a socket path (a ``str`` with a ``/``, or a path object);
or an agent."""

WALL_FACTOR = 3
"""``wall_timeout`` defaults to this many times ``timeout``: room for opening the target,
libvirt's resync and a few calls."""


@dataclass(frozen=True, slots=True)
class FleetResult(Generic[T]):
    """What one target of a fleet gave: a value, or the error that stopped it.

    Attributes:
        target: the target as given (a domain or a socket path), or an agent's
            :attr:`~qga_libvirt.GuestAgent.target`.
        value: what ``fn`` returned; None on error.
        error: the exception; None on success. A :class:`~qga_libvirt.GuestAgentError`
            for everything about reaching and asking the agent (an
            :class:`~qga_libvirt.AgentTimeoutError` when the wall-clock bound passed);
            whatever ``fn`` itself raised otherwise.
        duration: seconds spent on this target, opening and closing included.
    """

    target: str
    value: T | None = None
    error: Exception | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when ``fn`` returned a value."""
        return self.error is None

    @property
    def error_type(self) -> str | None:
        """The error's class name, e.g. ``"DomainNotFoundError"``; None on success."""
        return None if self.error is None else type(self.error).__name__

    @property
    def error_message(self) -> str | None:
        """The error's message (it says what to do); None on success."""
        return None if self.error is None else str(self.error) or type(self.error).__name__

    def unwrap(self) -> T:
        """The value, or the error raised again.

        Raises:
            Exception: :attr:`error`, when there is one.
        """
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None only when T allows it

    def as_dict(self) -> dict[str, Any]:
        """A plain view for rendering: the error as its type and message strings."""
        return {
            "target": self.target,
            "ok": self.ok,
            "value": self.value,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "duration": self.duration,
        }


def fleet_call(
    targets: Iterable[FleetTarget],
    fn: Callable[[GuestAgent], T],
    *,
    max_workers: int = 16,
    timeout: float = DEFAULT_TIMEOUT,
    wall_timeout: float | None = None,
    uri: str | None = None,
) -> list[FleetResult[T]]:
    """Run ``fn(agent)`` for every target, ``max_workers`` at a time; results in order.

    Args:
        targets: domains, socket paths or agents (see :data:`FleetTarget`).
        fn: what to ask each agent; its return value is the result's ``value``.
        max_workers: targets worked on at once.
        timeout: seconds each call waits for its reply.
        wall_timeout: seconds one target may take in all (default ``3 * timeout``;
            ``math.inf`` for no bound). See the module docs for how it is enforced.
        uri: the libvirt URI for the targets that are domains (default like virsh).

    Raises:
        ValueError: ``max_workers`` is below 1, or a timeout is not positive. Nothing
            else: each target's errors are in its result.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, not {max_workers}")
    wall = WALL_FACTOR * timeout if wall_timeout is None else wall_timeout
    if not timeout > 0 or not wall > 0:
        raise ValueError(f"timeouts must be positive, not {timeout!r} and {wall!r}")
    items = list(targets)
    return _Batch(items, fn, timeout, wall, uri).run(max_workers)


def fleet_ping(
    targets: Iterable[FleetTarget],
    *,
    max_workers: int = 16,
    timeout: float = DEFAULT_TIMEOUT,
    wall_timeout: float | None = None,
    uri: str | None = None,
) -> list[FleetResult[None]]:
    """Ping every target (see :func:`fleet_call`): ``ok`` says which agents answer.

    Raises: as :func:`fleet_call`.
    """
    return fleet_call(
        targets,
        _ping,
        max_workers=max_workers,
        timeout=timeout,
        wall_timeout=wall_timeout,
        uri=uri,
    )


def _ping(agent: GuestAgent) -> None:
    agent.ping()


def _label(target: FleetTarget) -> str:
    if isinstance(target, GuestAgent):
        return target.target
    return os.fspath(target) if isinstance(target, os.PathLike) else str(target)


def _open(target: FleetTarget, timeout: float, uri: str | None) -> tuple[GuestAgent, bool]:
    """The agent for a target, and whether the fleet opened it (and so closes it)."""
    if isinstance(target, GuestAgent):
        return target.with_timeout(timeout), False
    # The fleet closes what it opens as soon as its work is done: no idle watcher.
    if isinstance(target, os.PathLike) or (isinstance(target, str) and "/" in target):
        return GuestAgent.from_socket(target, timeout, idle_timeout=None), True
    return GuestAgent.from_domain(target, uri, timeout, idle_timeout=None), True


RAMP = 0.002
"""Seconds every running target must have been waited on before one more worker joins.

A local agent answers in well under a millisecond, and that time is CPU on both sides:
on a small machine extra threads only add switching, so a fleet of fast agents runs on
one or two workers and costs what a plain loop costs. Agents that make us wait (remote
hypervisors, slow guests, silent sockets) keep every worker busy past this, and the
fleet grows towards ``max_workers``, one worker per ``RAMP``."""
_IDLE = 30.0  # seconds a shared worker waits for the next job before it exits


class _Workers:
    """Daemon threads shared by all fleets, kept warm between them.

    Starting a thread costs about as much as pinging a local agent, so workers wait for
    the next job up to :data:`_IDLE` seconds. A job is started at once: on an idle
    worker if there is one, else on a new thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # reserved for this job
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._serve, name="qga fleet", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle == 0:  # a submit reserved us meanwhile: a job is coming
                        continue
                    self._idle -= 1
                return
            job()
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()


class _Batch(Generic[T]):
    """One fleet call: workers take targets in order; the caller's thread keeps time.

    The caller's thread adds workers while every running target keeps one waiting
    (see :data:`RAMP`), up to ``max_workers``, and gives up on a target past its
    wall-clock bound: its worker is then left behind (it exits once that target's work
    ends) and another takes its place.
    """

    def __init__(
        self,
        items: list[FleetTarget],
        fn: Callable[[GuestAgent], T],
        timeout: float,
        wall: float,
        uri: str | None,
    ) -> None:
        self.items, self.fn, self.timeout, self.wall, self.uri = items, fn, timeout, wall, uri
        self.labels = [_label(target) for target in items]
        self.results: list[FleetResult[T] | None] = [None] * len(items)
        self.changed = threading.Condition()  # guards everything below
        self.upcoming = 0
        self.running: dict[int, float] = {}  # index -> when its work started
        self.pending = len(items)
        self.workers = 0  # workers taking targets (the ones left behind not counted)

    def run(self, max_workers: int) -> list[FleetResult[T]]:
        with self.changed:
            if self.items:
                self._spawn()
            while self.pending:
                now = time.monotonic()
                # A target that starts from now on cannot end sooner than now + wall.
                until = min(self.running.values(), default=now) + self.wall
                if self.workers < max_workers and self.upcoming < len(self.items):
                    newest = max(self.running.values(), default=now)
                    until = min(until, newest + RAMP)
                self.changed.wait(None if math.isinf(until) else max(0.0, until - now))
                now = time.monotonic()
                for index, start in list(self.running.items()):
                    if now >= start + self.wall:
                        del self.running[index]
                        label = self.labels[index]
                        self.results[index] = FleetResult(
                            label, error=_overdue(label, self.wall), duration=now - start
                        )
                        self.pending -= 1
                        self.workers -= 1
                if self.upcoming < len(self.items) and (
                    self.workers == 0
                    or (
                        self.workers < max_workers
                        and self.running
                        and now >= max(self.running.values()) + RAMP
                    )
                ):
                    self._spawn()
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]

    def _spawn(self) -> None:
        self.workers += 1
        _WORKERS.submit(self._work)

    def _work(self) -> None:
        while True:
            with self.changed:
                if self.upcoming == len(self.items):
                    self.workers -= 1
                    return
                index = self.upcoming
                self.upcoming += 1
                self.running[index] = time.monotonic()
            value, error, duration = self._one(self.items[index])
            with self.changed:
                if self.running.pop(index, None) is None:
                    return  # given up on: a replacement took this worker's place
                self.results[index] = FleetResult(self.labels[index], value, error, duration)
                self.pending -= 1
                if not self.pending:  # deadlines the caller's thread checks on its own
                    self.changed.notify()

    def _one(self, target: FleetTarget) -> tuple[T | None, Exception | None, float]:
        start = time.monotonic()
        try:
            agent, opened = _open(target, self.timeout, self.uri)
            try:
                value = self.fn(agent)
            finally:
                if opened:
                    agent.close()
        except Exception as exc:  # one target's failure, of any kind, is its result
            return None, exc, time.monotonic() - start
        except BaseException as exc:  # SystemExit and the like: still this target's alone
            error = RuntimeError(f"fn raised {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            return None, error, time.monotonic() - start
        return value, None, time.monotonic() - start


def _overdue(label: str, wall: float) -> AgentTimeoutError:
    return AgentTimeoutError(
        f"{label} did not finish within {wall:g} s (the fleet's wall-clock bound per "
        "target): it was left running in the background",
        target=label,
        hint=Hint(Remedy.LONGER_FLEET_BOUND, "raise wall_timeout if it is merely slow"),
    )

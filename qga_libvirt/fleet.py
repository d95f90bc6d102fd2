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

Many hypervisors. A domain target can name its own hypervisor, so one fleet spans
hosts: a ``(uri, domain)`` pair, or a string ``URI/DOMAIN`` such as
``qemu+ssh://host2/system/web1`` (the last path segment is the domain; a URI with a
query string needs the pair form). One libvirt connection per URI is opened and shared
by all its targets (see :func:`~qga_libvirt.discovery.open_connection`), and at most
``per_uri`` targets of one URI are worked on at once: libvirtd serves
``max_client_requests`` (5 by default) requests of one client connection at a time and
queues the rest unread, where their timeouts would run while they wait. Each result
says its :attr:`~FleetResult.hypervisor`.

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
  wall_timeout``. Interrupted (Ctrl-C in the caller), it starts no more targets; the
  ones under way end by their timeouts, in the background, as above.

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
from urllib.parse import urlsplit

from .client import DEFAULT_TIMEOUT, GuestAgent
from .errors import AgentTimeoutError, Hint, Remedy

__all__ = ["PER_URI", "FleetResult", "FleetTarget", "fleet_call", "fleet_ping", "split_target"]

T = TypeVar("T")

FleetTarget: TypeAlias = str | int | os.PathLike[str] | GuestAgent | tuple[str, str | int]
"""A domain name, UUID or ID; a ``(uri, domain)`` pair or a ``URI/DOMAIN`` string; a
socket path (a ``str`` with a ``/`` and no ``://``, or a path object); or an agent."""

PER_URI = 5
"""Targets of one libvirt URI worked on at once by default: libvirtd's default
``max_client_requests``, its limit on one client connection's requests in progress."""

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
        hypervisor: the libvirt URI of a domain target that named one (a pair or a
            ``URI/DOMAIN`` string), else None (the fleet's ``uri``, a socket, an agent).
    """

    target: str
    value: T | None = None
    error: Exception | None = None
    duration: float = 0.0
    hypervisor: str | None = None

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
            "hypervisor": self.hypervisor,
        }


def fleet_call(
    targets: Iterable[FleetTarget],
    fn: Callable[[GuestAgent], T],
    *,
    max_workers: int = 16,
    timeout: float = DEFAULT_TIMEOUT,
    wall_timeout: float | None = None,
    uri: str | None = None,
    per_uri: int = PER_URI,
) -> list[FleetResult[T]]:
    """Run ``fn(agent)`` for every target, ``max_workers`` at a time; results in order.

    Args:
        targets: domains, socket paths or agents (see :data:`FleetTarget`).
        fn: what to ask each agent; its return value is the result's ``value``.
        max_workers: targets worked on at once.
        timeout: seconds each call waits for its reply.
        wall_timeout: seconds one target may take in all (default ``3 * timeout``;
            ``math.inf`` for no bound). See the module docs for how it is enforced.
        uri: the libvirt URI for the domain targets that do not name one (default like
            virsh).
        per_uri: targets of one libvirt URI worked on at once (see :data:`PER_URI`).

    Raises:
        ValueError: ``max_workers`` or ``per_uri`` is below 1, a timeout is not
            positive, or a target is malformed (a ``URI/DOMAIN`` string without a
            domain). Nothing else: each target's errors are in its result.
    """
    if max_workers < 1 or per_uri < 1:
        raise ValueError(
            f"max_workers and per_uri must be at least 1, not {max_workers}, {per_uri}"
        )
    wall = WALL_FACTOR * timeout if wall_timeout is None else wall_timeout
    if not timeout > 0 or not wall > 0:
        raise ValueError(f"timeouts must be positive, not {timeout!r} and {wall!r}")
    items = [_resolve(target, uri) for target in targets]
    return _Batch(items, fn, timeout, wall, per_uri).run(max_workers)


def fleet_ping(
    targets: Iterable[FleetTarget],
    *,
    max_workers: int = 16,
    timeout: float = DEFAULT_TIMEOUT,
    wall_timeout: float | None = None,
    uri: str | None = None,
    per_uri: int = PER_URI,
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
        per_uri=per_uri,
    )


def _ping(agent: GuestAgent) -> None:
    agent.ping()


@dataclass(frozen=True, slots=True)
class _Item:
    """A target as the fleet works on it: its label, and for a domain its URI."""

    target: str | int | os.PathLike[str] | GuestAgent
    label: str
    domain: bool
    uri: str | None  # for a domain: its URI (None: the default one)
    named: bool  # the target named its hypervisor


def split_target(target: str) -> tuple[str, str] | None:
    """``(uri, domain)`` of a ``URI/DOMAIN`` string such as
    ``qemu+ssh://host2/system/web1``; None for a string without ``://``.

    Raises:
        ValueError: a URI with no domain after it, or with a query string.
    """
    if "://" not in target:
        return None
    parts = urlsplit(target)
    uri_path, _, domain = parts.path.rpartition("/")
    if parts.query or parts.fragment or not domain or not uri_path:
        raise ValueError(
            f"{target!r} is not URI/DOMAIN (e.g. qemu+ssh://host2/system/web1); "
            "give a URI with a query string as a (uri, domain) pair"
        )
    return target[: target.rindex("/")], domain


def _resolve(target: FleetTarget, uri: str | None) -> _Item:
    if isinstance(target, GuestAgent):
        return _Item(target, target.target, False, None, False)
    if isinstance(target, tuple):
        where, domain = target
        return _Item(domain, f"{where}/{domain}", True, where, True)
    if isinstance(target, os.PathLike):
        return _Item(target, os.fspath(target), False, None, False)
    if isinstance(target, str):
        named = split_target(target)
        if named is not None:
            return _Item(named[1], target, True, named[0], True)
        if "/" in target:
            return _Item(target, target, False, None, False)
    return _Item(target, str(target), True, uri, False)


def _open(item: _Item, timeout: float) -> tuple[GuestAgent, bool]:
    """The agent for a target, and whether the fleet opened it (and so closes it)."""
    target = item.target
    if isinstance(target, GuestAgent):
        return target.with_timeout(timeout), False
    # The fleet closes what it opens as soon as its work is done: no idle watcher.
    if not item.domain:
        assert not isinstance(target, int)
        return GuestAgent.from_socket(target, timeout, idle_timeout=None), True
    return GuestAgent.from_domain(target, item.uri, timeout, idle_timeout=None), True


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
        # The job first: a reservation (below) is never left without its job, even when
        # the caller is interrupted (Ctrl-C) between the two.
        self._jobs.put(job)
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # reserved for this job
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
        items: list[_Item],
        fn: Callable[[GuestAgent], T],
        timeout: float,
        wall: float,
        per_uri: int,
    ) -> None:
        self.items, self.fn, self.timeout, self.wall = items, fn, timeout, wall
        self.labels = [item.label for item in items]
        self.hypervisors = [item.uri if item.named else None for item in items]
        # One gate per libvirt URI: a worker waits at it before its target's clock starts.
        self.gates = {
            item.uri: threading.BoundedSemaphore(per_uri) for item in items if item.domain
        }
        self.results: list[FleetResult[T] | None] = [None] * len(items)
        self.changed = threading.Condition()  # guards everything below
        self.upcoming = 0
        self.running: dict[int, float] = {}  # index -> when its work started
        self.pending = len(items)
        self.workers = 0  # workers taking targets (the ones left behind not counted)

    def run(self, max_workers: int) -> list[FleetResult[T]]:
        try:
            return self._run(max_workers)
        except BaseException:
            # The caller was interrupted (Ctrl-C): the workers take no more targets; those
            # under way end by their timeouts and the workers go back to the shared ones.
            with self.changed:
                self.upcoming = len(self.items)
            raise

    def _run(self, max_workers: int) -> list[FleetResult[T]]:
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
                            label,
                            error=_overdue(label, self.wall),
                            duration=now - start,
                            hypervisor=self.hypervisors[index],
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
            item = self.items[index]
            gate = self.gates.get(item.uri) if item.domain else None
            if gate is not None:
                gate.acquire()
            try:
                with self.changed:
                    self.running[index] = time.monotonic()
                value, error, duration = self._one(item)
            finally:
                if gate is not None:
                    gate.release()
            with self.changed:
                if self.running.pop(index, None) is None:
                    return  # given up on: a replacement took this worker's place
                self.results[index] = FleetResult(
                    self.labels[index], value, error, duration, self.hypervisors[index]
                )
                self.pending -= 1
                if not self.pending:  # deadlines the caller's thread checks on its own
                    self.changed.notify()

    def _one(self, item: _Item) -> tuple[T | None, Exception | None, float]:
        start = time.monotonic()
        try:
            agent, opened = _open(item, self.timeout)
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

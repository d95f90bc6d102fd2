"""The server's state: hypervisors, domain resolution, agents, exec handles, freeze holds.

Domains are addressed as the list_domains tool shows them: the name alone with one
hypervisor, ``HYPERVISOR/NAME`` with several, and a ``--socket`` agent by its NAME. A
UUID or ID works in place of a name; the allow-list is checked on the name the domain
really has, after the lookup, so it cannot be side-stepped that way.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from qga_libvirt import GuestAgent, GuestAgentError, RunHandle
from qga_libvirt.discovery import lookup_domain, open_connection
from qga_libvirt.errors import DomainNotFoundError

from .audit import AuditLog
from .config import Config
from .policy import Policy, PolicyError

__all__ = ["Call", "ProgressReporter", "Runtime", "Target"]

log = logging.getLogger("qga_mcp")

ProgressReporter = Callable[[float, float | None, str | None], None]
"""Report progress from a tool body to the MCP client: (done, total or None, message or
None). The library's transfer callback is :data:`qga_libvirt.operations.files.Progress`."""


@dataclass(frozen=True)
class Target:
    """A domain (or socket agent) a call is about, resolved and allowed.

    Attributes:
        address: how tools and list_domains name it.
        name: the domain's real name (the socket agent's NAME).
        hypervisor: the hypervisor's name; None for a socket agent.
        domain: the open ``virDomain``; None for a socket agent.
    """

    address: str
    name: str
    hypervisor: str | None
    domain: Any = None


class Call:
    """What a tool body gets: the runtime, its target and agent, a progress reporter."""

    def __init__(
        self,
        runtime: Runtime,
        target: Target | None,
        agent: GuestAgent | None,
        progress: ProgressReporter,
        session: str = "",
        cancelled: threading.Event | None = None,
    ) -> None:
        self.runtime = runtime
        self.session = session
        self.cancelled = cancelled or threading.Event()
        """Set when the client cancelled the call: a body that waits stops and cleans up."""
        self.policy = runtime.policy
        self._target = target
        self._agent = agent
        self.progress = progress

    @property
    def target(self) -> Target:
        assert self._target is not None, "a tool without a domain has no target"
        return self._target

    @property
    def agent(self) -> GuestAgent:
        assert self._agent is not None, "a tool without a domain has no agent"
        return self._agent

    @property
    def domain(self) -> str:
        return self.target.address


class Runtime:
    """Everything the tools share; thread-safe, used from the worker threads."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.policy = Policy(config)
        self.hypervisors = config.hypervisors
        self.sockets = config.sockets
        self._lock = threading.Lock()
        self._agents: dict[str, tuple[tuple[object, ...], GuestAgent]] = {}
        self._processes: dict[str, tuple[str, str, RunHandle]] = {}
        self._holds: dict[str, _Hold] = {}
        self._sessions: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self._http_sessions: dict[str, str] = {}
        self.audit = AuditLog(config.audit_log)

    # --- lifetime ---------------------------------------------------------------------

    def start(self) -> None:
        """Open the libvirt connections now, so the first call does not pay for them.

        An unreachable hypervisor is logged, not fatal: calls for its domains say why.
        """
        for name, uri in self.hypervisors.items():
            try:
                open_connection(uri)
            except GuestAgentError as exc:
                log.warning("hypervisor %s: %s", name, exc)

    def stop(self) -> None:
        """Thaw what is still frozen through us; close the agents."""
        with self._lock:
            holds = list(self._holds.values())
            self._holds.clear()
            agents = [agent for _, agent in self._agents.values()]
            self._agents.clear()
        for hold in holds:
            with contextlib.suppress(GuestAgentError):  # logged by the hold
                hold.end()
        for agent in agents:
            agent.close()
        self.audit.close()

    def session_id(self, connection: object, session_id: str | None, stateless: bool) -> str:
        """The MCP session a call belongs to, as a random id (the same for all its calls).

        Under the handshake protocols a session is the client's connection (stdio) or
        its ``Mcp-Session-Id`` (HTTP). The 2026-07-28 protocol has no sessions: each
        request stands alone, so its calls share one id and a handle is a capability
        (an unguessable token) on its own.
        """
        if stateless:
            return "stateless"
        with self._lock:
            if session_id is not None:
                found = self._http_sessions.get(session_id)
                if found is None:
                    found = self._http_sessions[session_id] = secrets.token_hex(8)
                return found
            found = self._sessions.get(connection)
            if found is None:
                found = self._sessions[connection] = secrets.token_hex(8)
            return found

    # --- addressing -------------------------------------------------------------------

    def address(self, name: str, hypervisor: str | None) -> str:
        """How a domain is named to the model."""
        return f"{hypervisor}/{name}" if hypervisor and len(self.hypervisors) > 1 else name

    def resolve(self, address: str) -> Target:
        """The allowed target for an address, its domain looked up.

        Raises:
            PolicyError: the domain is not in the allow-list.
            GuestAgentError: unknown hypervisor or domain, libvirt unreachable.
        """
        if address in self.sockets:
            self.policy.check_domain(address)
            return Target(address, address, None)
        hypervisor, sep, key = address.partition("/")
        if not sep:
            if len(self.hypervisors) != 1:
                raise PolicyError(self._which_hypervisor(address))
            hypervisor, key = next(iter(self.hypervisors)), address
        elif hypervisor not in self.hypervisors:
            raise PolicyError(
                f"no hypervisor is named '{hypervisor}': this server has "
                f"{', '.join(self.hypervisors) or 'none'}; see list_domains"
            )
        try:
            dom = lookup_domain(open_connection(self.hypervisors[hypervisor]), key)
        except DomainNotFoundError:
            # The same answer as for a domain that exists but is not allowed: no oracle.
            raise PolicyError(self.policy.refusal(address)) from None
        name: str = dom.name()
        if not self.policy.domain_allowed(name, hypervisor):
            # Named as the caller named it: asked by ID or UUID, the name stays unknown.
            raise PolicyError(self.policy.refusal(address))
        return Target(self.address(name, hypervisor), name, hypervisor, dom)

    def _which_hypervisor(self, address: str) -> str:
        if not self.hypervisors:
            return self.policy.refusal(address)
        return (
            f"this server serves several hypervisors ({', '.join(self.hypervisors)}): "
            f"address the domain as HYPERVISOR/{address}, as list_domains shows"
        )

    def agent(self, target: Target) -> GuestAgent:
        """The agent of a target, kept while the domain runs.

        One agent per domain run (keyed by UUID, ID and connection, so a restarted domain
        gets a new one) keeps what the library learns per agent (the guest's kind, the commands it
        has, the processes run_command left running) from one call to the next.

        Raises: as :meth:`GuestAgent.from_domain <qga_libvirt.GuestAgent.from_domain>`.
        """
        if target.domain is None:
            key: tuple[object, ...] = ("socket", self.sockets[target.name])
        else:
            # The connection too: after libvirtd restarts, domains of the old one are dead.
            key = (target.domain.UUIDString(), target.domain.ID(), id(target.domain.connect()))
        with self._lock:
            cached = self._agents.get(target.address)
        if cached is not None and cached[0] == key:
            return cached[1]
        if target.domain is None:
            agent = GuestAgent.from_socket(self.sockets[target.name])
        else:
            agent = GuestAgent.from_domain(target.domain)
        with self._lock:
            cached = self._agents.get(target.address)
            if cached is not None and cached[0] == key:  # another thread was first
                agent.close()
                return cached[1]
            self._agents[target.address] = (key, agent)
        if cached is not None:
            cached[1].close()
        return agent

    # --- exec handles -----------------------------------------------------------------

    def remember_process(self, target: Target, session: str, handle: RunHandle) -> str:
        """A command left running: the random token command_status takes for it.

        Tokens are unguessable and belong to the session that made them: another
        session (another HTTP client) gets "no such handle", as does a made-up token.
        """
        token = "h-" + secrets.token_urlsafe(12)
        with self._lock:
            self._processes[token] = (target.address, session, handle)
        return token

    def process(self, target: Target, session: str, token: str) -> RunHandle:
        """The command behind ``token``, if this session started it on ``target``.

        Raises:
            PolicyError: no such handle (for this session and domain).
        """
        with self._lock:
            found = self._processes.get(token)
        if found is None or found[0] != target.address or found[1] != session:
            raise PolicyError(
                f"no such handle on {target.address}: pass a handle run_command returned in "
                "this session and that command_status has not collected yet"
            )
        return found[2]

    def forget_process(self, token: str) -> None:
        with self._lock:
            self._processes.pop(token, None)

    # --- freeze guard ---------------------------------------------------------------

    def freeze(self, target: Target, mountpoints: list[str] | None, seconds: float) -> int:
        """Freeze ``target``'s filesystems for ``seconds`` at most; how many froze.

        The library's guard (:meth:`~qga_libvirt.GuestAgent.frozen`) holds the freeze in
        a thread of its own until :meth:`thaw` or the window's end, and thaws with
        retries; its watchdog is a second line, a little later.

        Raises: as :meth:`GuestAgent.frozen <qga_libvirt.GuestAgent.frozen>`.
        """
        hold = _Hold(self.agent(target), target, mountpoints, seconds)
        count = hold.started.result()
        with self._lock:
            self._holds[target.address] = hold
        return count

    def thaw(self, target: Target) -> bool:
        """End a freeze made through :meth:`freeze`; False when there was none.

        Raises:
            ThawError: the guest could not be thawed (it is STILL FROZEN).
            GuestAgentError: as the library's freeze guard.
        """
        with self._lock:
            hold = self._holds.pop(target.address, None)
        if hold is None:
            return False
        hold.end()
        return True


class _Hold:
    """A freeze held open by the library's ``frozen()`` in a thread, until released."""

    WATCHDOG_MARGIN = 5.0

    def __init__(
        self, agent: GuestAgent, target: Target, mountpoints: list[str] | None, seconds: float
    ) -> None:
        self.target = target
        self.seconds = seconds
        self.started: Future[int] = Future()
        self.finished: Future[None] = Future()
        self._release = threading.Event()
        self._thread = threading.Thread(
            target=self._hold,
            args=(agent, mountpoints),
            name=f"qga-mcp freeze {target.address}",
            daemon=True,
        )
        self._thread.start()

    def _hold(self, agent: GuestAgent, mountpoints: list[str] | None) -> None:
        try:
            with agent.frozen(mountpoints, timeout=self.seconds + self.WATCHDOG_MARGIN) as count:
                self.started.set_result(count)
                if not self._release.wait(self.seconds):
                    log.warning(
                        "thawing %s: its freeze window of %g s ended",
                        self.target.address,
                        self.seconds,
                    )
        except BaseException as exc:
            if not self.started.done():
                self.started.set_exception(exc)
            else:
                log.error("thawing %s failed: %s", self.target.address, exc)
                self.finished.set_exception(exc)
            return
        self.finished.set_result(None)

    def end(self) -> None:
        """Release the freeze and wait for the thaw; raises what the thaw raised."""
        self._release.set()
        self.finished.result()

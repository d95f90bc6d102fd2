"""Fleets: many agents at once, bounded parallelism, one failure never spoils the batch."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qga_libvirt import (
    AgentCommandError,
    AgentNotConfiguredError,
    AgentNotConnectedError,
    AgentTimeoutError,
    AgentUnreachableError,
    DomainNotFoundError,
    DomainNotRunningError,
    FakeTransport,
    FleetResult,
    GuestAgent,
    Reply,
    Request,
    fleet_call,
    fleet_ping,
)
from qga_libvirt.fleet import split_target
from qga_libvirt.testing import HostAgent
from qga_libvirt.transports.base import features_of

from .lab import LOCAL_URI, TCP_URI, Lab

HOST_AGENTS = 50


def fake(name: str, handler: Any = None) -> GuestAgent:
    return GuestAgent(FakeTransport(handler or (lambda request: {}), target=name))


# --- the scheduling, on fake agents ---------------------------------------------------


def test_results_keep_the_input_order_and_every_kind_of_failure() -> None:
    def refuse(request: Request) -> Reply:
        return Reply(error_class="GenericError", desc="no")

    agents = [fake(f"fake {i}") for i in range(6)]
    agents[2] = fake("fake 2", refuse)

    def ask(agent: GuestAgent) -> str:
        agent.ping()
        if agent.target == "fake 4":
            raise ValueError("fn broke")
        return agent.target.upper()

    results = fleet_call(agents, ask, max_workers=2)

    assert [r.target for r in results] == [f"fake {i}" for i in range(6)]
    assert [r.value for r in results] == ["FAKE 0", "FAKE 1", None, "FAKE 3", None, "FAKE 5"]
    assert [r.ok for r in results] == [True, True, False, True, False, True]
    assert isinstance(results[2].error, AgentCommandError)
    assert results[2].error_type == "AgentCommandError"
    assert results[2].error.desc == "no"
    assert results[2].error_message == str(results[2].error)
    assert isinstance(results[4].error, ValueError)
    assert (results[4].error_type, results[4].error_message) == ("ValueError", "fn broke")
    assert all(r.duration >= 0 for r in results)


def test_given_agents_get_the_fleet_timeout_and_stay_open() -> None:
    agents = [fake("a"), fake("b")]
    seen = fleet_call(agents, lambda agent: agent.timeout, timeout=7.5)
    assert [r.value for r in seen] == [7.5, 7.5]
    assert [a.timeout for a in agents] == [5.0, 5.0]  # views, the agents are unchanged
    assert not any(a.transport.closed for a in agents)  # type: ignore[attr-defined]


def test_no_more_than_max_workers_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0

    def busy(agent: GuestAgent) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    results = fleet_call([fake(str(i)) for i in range(12)], busy, max_workers=3)
    assert all(r.ok for r in results)
    assert peak == 3


def test_a_hung_target_is_given_up_at_the_wall_clock_bound_and_frees_its_slot() -> None:
    release = threading.Event()

    def maybe_hang(agent: GuestAgent) -> str:
        if agent.target == "hung":
            release.wait(30)
        return agent.target

    try:
        start = time.monotonic()
        results = fleet_call(
            [fake("hung"), fake("next"), fake("last")],
            maybe_hang,
            max_workers=1,
            wall_timeout=0.3,
        )
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert 0.3 <= elapsed < 1.5
    assert isinstance(results[0].error, AgentTimeoutError)
    assert "wall-clock" in str(results[0].error)
    assert 0.3 <= results[0].duration < 1.0
    assert [r.value for r in results[1:]] == ["next", "last"]


def test_result_views() -> None:
    good: FleetResult[int] = FleetResult("vm1", value=3, duration=0.5)
    bad: FleetResult[int] = FleetResult("vm2", error=DomainNotFoundError("gone"))
    assert good.unwrap() == 3
    with pytest.raises(DomainNotFoundError):
        bad.unwrap()
    assert good.as_dict() == {
        "target": "vm1",
        "ok": True,
        "value": 3,
        "error_type": None,
        "error_message": None,
        "duration": 0.5,
        "hypervisor": None,
    }
    assert bad.as_dict()["error_type"] == "DomainNotFoundError"
    assert bad.as_dict()["error_message"] == "gone"


@pytest.mark.parametrize(
    "kwargs", [{"max_workers": 0}, {"timeout": 0}, {"timeout": 1, "wall_timeout": -1}]
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        fleet_ping([fake("x")], **kwargs)


def test_an_empty_fleet() -> None:
    assert fleet_ping([]) == []


# --- real agents ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[HostAgent]]:
    """50 qemu-ga processes of the host, each on its own socket in its own dir."""
    with contextlib.ExitStack() as stack:
        agents = []
        for i in range(HOST_AGENTS):
            agents.append(stack.enter_context(HostAgent(tmp_path_factory.mktemp(f"fleet{i}"))))
        yield agents


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A listening unix socket that nobody serves: connections queue, no reply comes."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(8)
        yield str(path)


def agent_pid(agent: GuestAgent) -> int:
    """The pid of the qemu-ga that answers: the parent of a shell it starts."""
    pid = agent.exec("/bin/sh", ["-c", "echo $PPID"], capture_output=True)
    deadline = time.monotonic() + 10
    while not (status := agent.exec_status(pid)).exited:
        assert time.monotonic() < deadline, "the shell did not exit"
        time.sleep(0.005)
    assert status.out_data is not None
    return int(status.out_data)


@pytest.mark.agent
def test_fifty_host_agents_and_failing_sockets(
    host_agents: list[HostAgent],
    silent_socket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[str] = []
    close = GuestAgent.close

    def counting_close(agent: GuestAgent) -> None:
        closed.append(agent.target)
        close(agent)

    monkeypatch.setattr(GuestAgent, "close", counting_close)
    missing = str(tmp_path / "missing.sock")
    targets = [str(h.socket) for h in host_agents]
    targets[10:10] = [missing]
    targets[30:30] = [silent_socket]

    start = time.monotonic()
    results = fleet_call(targets, agent_pid, max_workers=16, timeout=1.0)
    elapsed = time.monotonic() - start

    assert [r.target for r in results] == targets
    by_target = {r.target: r for r in results}
    for host in host_agents:
        result = by_target[str(host.socket)]
        assert result.ok, result.error_message
        assert host.process is not None
        assert result.value == host.process.pid
    assert isinstance(by_target[missing].error, AgentUnreachableError)
    assert "does not exist" in str(by_target[missing].error_message)
    silent = by_target[silent_socket]
    assert type(silent.error) is AgentTimeoutError
    assert silent.error.is_unreachable
    assert 0.9 <= silent.duration < 2.0  # the agent's timeout bounds it
    assert elapsed < 6.0
    assert sorted(closed) == sorted(f"socket {t}" for t in targets)


@pytest.mark.agent
def test_the_wall_clock_bound_cuts_a_target_whose_calls_each_time_out(
    host_agents: list[HostAgent], silent_socket: str
) -> None:
    def three_tries(agent: GuestAgent) -> None:
        for _ in range(3):
            with contextlib.suppress(AgentTimeoutError):
                agent.ping()

    targets = [silent_socket, *(str(h.socket) for h in host_agents[:3])]
    start = time.monotonic()
    results = fleet_call(targets, three_tries, timeout=1.0, wall_timeout=1.5)
    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed < 2.5  # not the 3 s its three timeouts would take
    assert isinstance(results[0].error, AgentTimeoutError)
    assert "wall-clock" in str(results[0].error)
    assert all(r.ok for r in results[1:])


@pytest.mark.agent
def test_fleet_ping_of_host_agents(host_agents: list[HostAgent]) -> None:
    results = fleet_ping([h.socket for h in host_agents])  # path objects are sockets too
    assert [r.target for r in results] == [str(h.socket) for h in host_agents]
    assert all(r.ok and r.value is None for r in results)


@pytest.mark.vm
def test_libvirt_domains_sockets_and_failures_in_one_fleet(
    lab: Lab, host_agents: list[HostAgent]
) -> None:
    missing = f"{lab.prefix}-nonexistent"
    targets: list[str] = [
        lab.ok,
        str(host_agents[0].socket),
        lab.sock,
        missing,
        lab.none,
        lab.off,
        lab.never,
        str(host_agents[1].socket),
    ]
    start = time.monotonic()
    results = fleet_call(targets, lambda agent: agent.get_host_name(), timeout=2.0, uri=LOCAL_URI)
    elapsed = time.monotonic() - start

    assert [r.target for r in results] == targets
    assert results[0].value == lab.ok  # the tiny guests take their name as host name
    assert results[2].value == lab.sock
    assert results[1].value == results[7].value == socket.gethostname()
    expected = {
        missing: DomainNotFoundError,
        lab.none: AgentNotConfiguredError,
        lab.off: DomainNotRunningError,
        lab.never: AgentNotConnectedError,
    }
    for result in results:
        if result.target in expected:
            assert type(result.error) is expected[result.target], result.error_message
            assert result.error_type == expected[result.target].__name__
    assert elapsed < 6.0  # 2 s call timeout; libvirt answers "not connected" at once


# --- Ctrl-C in the caller -----------------------------------------------------------------

INTERRUPTED_FLEET = """
import socket, sys, threading, time
from qga_libvirt import fleet_call

silent, agent = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(silent)
server.listen(1024)
started = 0
lock = threading.Lock()

def slow(agent):
    global started
    with lock:
        started += 1
        if started == 4:
            print("running", flush=True)
    agent.ping()  # never answered: ends by the 1 s timeout

try:
    fleet_call([silent] * 256, slow, max_workers=4, timeout=1)  # 64 s in all
    print("finished", flush=True)
except KeyboardInterrupt:
    time.sleep(2.5)  # the targets under way end (1 s): no worker takes another
    with lock:
        settled = started
    time.sleep(2.5)
    with lock:
        later = started
    print("started", settled, later, flush=True)
    again = fleet_call([agent, agent], lambda a: a.ping() or "pong", timeout=5)
    print("next", *[r.value for r in again], flush=True)
"""


@pytest.mark.agent
def test_ctrl_c_during_a_fleet_stops_it_and_the_next_fleet_works(
    system_host_agent: HostAgent, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            INTERRUPTED_FLEET,
            str(tmp_path / "silent.sock"),
            str(system_host_agent.socket),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "running\n"  # four targets under way
    process.send_signal(signal.SIGINT)
    # The whole fleet would take 64 s; interrupted, the process is done in seconds.
    out, err = process.communicate(timeout=40)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("started "), out
    settled, later = map(int, lines[0].split()[1:])
    assert settled == later  # no target started once those under way ended
    assert settled < 256  # and the rest were never started
    assert lines[1] == "next pong pong"  # the shared workers serve the next fleet


# --- many hypervisors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "split"),
    [
        ("qemu+ssh://root@host2/system/web1", ("qemu+ssh://root@host2/system", "web1")),
        ("qemu:///system/web1", ("qemu:///system", "web1")),
        ("qemu+tcp://10.0.0.2:16509/session/db", ("qemu+tcp://10.0.0.2:16509/session", "db")),
        ("web1", None),
        ("/run/web1.sock", None),
    ],
)
def test_a_target_string_can_name_its_hypervisor(
    target: str, split: tuple[str, str] | None
) -> None:
    assert split_target(target) == split


@pytest.mark.parametrize(
    "target", ["qemu:///system", "qemu:///system/", "qemu:///system?socket=/x/web1"]
)
def test_a_uri_without_a_domain_is_refused_before_anything_runs(target: str) -> None:
    with pytest.raises(ValueError, match="URI/DOMAIN"):
        fleet_call([target], lambda agent: None)


@pytest.mark.vm
def test_one_fleet_across_two_hypervisors(lab: Lab) -> None:
    """The unix and the TCP URIs of the lab's libvirtd count as two hypervisors."""
    targets: list[Any] = [
        (LOCAL_URI, lab.ok),
        f"{TCP_URI}/{lab.ok10}",
        (TCP_URI, lab.ok),
        lab.ok10,  # on the fleet's uri
        f"{TCP_URI}/{lab.prefix}-nonexistent",
    ]
    results = fleet_call(targets, lambda agent: agent.get_host_name(), uri=LOCAL_URI)
    assert [r.target for r in results] == [
        f"{LOCAL_URI}/{lab.ok}",
        f"{TCP_URI}/{lab.ok10}",
        f"{TCP_URI}/{lab.ok}",
        lab.ok10,
        f"{TCP_URI}/{lab.prefix}-nonexistent",
    ]
    assert [r.hypervisor for r in results] == [LOCAL_URI, TCP_URI, TCP_URI, None, TCP_URI]
    assert [r.value for r in results[:4]] == [lab.ok, lab.ok10, lab.ok, lab.ok10]
    assert isinstance(results[4].error, DomainNotFoundError)
    assert TCP_URI in str(results[4].error) or lab.prefix in str(results[4].error)


@pytest.mark.vm
def test_targets_of_one_uri_run_at_most_per_uri_at_once(lab: Lab) -> None:
    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    def fn(agent: GuestAgent) -> None:
        identity = features_of(agent.transport).identity
        assert identity is not None
        uri = str(identity.uri)
        with lock:
            running[uri] = running.get(uri, 0) + 1
            peak[uri] = max(peak.get(uri, 0), running[uri])
        try:
            time.sleep(0.3)
            agent.ping()
        finally:
            with lock:
                running[uri] -= 1

    pairs = [(uri, name) for uri in (LOCAL_URI, TCP_URI) for name in (lab.ok, lab.ok10)]
    targets: list[Any] = pairs * 2
    results = fleet_call(targets, fn, max_workers=8, per_uri=1)
    assert all(r.ok for r in results), [r.error_message for r in results]
    assert peak == {LOCAL_URI: 1, TCP_URI: 1}
    peak.clear()
    results = fleet_call(targets, fn, max_workers=8, per_uri=2)
    assert all(r.ok for r in results), [r.error_message for r in results]
    assert peak == {LOCAL_URI: 2, TCP_URI: 2}

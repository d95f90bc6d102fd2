"""Idle connections: one reaper thread for the process, no memory per unconnected agent."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from qga_libvirt import GuestAgent
from qga_libvirt.transports.socket import SocketTransport

from .fakeagent import FakeAgent, Peer


def _reapers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("qga idle")]


def test_many_idle_connections_share_one_reaper_thread(tmp_path: Path) -> None:
    fakes = [FakeAgent(tmp_path / f"a{i}.sock") for i in range(12)]
    agents = [GuestAgent.from_socket(f.path, idle_timeout=0.3) for f in fakes]
    try:
        for agent in agents:
            agent.ping()
        assert all(a.transport.connected for a in agents)  # type: ignore[attr-defined]
        assert len(_reapers()) == 1
        deadline = time.monotonic() + 10
        while any(a.transport.connected for a in agents):  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "idle connections were not given back"
            time.sleep(0.05)
        assert len(_reapers()) == 1
        for agent in agents:  # and they come back on demand
            agent.ping()
    finally:
        for agent in agents:
            agent.close()
        for fake in fakes:
            fake.stop()


def test_a_call_longer_than_idle_timeout_is_not_cut(tmp_path: Path) -> None:
    def slow(peer: Peer, request: dict[str, Any]) -> bool:
        if request.get("execute") == "guest-get-time":
            time.sleep(0.8)
            peer.reply(request, 123)
            return True
        return False

    with FakeAgent(tmp_path / "a.sock", slow) as fake:
        agent = GuestAgent.from_socket(fake.path, idle_timeout=0.2)
        try:
            agent.ping()
            assert agent.get_time() == 123  # 0.8 s on one connection, idle limit 0.2 s
            assert fake.connections == 1
            assert agent.transport.connected  # type: ignore[attr-defined]
        finally:
            agent.close()


def test_reaper_picks_up_a_sooner_deadline(tmp_path: Path) -> None:
    with FakeAgent(tmp_path / "a.sock") as slow_fake, FakeAgent(tmp_path / "b.sock") as fast:
        lazy = GuestAgent.from_socket(slow_fake.path, idle_timeout=30)
        quick = GuestAgent.from_socket(fast.path, idle_timeout=0.2)
        try:
            lazy.ping()  # the reaper now sleeps towards a deadline 30 s away
            quick.ping()
            time.sleep(1.0)
            assert not quick.transport.connected  # type: ignore[attr-defined]
            assert lazy.transport.connected  # type: ignore[attr-defined]
        finally:
            lazy.close()
            quick.close()


def test_an_unconnected_agent_costs_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        objects = [SocketTransport(path) for _ in range(100)]
        per_object = (tracemalloc.get_traced_memory()[0] - before) / len(objects)
    finally:
        tracemalloc.stop()
    assert per_object < 16 * 1024, per_object

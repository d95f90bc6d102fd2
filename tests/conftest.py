"""Shared fixtures: the host's real qemu-ga on a unix socket, and clients for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent, agent_binaries

from .lab import Lab, boot_lab

GENERATIONS = ("7.2", "10.0")
"""The qemu-ga generations every real-agent test runs against (scripts/setup.sh fetches 10.0)."""


@pytest.fixture(scope="session", params=GENERATIONS)
def host_agent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostAgent]:
    """A real qemu-ga of each generation, serving a socket in a temp dir (dangerous RPCs
    blocked)."""
    generation: str = request.param
    binary = agent_binaries().get(generation)
    if binary is None:
        pytest.fail(f"qemu-ga {generation} is not installed: run `make test`, which fetches it")
    with HostAgent(tmp_path_factory.mktemp(f"agent-{generation}"), binary=binary) as agent:
        yield agent


@pytest.fixture(scope="session")
def system_host_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgent]:
    """The system's own qemu-ga only: for tests that pick their backend at run time
    (``request.getfixturevalue``), which a parametrized fixture cannot serve."""
    with HostAgent(tmp_path_factory.mktemp("agent-system")) as agent:
        yield agent


@pytest.fixture
def agent(host_agent: HostAgent) -> Iterator[GuestAgent]:
    """A client of the host agent, closed after the test (so the next one can connect)."""
    with GuestAgent.from_socket(host_agent.socket) as client:
        yield client


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """libvirtd and the tiny guests: ok, ok10 (qemu-ga 10.0), sock, none, never (running) and
    off (shut off)."""
    yield from boot_lab()

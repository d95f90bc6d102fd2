"""Shared fixtures: the host's real qemu-ga on a unix socket, and clients for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent

from .lab import Lab, boot_lab


@pytest.fixture(scope="session")
def host_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAgent]:
    """The machine's own qemu-ga, serving a socket in a temp dir (dangerous RPCs blocked)."""
    if shutil.which("qemu-ga") is None and not Path("/usr/sbin/qemu-ga").exists():
        pytest.fail("qemu-ga is not installed: run `make test`, which installs it")
    with HostAgent(tmp_path_factory.mktemp("agent")) as agent:
        yield agent


@pytest.fixture
def agent(host_agent: HostAgent) -> Iterator[GuestAgent]:
    """A client of the host agent, closed after the test (so the next one can connect)."""
    with GuestAgent.from_socket(host_agent.socket) as client:
        yield client


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """libvirtd and the tiny guests: ok, sock, none, never (running) and off (shut off)."""
    yield from boot_lab()

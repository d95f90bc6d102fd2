"""qga_libvirt.testing: the scripted fake agent users get, and the agent generations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qga_libvirt import (
    AgentTimeoutError,
    CommandNotFoundError,
    ConnectionLostError,
    GuestAgent,
    ProtocolError,
)
from qga_libvirt.testing import (
    BACKPORTS_AGENT,
    SYSTEM_AGENT,
    Delay,
    Disconnect,
    Error,
    FakeAgent,
    NoReply,
    Return,
    Send,
    agent_binaries,
    agent_version,
)


def test_the_documented_example(tmp_path: Path) -> None:
    """The example in qga_libvirt.testing's docstring, as a user would write it."""
    with FakeAgent(tmp_path / "qga.sock") as fake:
        fake.script("guest-get-host-name", Return({"host-name": "web1"}))
        fake.script(
            "guest-get-load",
            Error("CommandNotFound", "The command guest-get-load has not been found"),
        )
        fake.script("guest-get-time", Delay(1.0), Return(0))
        with GuestAgent.from_socket(fake.path, timeout=0.5) as agent:
            assert agent.get_host_name() == "web1"
            with pytest.raises(CommandNotFoundError):
                agent.get_load()
            with pytest.raises(AgentTimeoutError):
                agent.get_time()
        assert [r["execute"] for r in fake.requests].count("guest-get-host-name") == 1


def test_a_script_is_spent_then_the_default_answers() -> None:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path, idle_timeout=None) as agent:
        fake.script("guest-get-host-name", Return({"host-name": "a"}), times=2)
        fake.script("guest-get-host-name", Return({"host-name": "b"}))
        names = [agent.call("guest-get-host-name") for _ in range(4)]
        assert names == [{"host-name": "a"}, {"host-name": "a"}, {"host-name": "b"}, {}]


def test_stale_lines_and_garbage_before_the_answer_are_survived() -> None:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path) as agent:
        fake.script(
            "guest-get-host-name",
            Send({"return": 4242, "id": 77}),
            Send(b"not json\n"),
            Return({"host-name": "web1"}),
        )
        assert agent.get_host_name() == "web1"


def test_disconnect_and_no_reply() -> None:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path, timeout=0.3) as agent:
        fake.script("guest-get-host-name", Send(b'{"return": {"ho'), Disconnect())
        with pytest.raises(ConnectionLostError):
            agent.get_host_name()
        fake.script("guest-get-time", NoReply())
        start = time.monotonic()
        with pytest.raises(AgentTimeoutError):
            agent.get_time()
        assert time.monotonic() - start >= 0.3
        fake.script("guest-get-time", Return("not a number"))
        with pytest.raises(ProtocolError):
            agent.get_time()
        assert agent.ping() is None
        assert fake.connections == 2


def test_times_must_be_positive() -> None:
    with FakeAgent() as fake, pytest.raises(ValueError, match="times"):
        fake.script("guest-ping", Return({}), times=0)


def test_the_socket_of_a_default_fake_is_removed() -> None:
    fake = FakeAgent()
    assert fake.path.exists()
    fake.stop()
    assert not fake.path.exists()


def test_agent_generations() -> None:
    found = agent_binaries()
    assert found, "no qemu-ga at all"
    for generation, binary in found.items():
        assert agent_version(binary).startswith(generation + ".")
    assert list(found) == sorted(found, key=lambda g: tuple(map(int, g.split("."))))
    if SYSTEM_AGENT.exists():
        assert SYSTEM_AGENT in found.values()
    if BACKPORTS_AGENT.exists():
        assert found[".".join(agent_version(BACKPORTS_AGENT).split(".")[:2])] == BACKPORTS_AGENT


def test_agent_version_of_something_that_is_not_an_agent(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not run"):
        agent_version(tmp_path / "nothing")

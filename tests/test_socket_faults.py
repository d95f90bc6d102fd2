"""Faults a real agent cannot be made to produce, through a scripted fake agent.

Each ends in the right typed error or the right result, and the call after it works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qga_libvirt import (
    ERR_CANNOT_READ,
    ERR_TIMED_OUT,
    AgentTimeoutError,
    CommandDisabledError,
    ConnectionLostError,
    GuestAgent,
    ProtocolError,
)

from .fakeagent import FakeAgent, Peer, line


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


Make = Callable[..., tuple[FakeAgent, GuestAgent]]


@pytest.fixture
def make(sock_path: Path) -> Iterator[Make]:
    started: list[tuple[FakeAgent, GuestAgent]] = []

    def start(handler: Any = None, timeout: float = 2.0) -> tuple[FakeAgent, GuestAgent]:
        fake = FakeAgent(sock_path, handler)
        client = GuestAgent.from_socket(sock_path, timeout=timeout, idle_timeout=None)
        started.append((fake, client))
        return fake, client

    yield start
    for fake, client in started:
        client.close()
        fake.stop()


def once(action: Any) -> Any:
    """A handler that misbehaves on the first guest-sync (our probe command) only."""
    done = threading.Event()

    def handler(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-sync" and not done.is_set():
            done.set()
            action(peer, request)
            return True
        return False

    return handler


def test_stale_replies_before_the_first_answer_are_dropped(make: Make) -> None:
    def stale_first(peer: Peer, request: dict[str, Any]) -> None:
        peer.send(line({"return": 4242, "id": 77}))  # someone else's request
        peer.send(line({"return": {}}))  # a reply with no id at all
        peer.reply(request, request["arguments"]["id"])

    _, client = make(once(stale_first))
    assert client.sync(11) == 11
    assert client.transport._conversation.discarded == 2  # type: ignore[attr-defined]
    assert client.sync(12) == 12


def test_stale_replies_left_on_the_channel_before_we_connect_are_dropped(make: Make) -> None:
    """A previous client's late replies sit in the stream before our resync's sentinel."""

    def handler(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-sync-delimited":
            peer.send(line({"return": {"pid": 1}, "id": 5}) + b'{"return": 3}\n')
            peer.send(b"\xff" + line({"return": 999}))  # an older resync's sentinel
        return False

    _, client = make(handler)
    assert client.sync(1) == 1
    assert client.sync(2) == 2


def test_garbage_lines_are_skipped(make: Make) -> None:
    def garbage(peer: Peer, request: dict[str, Any]) -> None:
        peer.send(b'this is not json\n{"return": \n\x00\x01\x02\n[1, 2]\n')
        peer.reply(request, request["arguments"]["id"])

    _, client = make(once(garbage))
    assert client.sync(5) == 5
    assert client.ping() is None


def test_reply_split_byte_by_byte(make: Make) -> None:
    def bytewise(peer: Peer, request: dict[str, Any]) -> None:
        peer.reply(request, request["arguments"]["id"], bytewise=True)

    _, client = make(once(bytewise))
    assert client.sync(123456789) == 123456789


def test_stray_ff_before_a_reply(make: Make) -> None:
    def stray(peer: Peer, request: dict[str, Any]) -> None:
        peer.send(b"\xff\xff")
        peer.reply(request, request["arguments"]["id"])

    _, client = make(once(stray))
    assert client.sync(8) == 8
    assert client.sync(9) == 9


def test_late_reply_never_reaches_the_next_caller(make: Make) -> None:
    def late(peer: Peer, request: dict[str, Any]) -> None:
        def later() -> None:
            time.sleep(0.5)
            peer.reply(request, request["arguments"]["id"])

        threading.Thread(target=later, daemon=True).start()

    _, client = make(once(late))
    with pytest.raises(AgentTimeoutError) as caught:
        client.call("guest-sync", {"id": 1}, timeout=0.2)
    assert caught.value.code == ERR_TIMED_OUT
    assert "guest-sync" in str(caught.value)
    assert caught.value.is_unreachable  # its answer was not obtained (issue 15)
    assert "may still be running" in str(caught.value)
    time.sleep(0.4)  # the stale reply (return 1) is now waiting on the socket
    assert client.sync(2) == 2
    assert client.sync(3) == 3


def test_agent_that_never_answers_is_a_timeout_and_unreachable(make: Make) -> None:
    _, client = make(lambda peer, request: True, timeout=0.3)
    with pytest.raises(AgentTimeoutError) as caught:
        client.ping()
    assert caught.value.is_unreachable
    assert "is qemu-ga running" in str(caught.value)


def test_connection_closed_mid_reply_then_reconnects(make: Make) -> None:
    def cut(peer: Peer, request: dict[str, Any]) -> None:
        peer.send(b'{"return": {"version": "1.0", "supported')
        peer.close()

    fake, client = make(once(cut))
    with pytest.raises(ConnectionLostError) as caught:
        client.sync(1)
    assert caught.value.code == ERR_CANNOT_READ
    assert "the next call reconnects" in str(caught.value)
    assert client.sync(2) == 2
    assert fake.connections == 2


def test_reply_with_our_id_but_no_return_is_a_protocol_error(make: Make) -> None:
    def broken(peer: Peer, request: dict[str, Any]) -> None:
        peer.send(line({"id": request["id"], "surprise": True}))

    _, client = make(once(broken))
    with pytest.raises(ProtocolError) as caught:
        client.sync(1)
    assert caught.value.reply == {"id": caught.value.reply["id"], "surprise": True}  # type: ignore[index]
    assert client.sync(2) == 2


def test_reply_breaking_the_schema_is_a_protocol_error_with_the_reply(make: Make) -> None:
    def wrong(peer: Peer, request: dict[str, Any]) -> None:
        peer.reply(request, {"version": 7})  # guest-info without supported_commands

    def handler(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-info":
            wrong(peer, request)
            return True
        return False

    _, client = make(handler)
    with pytest.raises(ProtocolError) as caught:
        client.info()
    assert caught.value.reply == {"version": 7}
    assert "guest-info" in str(caught.value)
    assert client.ping() is None


def test_no_reply_command_is_accepted_without_waiting_for_a_reply(make: Make) -> None:
    fake, client = make()
    start = time.monotonic()
    assert client.call("guest-shutdown", timeout=5) is None
    assert time.monotonic() - start < 1  # not a timeout taken as success
    commands = [r["execute"] for r in fake.requests]
    assert commands[-2:] == ["guest-shutdown", "guest-sync"]  # the fence


def test_no_reply_command_error_is_raised(make: Make) -> None:
    def refuse(peer: Peer, request: dict[str, Any]) -> bool:
        if request["execute"] == "guest-shutdown":
            peer.error(request, "CommandNotFound", "Command guest-shutdown has been disabled")
            return True
        return False

    _, client = make(refuse)
    with pytest.raises(CommandDisabledError):
        client.call("guest-shutdown")
    assert client.sync(4) == 4  # the fence's own reply, still on the wire, is dropped


def test_no_reply_command_with_silent_agent_is_a_timeout_not_success(make: Make) -> None:
    def silent(peer: Peer, request: dict[str, Any]) -> bool:
        return request["execute"] in ("guest-shutdown", "guest-sync")

    _, client = make(silent)
    with pytest.raises(AgentTimeoutError):
        client.call("guest-shutdown", timeout=0.3)

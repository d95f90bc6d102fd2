"""The wire trace (qga_libvirt.wire): what it shows, and what it never shows."""

from __future__ import annotations

import base64
import logging
import re
import secrets

import pytest

from qga_libvirt import AgentCommandError, AgentTimeoutError, GuestAgent
from qga_libvirt.testing import Error, FakeAgent, NoReply, Return
from qga_libvirt.wire import LOGGER_NAME, scrub


@pytest.fixture
def trace(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def test_no_password_or_key_material_reaches_the_trace(trace: pytest.LogCaptureFixture) -> None:
    password = "Pw-" + secrets.token_urlsafe(16)
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{secrets.token_urlsafe(32)} me@host"
    content = secrets.token_bytes(3000)
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path) as agent:
        fake.script("guest-ssh-get-authorized-keys", Return({"keys": [key]}))
        fake.script("guest-file-open", Return(1000))
        fake.script("guest-file-write", Return({"count": len(content), "eof": False}))
        fake.script("guest-file-read", Return({"count": 3, "buf-b64": "YWJj", "eof": True}))
        fake.script("guest-exec", Return({"pid": 42}))
        agent.set_user_password("root", password)
        agent.set_user_password("root", password, crypted=True)
        agent.ssh_add_authorized_keys("root", [key], reset=True)
        assert agent.ssh_get_authorized_keys("root") == [key]
        agent.ssh_remove_authorized_keys("root", [key])
        handle = agent.file_open("/etc/shadow", "w")
        agent.file_write(handle, content)
        agent.file_read(handle)
        agent.exec("/bin/sh", ["-c", "chpasswd"], input=f"root:{password}".encode())
        sent = [r.get("arguments") for r in fake.requests]
    text = "\n".join(lines(trace))
    # What went to the agent did carry them, so the test could fail:
    assert base64.b64encode(password.encode()).decode() in str(sent)
    for secret in (
        password,
        base64.b64encode(password.encode()).decode(),
        key,
        key.split()[1],
        base64.b64encode(content).decode()[:40],
        base64.b64encode(f"root:{password}".encode()).decode(),
    ):
        assert secret not in text
    assert '"password": "<secret>"' in text
    assert '"keys": "<secret> x1"' in text
    assert '"buf-b64": "<3000 bytes>"' in text
    assert '"input-data": "<' in text
    assert '"username": "root"' in text  # what is not secret is shown


def test_each_call_is_a_request_line_and_a_reply_line_with_target_and_time(
    trace: pytest.LogCaptureFixture,
) -> None:
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path, timeout=0.3) as agent:
        fake.script("guest-get-host-name", Return({"host-name": "web1"}))
        fake.script("guest-get-time", Error("GenericError", "no clock"))
        fake.script("guest-get-load", NoReply())
        agent.get_host_name()
        with pytest.raises(AgentCommandError):
            agent.get_time()
        with pytest.raises(AgentTimeoutError):
            agent.get_load()
    got = lines(trace)
    target = f"socket {fake.path}"
    assert got[0] == f"-> {target} guest-get-host-name"
    assert re.fullmatch(
        rf'<- {re.escape(target)} guest-get-host-name \d+\.\d ms: return {{"host-name": "web1"}}',
        got[1],
    )
    assert re.search(r"guest-get-time \d+\.\d ms: error GenericError: no clock$", got[3])
    assert re.search(r"guest-get-load \d+\.\d ms: AgentTimeoutError: ", got[5])
    assert len(got) == 6  # the transport's own resync is not traced


def test_silent_unless_enabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FakeAgent() as fake, GuestAgent.from_socket(fake.path) as agent:
        agent.ping()
    assert lines(caplog) == []


def test_scrub_summarises_bulk_and_long_values() -> None:
    many = list(range(50))
    scrubbed = scrub({"out-data": "QUJD" * 1000, "arg": ["x" * 500], "items": many})
    assert scrubbed["out-data"] == "<3000 bytes>"
    assert scrubbed["arg"][0].endswith("... (500 chars)")
    assert len(scrubbed["items"]) == 21
    assert scrubbed["items"][-1] == "... 30 more"
    assert scrub({"Password": "x", "token": 3, "name": "n"}) == {
        "Password": "<secret>",
        "token": "<secret>",
        "name": "n",
    }
